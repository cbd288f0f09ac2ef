"""The flows core stays pure: no Kafka, HTTP, Faust or Redis, and its exported names are pinned."""

from __future__ import annotations

from pathlib import Path

import app.flows

PURE = (
    "clock",
    "compiler",
    "cron",
    "effects",
    "gate",
    "instance",
    "local",
    "machine",
    "models",
    "schedule",
    "tasks",
    "timing",
)


def test_the_core_imports_no_io_frameworks() -> None:
    root = Path(app.flows.__file__).parent
    for name in (*PURE, "__init__"):
        text = (root / f"{name}.py").read_text()
        for banned in (
            "faust",
            "confluent_kafka",
            "fastapi",
            "httpx",
            "redis",
            "app.worker",
            "app.gateway",
            "app.kafka",
        ):
            assert f"import {banned}" not in text and f"from {banned}" not in text, f"{name}.py imports {banned}"


def test_exports() -> None:
    for name in app.flows.__all__:
        assert hasattr(app.flows, name)
    assert {"apply", "compile_flow", "compile_schedule", "apply_schedule", "apply_gate", "VirtualClock"} <= set(
        app.flows.__all__
    )
