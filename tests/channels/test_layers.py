"""Lower layers never import upper ones: the gateway, the worker and the CLI sit on top."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

APP = Path(__file__).resolve().parents[2] / "app"
UPPER = ("app.gateway", "app.worker", "app.cli")
LOWER = ["channels", "config_store", "governance", "engine", "connectors", "kafka"]


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return found


@pytest.mark.parametrize("package", LOWER)
def test_lower_layers_do_not_import_the_gateway_worker_or_cli(package: str) -> None:
    offenders = {
        f"{path.relative_to(APP)} imports {name}"
        for path in (APP / package).rglob("*.py")
        for name in _imports(path)
        if name.startswith(UPPER)
    }
    assert not offenders, sorted(offenders)


def test_the_compiled_channel_needs_only_the_engine_and_topic_names() -> None:
    allowed = ("app.channels", "app.engine", "app.errors", "app.kafka.names")
    imported = {name for path in (APP / "channels").rglob("*.py") for name in _imports(path) if name.startswith("app")}
    assert all(name.startswith(allowed) for name in imported), imported
