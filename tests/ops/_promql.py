"""Collect the PromQL of the dashboards and alert rules, and the metric names each expression uses."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

__all__ = ["ROOT", "Expr", "alert_rules", "dashboard_exprs", "metric_names_in", "substitute"]

ROOT = Path(__file__).resolve().parents[2]
DASHBOARDS = ROOT / "ops" / "grafana" / "dashboards"
ALERTS = ROOT / "ops" / "prometheus" / "alerts.yml"

_KEYWORDS = {
    "and",
    "or",
    "unless",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "offset",
    "inf",
    "nan",
}


@dataclass(frozen=True)
class Expr:
    where: str  # "quasar-overview.json: Throughput by channel [A]" / "alert QuasarDeadLettersHigh"
    expr: str


def dashboard_exprs() -> list[Expr]:
    out: list[Expr] = []
    for path in sorted(DASHBOARDS.glob("*.json")):
        board: dict[str, Any] = json.loads(path.read_text())
        for panel in board["panels"]:
            for target in panel.get("targets", []):
                out.append(Expr(f"{path.name}: {panel['title']} [{target['refId']}]", target["expr"]))
        for var in board.get("templating", {}).get("list", []):
            if var.get("type") == "query":
                query = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
                out.append(Expr(f"{path.name}: variable ${var['name']}", query))
    return out


def alert_rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(ALERTS.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def substitute(expr: str) -> str:
    """Grafana variables -> values Prometheus accepts (1 s scrapes in the test: 30 s windows)."""
    return expr.replace("$__rate_interval", "30s").replace('"$channel"', '".+"')


_LABEL_VALUES = re.compile(r"^label_values\((\w+),\s*\w+\)$")


def metric_names_in(expr: str) -> set[str]:
    """Metric names an expression selects (identifiers that are not functions, keywords or labels)."""
    m = _LABEL_VALUES.match(expr.strip())
    if m:  # Grafana's variable query syntax, not PromQL
        return {m.group(1)}
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # string literals
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)  # range selectors
    # Label lists after by/without/on/ignoring/group_left/group_right.
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    names = set()
    for m in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", text):
        name = m.group(0)
        rest = text[m.end() :].lstrip()
        if rest.startswith("(") or name.lower() in _KEYWORDS:
            continue
        # A number like 1e-9 yields "e"; numbers are never followed by letters in our expressions.
        if re.fullmatch(r"e\d*", name) and re.search(r"\d" + name, text):
            continue
        names.add(name)
    return names
