"""The pure workflow engine: Orion's workflow semantics, no Kafka, HTTP or Faust.

wf = compile_workflow(doc)                                   # JSONLogic compiled here, once
engine = Engine({"orders": [ChannelWorkflow(wf, rollout=(0, 100))]})
msg = Message.from_request(data, metadata)
await engine.process("orders", msg, RunOptions(rollout_bucket=37))   # or engine.process_sync
msg.to_response()                                            # {"id", "status": "ok", "data", "errors"}
"""

from __future__ import annotations

from app.engine.compiler import CompiledTask, CompiledWorkflow, compile_workflow
from app.engine.dryrun import dry_run, dry_run_async
from app.engine.errors import WorkflowInvalid
from app.engine.executor import (
    ENGINE_VERSION,
    ChannelWorkflow,
    Engine,
    RunOptions,
    map_engine_error,
    rollout_bucket,
)
from app.engine.functions import ConnectorInput, connector_function, default_registry
from app.engine.message import Message
from app.engine.models import ChannelConfig, ChannelDoc, ConnectorDoc, TaskDoc, WorkflowDoc
from app.engine.registry import (
    AsyncFunction,
    CompiledFunction,
    FunctionInputError,
    FunctionRegistry,
    FunctionSpec,
    SyncFunction,
    TaskContext,
)
from app.engine.validation import validate_workflow

__all__ = [
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
]
