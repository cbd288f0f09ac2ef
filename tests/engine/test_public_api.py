"""Pin the engine's exported names so an accidental export or removal fails."""

from __future__ import annotations

import app.engine
import app.testing


def test_engine_exports() -> None:
    assert set(app.engine.__all__) == {
        "ENGINE_VERSION",
        "AsyncFunction",
        "ChannelConfig",
        "ChannelDoc",
        "ChannelWorkflow",
        "CompiledFunction",
        "CompiledTask",
        "CompiledWorkflow",
        "ConnectorDoc",
        "ConnectorInput",
        "Engine",
        "FunctionInputError",
        "FunctionRegistry",
        "FunctionSpec",
        "Message",
        "RunOptions",
        "SyncFunction",
        "TaskContext",
        "TaskDoc",
        "WorkflowDoc",
        "WorkflowInvalid",
        "compile_workflow",
        "connector_function",
        "default_registry",
        "dry_run",
        "dry_run_async",
        "map_engine_error",
        "rollout_bucket",
        "validate_workflow",
    }
    for name in app.engine.__all__:
        assert hasattr(app.engine, name)


def test_only_the_dialect_module_imports_datalogic() -> None:
    from pathlib import Path

    root = Path(app.engine.__file__).parent
    importers = sorted(str(p.relative_to(root)) for p in root.rglob("*.py") if "datalogic_py" in p.read_text())
    assert importers == ["jsonlogic.py"]


def test_engine_imports_no_io_frameworks() -> None:
    from pathlib import Path

    root = Path(app.engine.__file__).parent
    for p in root.rglob("*.py"):
        text = p.read_text()
        for banned in ("import faust", "confluent_kafka", "import fastapi", "import httpx", "import redis"):
            assert banned not in text, f"{p} imports {banned}"


def test_testing_exports() -> None:
    assert set(app.testing.__all__) == {
        "assert_no_errors",
        "assert_response",
        "assert_steps",
        "build_engine",
        "dry_run",
        "load_bundle",
        "ruleset_catalog",
        "run_workflow",
        "send",
    }
