"""Topic names Quasar owns, derived from the settings' prefix (one place)."""

from __future__ import annotations

import re

__all__ = ["TopicNames", "channel_topic_is_valid"]

_VALID = re.compile(r"^[A-Za-z0-9._-]{1,249}$")


def channel_topic_is_valid(name: str) -> bool:
    return bool(_VALID.match(name)) and name not in {".", ".."}


class TopicNames:
    def __init__(self, prefix: str = "quasar.") -> None:
        self.prefix = prefix
        self.config = f"{prefix}config"
        self.audit = f"{prefix}audit"
        self.replies = f"{prefix}replies"
        self.traces = f"{prefix}traces"
        self.dlq = f"{prefix}dlq"

    def channel(self, channel: str, declared: str | None = None) -> str:
        """A channel's request topic: its own declared `topic`, else `<prefix>ch.<channel>`."""
        return declared or f"{self.prefix}ch.{channel}"

    def output(self, channel: str) -> str:
        return f"{self.prefix}out.{channel}"
