"""Small builders shared by the engine tests."""

from __future__ import annotations

from typing import Any

from app.engine import ChannelWorkflow, Engine, Message, compile_workflow
from app.engine.registry import TaskContext


def task(id: str, function: str, input: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"id": id, "name": id, "function": {"name": function, "input": input}, **extra}


def workflow(id: str, *tasks: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"workflow_id": id, "name": id, "tasks": list(tasks), **extra}


def mapping(id: str, *pairs: tuple[str, Any], **extra: Any) -> dict[str, Any]:
    return task(id, "map", {"mappings": [{"path": p, "logic": v} for p, v in pairs]}, **extra)


def parse(target: str = "order", source: str = "payload") -> dict[str, Any]:
    return task("parse", "parse_json", {"source": source, "target": target})


def run(*workflows: dict[str, Any], data: Any = None, metadata: dict[str, Any] | None = None) -> Message:
    engine = Engine({"ch": [ChannelWorkflow(compile_workflow(w)) for w in workflows]})
    msg = Message.from_request(data, metadata)
    engine.process_sync("ch", msg)
    return msg


def ctx() -> TaskContext:
    return TaskContext("ch")
