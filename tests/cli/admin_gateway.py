"""A real admin gateway for tests: uvicorn on a free loopback port, in a thread with its own event loop.

Uses `app.gateway.app.create_app` when it exists (the real gateway, which includes the admin router);
otherwise a minimal FastAPI app with the admin router, the real error handlers and a real
ConfigReader/ConfigWriter on the test broker. A thread (not the test's loop) lets sync tests, such as
typer's CliRunner, call it over HTTP too.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

import uvicorn
from fastapi import FastAPI

from app.gateway.server import server_config
from app.kafka.admin import create_admin
from app.kafka.broker import free_port
from app.kafka.topics import apply_topics, fixed_topic_plans, load_specs
from app.settings import Settings

__all__ = ["AdminGateway", "admin_gateway", "apply_fixed_topics"]


def apply_fixed_topics(settings: Settings) -> None:
    """Create config, audit, replies, traces and dlq topics for the settings' prefix."""
    apply_topics(create_admin(settings), fixed_topic_plans(load_specs(), settings))


def _minimal_app(settings: Settings) -> FastAPI:
    from app.config_store.reader import ConfigReader
    from app.config_store.writer import ConfigWriter
    from app.gateway.admin import router
    from app.gateway.errors import install_error_handlers

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        reader = ConfigReader(settings, engine_factory=None)
        await reader.ready()
        app.state.config_reader = reader
        app.state.config_writer = ConfigWriter(reader)
        try:
            yield
        finally:
            await reader.stop()

    app = FastAPI(lifespan=lifespan)
    app.state.settings = settings
    install_error_handlers(app)
    app.include_router(router)
    return app


def _make_app(settings: Settings) -> FastAPI:
    try:
        from app.gateway.app import create_app
    except ImportError:
        return _minimal_app(settings)
    return create_app(settings)  # type: ignore[no-any-return]


class AdminGateway:
    """Start with `start()`, stop with `stop()`; `url` is the base URL."""

    def __init__(self, settings: Settings, app: FastAPI | None = None) -> None:
        self.settings = settings
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.app = app or _make_app(settings)
        config = server_config(self.app, settings, host="127.0.0.1", port=self.port, log_level="warning")
        self.server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self.server.run, name=f"admin-gw-{self.port}", daemon=True)
        self._error: BaseException | None = None

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The server thread's event loop (to run coroutines on the app's objects from a test)."""
        loop = self.app.state.config_reader._loop
        assert loop is not None
        return loop

    def start(self, timeout: float = 60.0) -> AdminGateway:
        self._thread.start()
        # `started` flips once lifespan startup (config reader ready) is done and the socket listens.
        started = threading.Event()

        def watch() -> None:
            while self._thread.is_alive() and not self.server.started:
                self._thread.join(0.05)
            started.set()

        threading.Thread(target=watch, daemon=True).start()
        if not started.wait(timeout) or not self.server.started:
            self.stop()
            raise RuntimeError(f"admin gateway did not start within {timeout}s")
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self._thread.join(15)

    def __enter__(self) -> AdminGateway:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


@contextlib.contextmanager
def admin_gateway(settings: Settings) -> Iterator[AdminGateway]:
    apply_fixed_topics(settings)
    with AdminGateway(settings) as gw:
        yield gw
