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
        # Durable flows (docs/flows.md): events and state are co-partitioned (same partition count).
        self.flow_events = f"{prefix}flows.events"
        self.flow_state = f"{prefix}flows.state"
        self.flow_results = f"{prefix}flows.results"

    def is_internal(self, topic: str) -> bool:
        """Whether `topic` is Quasar's own (config, audit, replies, traces, DLQ, flows, tasks) or the
        broker's (`__consumer_offsets`, ...): never a channel's request or output topic, never a
        `publish_kafka` target (a channel on the config topic dead-lettered every config record; a
        workflow relaying request data there let an anonymous call create a connector)."""
        if topic.startswith("__"):
            return True
        own = (
            self.config, self.audit, self.replies, self.traces, self.dlq,
            self.flow_events, self.flow_state, self.flow_results,
        )  # fmt: skip
        return topic in own or topic.startswith((f"{self.prefix}tasks.", f"{self.prefix}flows."))

    def channel(self, channel: str, declared: str | None = None) -> str:
        """A channel's request topic: its own declared `topic`, else `<prefix>ch.<channel>`."""
        return declared or f"{self.prefix}ch.{channel}"

    def output(self, channel: str) -> str:
        return f"{self.prefix}out.{channel}"

    def tasks(self, handler: str) -> str:
        """Where an `external_task` step publishes work for `handler`'s workers."""
        return f"{self.prefix}tasks.{handler}"
