"""Built-in task functions (Orion §1c) and the connector-backed placeholders."""

from __future__ import annotations

import functools

from app.engine.functions.connectors import CONNECTOR_FUNCTIONS, ConnectorInput, connector_function
from app.engine.functions.filter import FILTER
from app.engine.functions.log import LOG
from app.engine.functions.map import MAP
from app.engine.functions.parse import PARSE_JSON, PARSE_XML
from app.engine.functions.publish import PUBLISH_JSON, PUBLISH_XML
from app.engine.functions.validate import VALIDATE, VALIDATION
from app.engine.registry import FunctionRegistry, FunctionSpec
from app.engine.rules.functions import DECISION_TABLE, RULE

__all__ = [
    "BUILTIN_FUNCTIONS",
    "CONNECTOR_FUNCTIONS",
    "ConnectorInput",
    "connector_function",
    "default_registry",
    "shared_default_registry",
]

BUILTIN_FUNCTIONS: tuple[FunctionSpec, ...] = (
    PARSE_JSON,
    PARSE_XML,
    MAP,
    VALIDATION,
    VALIDATE,
    FILTER,
    LOG,
    PUBLISH_JSON,
    PUBLISH_XML,
    DECISION_TABLE,
    RULE,
)


@functools.cache
def _entry_point_specs() -> tuple[FunctionSpec, ...]:
    probe = FunctionRegistry()
    probe.load_entry_points()
    return tuple(s for n in probe.names() if (s := probe.get(n)) is not None)


def default_registry(*, entry_points: bool = True) -> FunctionRegistry:
    """A new registry with the built-ins, the connector placeholders and installed plugins."""
    registry = FunctionRegistry(BUILTIN_FUNCTIONS + CONNECTOR_FUNCTIONS)
    if entry_points:
        for spec in _entry_point_specs():
            registry.register(spec, replace=True)
    return registry


@functools.cache
def shared_default_registry() -> FunctionRegistry:
    """The registry used when a caller passes none (do not mutate it)."""
    return default_registry()
