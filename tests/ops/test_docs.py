"""User docs stay true: the configuration reference is generated from the settings model, every
variable and metric the docs name exists, and every exported metric is documented."""

from __future__ import annotations

import importlib.util
import re

from prometheus_client import REGISTRY

import app.kafka.probe  # registers the group-lag collector
import app.observability.metrics  # noqa: F401  (registers every metric)
from app.settings import Settings
from tests.ops._promql import ROOT

DOCS = ROOT / "docs"
# Dockerfile healthcheck; CLI gateway URL; the test suite's external Schema Registry (tests/fixtures/schema_registry.py)
_NON_SETTINGS_ENV = {"QUASAR_HEALTH_URL", "QUASAR_URL", "QUASAR_TEST_SCHEMA_REGISTRY_URL"}


def _generator() -> object:
    spec = importlib.util.spec_from_file_location("config_reference", ROOT / "ops/config_reference.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_configuration_reference_is_generated_from_the_settings_model() -> None:
    rendered: str = _generator().render()  # type: ignore[attr-defined]
    assert (DOCS / "configuration.md").read_text() == rendered, "run `python ops/config_reference.py`"
    for name in Settings.model_fields:
        assert f"`QUASAR_{name.upper()}`" in rendered


def test_user_docs_exist_and_link_each_other() -> None:
    pages = ["quickstart.md", "concepts.md", "configuration.md", "operations.md", "differences-from-orion.md"]
    for page in pages:
        assert (DOCS / page).is_file(), page
    quickstart = (DOCS / "quickstart.md").read_text()
    for page in pages[1:]:
        assert f"({page})" in quickstart, f"quickstart does not link {page}"


def test_every_variable_named_in_the_docs_is_a_setting() -> None:
    fields = {f"QUASAR_{name.upper()}" for name in Settings.model_fields} | _NON_SETTINGS_ENV
    for page in ("quickstart.md", "concepts.md", "operations.md"):
        named = set(re.findall(r"QUASAR_[A-Z_]+[A-Z]", (DOCS / page).read_text()))
        # QUASAR_KAFKA__<PROPERTY> is the librdkafka passthrough (the `kafka` setting), any property.
        named = {n for n in named if not n.startswith("QUASAR_KAFKA__")}
        assert named - fields == set(), page


def _families() -> set[str]:
    """Exported metric names as documented: counters with `_total`, others by family name."""
    names = set()
    for family in REGISTRY.collect():
        names.add(f"{family.name}_total" if family.type == "counter" else family.name)
    return names


_ORION = {
    "messages_total",
    "message_duration_seconds",
    "errors_total",
    "http_requests_total",
    "http_request_duration_seconds",
    "engine_reloads_total",
    "engine_reload_duration_seconds",
    "active_workflows",
    "circuit_breaker_trips_total",
    "circuit_breaker_rejections_total",
    "rate_limit_rejections_total",
}


def test_metrics_reference_matches_the_code() -> None:
    text = (DOCS / "operations.md").read_text()
    table = text[text.index("## Metrics reference") : text.index("## Logs")]
    documented = set(re.findall(r"^\| `([a-z_]+)`|, `([a-z_]+)`|^\| `[a-z_]+`, `([a-z_]+)`", table, re.M))
    documented_names = {n for group in documented for n in group if n}
    documented_names |= set(re.findall(r"`(quasar_[a-z_]+)`", table))
    families = _families()
    ours = {n for n in families if n.startswith("quasar_") or n in _ORION}
    assert families >= _ORION, "an Orion metric is not exported"
    assert documented_names - families == set(), "documented metrics the code does not export"
    assert ours - documented_names == set(), "exported metrics missing from docs/operations.md"
