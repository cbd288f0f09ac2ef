"""Rules (the Ordo third): decision tables, rulesets, test suites and decision explanations.

table = compile_table(doc)                     # DMN hit policies, one generated function per table
ruleset = compile_ruleset(doc, "loan", 3)      # a step graph, checked at compile time
result = ruleset.run(message.context, catalog) # {"code", "message", "output"}
"""

from __future__ import annotations

from app.engine.rules.errors import DecisionConflict, DecisionNotUnique, RuleError, RulesetUnavailable
from app.engine.rules.functions import DECISION_TABLE, RULE, RULE_FUNCTIONS
from app.engine.rules.ruleset import (
    CompiledRuleset,
    RulesetCatalog,
    RulesetInvalid,
    analyse_ruleset,
    check_calls,
    compile_ruleset,
)
from app.engine.rules.stats import RuleStats, rule_stats
from app.engine.rules.table import CompiledTable, TableInvalid, analyse_table, compile_table

__all__ = [
    "DECISION_TABLE",
    "RULE",
    "RULE_FUNCTIONS",
    "CompiledRuleset",
    "CompiledTable",
    "DecisionConflict",
    "DecisionNotUnique",
    "RuleError",
    "RuleStats",
    "RulesetCatalog",
    "RulesetInvalid",
    "RulesetUnavailable",
    "TableInvalid",
    "analyse_ruleset",
    "analyse_table",
    "check_calls",
    "compile_ruleset",
    "compile_table",
    "rule_stats",
]
