"""Engine benchmark: Quasar's engine vs Orion's engine on Orion's benchmark workloads, same run.

`python -m bench.engine` (= `make bench-engine`). The baseline is Orion's own engine, dataflow-rs
2.0.15 as published on npm (`@goplasmatic/dataflow-wasm`), run under the machine's node by
`bench/node/run.mjs`. Both sides do JSON bytes in -> JSON response bytes out, one message at a time,
after a warm-up, for a fixed number of messages. Rounds alternate baseline and Quasar per workload and
the best round of each counts, so a neighbour's CPU burst on a shared box hurts both sides alike.

Before timing, each side's output is checked against the workload's expectation (the steps that run
and the response data), so both engines are known to do the same work. Prints one table and writes
`bench/results/engine.json`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from bench.workloads import WORKLOADS_DIR, Workload, load_workloads

__all__ = ["BenchResult", "main", "run_baseline", "run_quasar"]

BENCH_DIR = Path(__file__).resolve().parent
NODE_DIR = BENCH_DIR / "node"
RESULTS_FILE = BENCH_DIR / "results" / "engine.json"
BASELINE_PKG = "@goplasmatic/dataflow-wasm"


class BenchError(RuntimeError):
    """The benchmark cannot run or the engines did not do the expected work."""


@dataclass
class BenchResult:
    """Best-of-rounds throughput for one workload on both engines."""

    workload: Workload
    quasar: list[float] = field(default_factory=list)
    orion: list[float] = field(default_factory=list)
    baseline_note: str | None = None

    @property
    def quasar_best(self) -> float | None:
        return max(self.quasar) if self.quasar else None

    @property
    def orion_best(self) -> float | None:
        return max(self.orion) if self.orion else None

    @property
    def ratio(self) -> float | None:
        q, o = self.quasar_best, self.orion_best
        return q / o if q is not None and o else None

    @property
    def paired_ratio(self) -> float | None:
        """Median of per-round ratios: each pair ran back to back, so a load burst hits both."""
        pairs = [q / o for q, o in zip(self.quasar, self.orion, strict=False) if o]
        return statistics.median(pairs) if pairs else None


# --- baseline: Orion's engine under node -------------------------------------------------------


def ensure_node_deps() -> str:
    """Path of `node`; installs the pinned baseline package from the lockfile when it is missing."""
    node = shutil.which("node")
    npm = shutil.which("npm")
    if node is None or npm is None:
        raise BenchError("node and npm are needed for the baseline (Orion's engine runs as WASM under node)")
    if not (NODE_DIR / "node_modules" / BASELINE_PKG / "package.json").exists():
        proc = subprocess.run(
            [npm, "ci", "--prefix", str(NODE_DIR), "--no-audit", "--no-fund", "--silent"],
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0:
            raise BenchError(f"npm ci --prefix {NODE_DIR} failed:\n{proc.stderr.strip()}")
    return node


def run_baseline(node: str, workload: Workload, messages: int, warmup: int, mode: str = "raw") -> dict[str, Any]:
    """One baseline round for one workload: the harness's result object (msgs_per_s, data, executed).

    `mode` "raw" keeps the engine's own output string (most favourable to the baseline); "response"
    also reshapes it into Orion's sync response in JS (see run.mjs).
    """
    cmd = [
        node,
        str(NODE_DIR / "run.mjs"),
        "--workloads",
        str(WORKLOADS_DIR / "workloads.json"),
        "--only",
        workload.name,
        "--messages",
        str(messages),
        "--warmup",
        str(warmup),
        "--mode",
        mode,
    ]
    proc = subprocess.run(cmd, cwd=NODE_DIR, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise BenchError(f"baseline harness failed on {workload.name}:\n{proc.stderr.strip()}")
    doc = orjson.loads(proc.stdout)
    (result,) = doc["results"]
    result["engine"] = f"{doc['engine']}@{doc['version']} (node {doc['node']})"
    return result  # type: ignore[no-any-return]


# --- Quasar -------------------------------------------------------------------------------------


class QuasarRunner:
    """The workload's workflows compiled once into one engine; `handle` is bytes in -> bytes out."""

    def __init__(self, workload: Workload) -> None:
        from app.engine import ChannelWorkflow, Engine, Message, RunOptions, compile_workflow

        self.workload = workload
        self.channel = workload.channel
        compiled = [compile_workflow(doc) for doc in workload.workflow_docs()]
        self.engine = Engine({self.channel: [ChannelWorkflow(wf, rollout=(0, 100)) for wf in compiled]})
        self._message = Message
        self._options = RunOptions(rollout_bucket=37)
        self.body = workload.body()

    async def handle(self, body: bytes) -> bytes:
        """What a worker does per record: decode the request, run the channel, encode the reply."""
        doc = orjson.loads(body)
        msg = self._message.from_request(doc["data"], doc.get("metadata"))
        out = await self.engine.process(self.channel, msg, self._options)
        return orjson.dumps(out.to_response())

    async def check(self) -> None:
        """Run once and compare with the expectation, so the timed loop does the agreed work."""
        doc = orjson.loads(self.body)
        msg = self._message.from_request(doc["data"], doc.get("metadata"))
        out = await self.engine.process(self.channel, msg, self._options)
        executed = tuple(f"{a.workflow_id}/{a.task_id}" for a in out.audit_trail)
        _check(f"Quasar on {self.workload.name}", self.workload, executed, out.to_response())

    async def timed(self, messages: int, warmup: int) -> float:
        """msgs/s over `messages` after `warmup` untimed ones."""
        handle, body = self.handle, self.body
        for _ in range(warmup):
            await handle(body)
        start = time.perf_counter()
        for _ in range(messages):
            await handle(body)
        return messages / (time.perf_counter() - start)


