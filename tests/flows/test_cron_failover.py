"""A cron schedule across a kill -9 of the runner that drives it: one instance per fire time, no gaps."""

from __future__ import annotations

import time
from pathlib import Path

from app.flow_runtime.records import SCHEDULE_PREFIX, partition_for
from app.settings import Settings
from tests.flows.runtime_support import FlowEnv, RunnerProcess, until
from tests.flows.test_failover import stable_owners


def fire_times(env: FlowEnv) -> list[int]:
    return sorted(int(s.id.split("@", 1)[1]) for s in env.view.find(flow_id="tick"))


async def test_every_second_schedule_survives_the_kill_of_its_runner(settings: Settings, tmp_path: Path) -> None:
    async with FlowEnv(settings) as env:
        await env.flow({"flow_id": "tick", "name": "Tick", "steps": [{"id": "end", "type": "terminal"}]})
        runners = [RunnerProcess(settings, name, tmp_path) for name in ("cron-a", "cron-b")]
        try:
            owners = await until(
                lambda: stable_owners(runners, env.partitions), within=90, what="runners own partitions"
            )
            schedule = {
                "schedule_id": "every-second",
                "name": "Every second",
                "cron": "* * * * * *",
                "flow_id": "tick",
                "overlap": "allow",
                "catch_up": "1m",
            }
            await env.flow(schedule, kind="schedule")
            await until(lambda: len(fire_times(env)) >= 3, within=60, what="the schedule fires")
            owner = owners[partition_for(SCHEDULE_PREFIX + "every-second", env.partitions)]
            owner.kill()
            killed_at = time.time()
            await until(lambda: fire_times(env)[-1] >= killed_at + 5, within=90, what="fires after the failover")
            for runner in runners:
                runner.stop()
            await until(
                lambda: all(s.status == "completed" for s in env.view.find(flow_id="tick")), within=30, what="all done"
            )
            fires = fire_times(env)
            assert fires == list(range(fires[0], fires[-1] + 1)), f"gaps in {fires}"
            for state in env.view.find(flow_id="tick"):
                assert [e["event"] for e in state.timeline].count("started") == 1, state.timeline
                assert state.schedule_id == "every-second"
            print(f"{len(fires)} fires, one instance each, kill at {killed_at:.1f}, no gap")
        finally:
            for runner in runners:
                runner.stop()
