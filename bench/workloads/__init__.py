"""Orion's benchmark workloads (`tests/benchmark` in Orion, §1g of the reference) as shared fixtures.

`workloads.json` lists each workload: its channel, workflow file (one admin-API workflow document or
an array of them, as Orion's import file), request body file (the exact HTTP body Orion's `hey` sends),
and the work the engine must do on it (`expect`: executed `workflow_id/task_id` steps and the response
`data`, with `volatile` keys such as `now` timestamps only checked for presence). The engine benchmark
and the gateway benchmark both load them from here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

__all__ = ["WORKLOADS_DIR", "Expectation", "Workload", "load_workloads"]

WORKLOADS_DIR = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Expectation:
    """What processing the payload must do: the steps that run and the response `data`."""

    executed: tuple[str, ...]
    data: dict[str, Any]
    volatile: tuple[str, ...] = ()

    def data_mismatch(self, actual: Any) -> str | None:
        """Why `actual` (a response's `data`) is not the expected data, or None when it is."""
        if not isinstance(actual, dict):
            return f"data is {type(actual).__name__}, not an object"
        missing = [k for k in self.volatile if actual.get(k) is None]
        if missing:
            return f"volatile keys missing: {missing}"
        stable = {k: v for k, v in actual.items() if k not in self.volatile}
        if stable != self.data:
            return f"data {stable!r} != expected {self.data!r}"
        return None


@dataclass(frozen=True)
class Workload:
    """One benchmark scenario: workflows bound to one channel, and one request body."""

    name: str
    title: str
    channel: str
    workflows_file: Path
    payload_file: Path
    expect: Expectation
    baseline_workflows_file: Path | None = None
    baseline_note: str | None = None

    def workflow_docs(self) -> list[dict[str, Any]]:
        """The admin-API workflow documents, in file order."""
        return _docs(self.workflows_file)

    def baseline_workflow_docs(self) -> list[dict[str, Any]]:
        """What the baseline engine runs: a substitute when it lacks a function, else the same docs."""
        return _docs(self.baseline_workflows_file or self.workflows_file)

    def body(self) -> bytes:
        """The HTTP request body (`{"data": ...}`) exactly as stored."""
        return self.payload_file.read_bytes()


def _docs(path: Path) -> list[dict[str, Any]]:
    parsed = orjson.loads(path.read_bytes())
    docs = parsed if isinstance(parsed, list) else [parsed]
    if not docs or not all(isinstance(d, dict) for d in docs):
        raise ValueError(f"{path}: expected a workflow object or a non-empty array of them")
    return docs


def load_workloads(manifest: Path | None = None) -> list[Workload]:
    """Read `workloads.json` (or another manifest); paths inside are relative to the manifest."""
    path = manifest or WORKLOADS_DIR / "workloads.json"
    base = path.parent
    raw = orjson.loads(path.read_bytes())
    out: list[Workload] = []
    for item in raw["workloads"]:
        exp = item["expect"]
        baseline = item.get("baseline_workflows")
        out.append(
            Workload(
                name=item["name"],
                title=item.get("title", item["name"]),
                channel=item["channel"],
                workflows_file=base / item["workflows"],
                payload_file=base / item["payload"],
                expect=Expectation(
                    executed=tuple(exp["executed"]),
                    data=exp["data"],
                    volatile=tuple(exp.get("volatile", ())),
                ),
                baseline_workflows_file=base / baseline if baseline else None,
                baseline_note=item.get("baseline_note"),
            )
        )
    return out
