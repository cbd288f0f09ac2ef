"""kill -9 the runner that owns an instance during its delay: the other runner fires the timer, once."""

from __future__ import annotations

import time
from pathlib import Path

from app.flow_runtime.records import partition_for
from app.settings import Settings
from tests.flows.runtime_support import FlowEnv, RunnerProcess, until

DELAY_SECONDS = 12  # long enough to kill the owner and rebalance before it is due (60 s in bench/flows.py)


def stable_owners(runners: list[RunnerProcess], partitions: int) -> dict[int, RunnerProcess] | None:
    owners: dict[int, RunnerProcess] = {}
    for runner in runners:
        for p in runner.owned() or []:
            if p in owners:
                return None  # one of them has not logged its latest assignment yet
            owners[p] = runner
    return owners if len(owners) == partitions else None


async def test_kill_9_of_the_owner_during_a_delay_fires_the_timer_once_on_the_survivor(
    settings: Settings, tmp_path: Path
) -> None:
    async with FlowEnv(settings) as env:
        await env.flow(
            {
                "flow_id": "slow",
                "name": "Slow",
                "steps": [
                    {"id": "wait", "type": "delay", "delay": {"duration": f"{DELAY_SECONDS}s"}},
                    {"id": "done", "type": "terminal"},
                ],
            }
        )
        runners = [RunnerProcess(settings, name, tmp_path) for name in ("runner-a", "runner-b")]
        try:
            owners = await until(
                lambda: stable_owners(runners, env.partitions), within=90, what="both runners own partitions"
            )
            await env.start("slow", "victim")
            waiting = await env.wait("victim", "waiting")
            due = waiting.timers["delay:wait"]
            owner = owners[partition_for("victim", env.partitions)]
            assert time.time() < due, "the delay was over before the kill: raise DELAY_SECONDS"
            owner.kill()
            survivor = next(r for r in runners if r is not owner)
            done = await env.wait("victim", "completed", seconds=DELAY_SECONDS + 60)
            fired = [e for e in done.timeline if e["event"] == "timer_fired"]
            assert len(fired) == 1, done.timeline
            assert fired[0]["due"] == due
            assert [e["event"] for e in done.timeline].count("step_completed") == 1
            assert survivor.proc.poll() is None
            assert partition_for("victim", env.partitions) in (survivor.owned() or [])
            print(f"timer due {due:.3f}, applied {fired[0]['at']:.3f}: lateness {fired[0]['at'] - due:.3f} s")
        finally:
            for runner in runners:
                runner.stop()
