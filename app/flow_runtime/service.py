"""The flow runner as a part of a longer-lived process (`quasar worker`), per `settings.worker_flows`.

`on` starts the runner with the process; `auto` starts it once the config holds a flow or a schedule,
so a deployment without flows joins no flow consumer group and polls nothing; `off` never starts it
(flows then run in `quasar flows run` processes). The runner shares the process's config reader and
connector runtime, its metrics registry and its ops port (the `flows` health component).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from app.config_store.reader import ConfigReader
from app.errors import QuasarError
from app.flow_runtime.runner import FlowRunner
from app.settings import Settings

__all__ = ["FlowService"]

log = logging.getLogger(__name__)


class FlowService:
    """Starts, watches and stops one `FlowRunner` inside the host process."""

    def __init__(self, settings: Settings, reader: ConfigReader, services: Any = None) -> None:
        self.settings = settings
        self.mode = settings.worker_flows
        self.reader = reader
        self.services = services
        self.runner: FlowRunner | None = None
        self.problem: str | None = None  # why `auto` could not start the runner (retried on the next change)
        self._failed: asyncio.Future[BaseException] | None = None
        self._unlisten: Callable[[], None] | None = None
        self._starting = False
        self._stopped = False

    async def start(self) -> None:
        self._failed = asyncio.get_running_loop().create_future()
        if self.mode == "off":
            return
        if self.mode == "on":
            await self._start_runner()  # a problem (missing topics) stops the host: it was asked for
            return
        self._unlisten = self.reader.add_listener(self._config_changed)
        await self._config_changed(self.reader.snapshot)

    def _wanted(self) -> bool:
        state = self.reader.state
        return bool(state.objects("flow") or state.objects("schedule"))

    async def _config_changed(self, snapshot: Any) -> None:
        # The reader calls listeners as concurrent tasks: `_starting` keeps it to one start at a time.
        if self.runner is not None or self._starting or self._stopped or not self._wanted():
            return
        self._starting = True
        try:
            await self._start_runner()
            self.problem = None
            if self._unlisten is not None:
                self._unlisten()
                self._unlisten = None
        except QuasarError as exc:  # e.g. the flow topics do not exist yet: say so, retry on the next change
            self.problem = str(exc)
            log.warning("flows: runner not started: %s", exc)
        finally:
            self._starting = False

    async def _start_runner(self) -> None:
        runner = FlowRunner(self.settings, reader=self.reader, services=self.services)
        try:
            await runner.start()
        except BaseException:
            await runner.stop()
            raise
        if self._stopped:  # stop() ran while the runner started
            await runner.stop()
            return
        self.runner = runner
        log.info("flows: runner started in this process (worker_flows=%s)", self.mode)
        loop_task = runner._loop_task
        assert loop_task is not None
        loop_task.add_done_callback(self._loop_ended)

    def _loop_ended(self, task: asyncio.Task[None]) -> None:
        if task.cancelled() or self._stopped or self._failed is None or self._failed.done():
            return
        failure = task.exception() or RuntimeError("the flow runner's loop ended")
        self._failed.set_result(failure)

    async def wait_failed(self) -> BaseException:
        """Returns the runner's failure once its loop crashes (never, while it runs or is off)."""
        assert self._failed is not None, "start() first"
        return await asyncio.shield(self._failed)

    async def stop(self) -> None:
        self._stopped = True
        if self._unlisten is not None:
            self._unlisten()
            self._unlisten = None
        if self.runner is not None:
            await self.runner.stop()

    def status(self) -> str:
        """The `flows` health component: `ok` once the runner has joined its group and recovered its
        partitions, `not_configured` when it does not run here (off, or `auto` without flows)."""
        if self.runner is None:
            if self.problem is not None:
                return f"not_running ({self.problem})"
            return "not_configured"
        return self.runner.status()

    def info(self) -> dict[str, Any]:
        runner = self.runner
        if runner is None:
            return {"mode": self.mode, "running": False}
        return {"mode": self.mode, "running": True, "partitions": runner.owned(), "applied": runner.applied}
