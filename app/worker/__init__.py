"""The worker: a Faust app whose channel service consumes channel topics, runs the engine and produces
replies, outputs, traces and dead letters (see `runner.py` for the hot path and its guarantees)."""

from __future__ import annotations

from app.worker.runner import ChannelRoute, ChannelWorker, ConfigLag, WorkerFailed

__all__ = ["ChannelRoute", "ChannelWorker", "ConfigLag", "WorkerFailed"]