def _check(who: str, workload: Workload, executed: tuple[str, ...], response: dict[str, Any]) -> None:
    exp = workload.expect
    if executed != exp.executed:
        raise BenchError(f"{who}: executed {list(executed)}, expected {list(exp.executed)}")
    problem = exp.data_mismatch(response.get("data"))
    if problem:
        raise BenchError(f"{who}: {problem}")
    if response.get("errors"):
        raise BenchError(f"{who}: unexpected errors {response['errors']!r}")


async def run_quasar(workload: Workload, messages: int, warmup: int, rounds: int) -> list[float]:
    """Quasar-only rounds (used for profiling: `pyinstrument -m bench.engine --no-baseline`)."""
    runner = QuasarRunner(workload)
    await runner.check()
    return [await runner.timed(messages, warmup) for _ in range(rounds)]


# --- orchestration ------------------------------------------------------------------------------


async def _bench(args: argparse.Namespace) -> list[BenchResult]:
    workloads = load_workloads()
    if args.workload:
        unknown = set(args.workload) - {w.name for w in workloads}
        if unknown:
            raise BenchError(f"unknown workload(s) {sorted(unknown)}; known: {[w.name for w in workloads]}")
        workloads = [w for w in workloads if w.name in args.workload]
    node = None if args.no_baseline else ensure_node_deps()
    results: list[BenchResult] = []
    for workload in workloads:
        result = BenchResult(workload)
        runner = QuasarRunner(workload)
        await runner.check()
        for _ in range(args.rounds):
            if node is not None:
                base = run_baseline(node, workload, args.messages, args.warmup, args.baseline_mode)
                _check(f"Orion engine on {workload.name}", workload, tuple(base["executed"]), base)
                result.orion.append(float(base["msgs_per_s"]))
                result.baseline_note = base.get("note")
            result.quasar.append(await runner.timed(args.messages, args.warmup))
        results.append(result)
    return results


def _fmt(value: float | None, spec: str = ",.0f", unit: str = "") -> str:
    return "-" if value is None else format(value, spec) + unit


def render_table(results: list[BenchResult]) -> str:
    """The one table: workload, Quasar msgs/s, Orion engine msgs/s, ratio (best/best, paired median)."""
    rows = [("workload", "Quasar msgs/s", "Orion engine msgs/s", "ratio", "paired median ratio")]
    notes: list[str] = []
    for r in results:
        mark = ""
        if r.baseline_note:
            notes.append(r.baseline_note)
            mark = f" [{len(notes)}]"
        rows.append(
            (
                r.workload.title + mark,
                _fmt(r.quasar_best),
                _fmt(r.orion_best),
                _fmt(r.ratio, ".2f", "x"),
                _fmt(r.paired_ratio, ".2f", "x"),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for n, row in enumerate(rows):
        cells = [row[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)]
        lines.append("  ".join(cells))
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    lines.extend(f"[{i}] {note}" for i, note in enumerate(notes, 1))
    return "\n".join(lines)


def _node_version() -> str | None:
    node = shutil.which("node")
    if node is None:
        return None
    return subprocess.run([node, "--version"], capture_output=True, text=True, check=False).stdout.strip()


def write_results(results: list[BenchResult], args: argparse.Namespace, path: Path) -> None:
    """Machine-readable record of the run, every round included."""
    doc = {
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "host": {
            "cpus": os.cpu_count(),
            "machine": platform.machine(),
            "python": platform.python_version(),
            "node": _node_version(),
            "load_avg_1m": os.getloadavg()[0],
        },
        "config": {
            "messages": args.messages,
            "warmup": args.warmup,
            "rounds": args.rounds,
            "method": "JSON in -> JSON out, one message at a time; alternating rounds, best counts",
            "quasar": "orjson.loads, Message.from_request, await Engine.process, orjson.dumps(response)",
            "baseline": f"{BASELINE_PKG} via bench/node/run.mjs --mode {args.baseline_mode}",
        },
        "results": [
            {
                "workload": r.workload.name,
                "title": r.workload.title,
                "quasar_msgs_per_s": r.quasar_best,
                "orion_msgs_per_s": r.orion_best,
                "ratio": r.ratio,
                "paired_median_ratio": r.paired_ratio,
                "rounds": {"quasar": r.quasar, "orion": r.orion},
                "baseline_note": r.baseline_note,
            }
            for r in results
        ],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2) + b"\n")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.engine", description=__doc__.split("\n\n")[0])
    p.add_argument("--messages", type=int, default=30_000, help="timed messages per round")
    p.add_argument(
        "--warmup",
        type=int,
        default=30_000,
        help="untimed messages per round (V8 needs ~30k to tier up WASM)",
    )
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds per workload; best counts")
    p.add_argument("--workload", action="append", help="only this workload (repeatable): complex, multi, simple")
    p.add_argument(
        "--baseline-mode",
        choices=["raw", "response"],
        default="raw",
        help="raw: the WASM engine's own output string (default, most favourable to the baseline); "
        "response: also reshaped into Orion's response in JS",
    )
    p.add_argument("--no-baseline", action="store_true", help="Quasar only (e.g. under a profiler)")
    p.add_argument("--output", type=Path, default=RESULTS_FILE, help="results JSON (default bench/results/engine.json)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.messages <= 0 or args.warmup < 0 or args.rounds <= 0:
        print("--messages and --rounds must be > 0, --warmup >= 0", file=sys.stderr)
        return 2
    try:
        results = asyncio.run(_bench(args))
    except BenchError as exc:
        print(f"bench-engine: {exc}", file=sys.stderr)
        return 1
    print(render_table(results))
    if not args.no_baseline:
        write_results(results, args, args.output)
        print(f"\nwritten: {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
