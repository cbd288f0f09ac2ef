"""The config topic as a replicated state machine: fold, lifecycle, runtime view, Kafka reader/writer."""

from __future__ import annotations

from app.config_store.operations import (
    Activate,
    Archive,
    Create,
    Delete,
    NewVersion,
    Operation,
    Put,
    Restore,
    Rollback,
    Rollout,
    Update,
)
from app.config_store.reader import ConfigReader
from app.config_store.snapshot import Snapshot, build_snapshot
from app.config_store.state import ConfigState, ObjectState, Outcome
from app.config_store.writer import ConfigWriter, WriteResult

__all__ = [
    "Activate",
    "Archive",
    "ConfigReader",
    "ConfigState",
    "ConfigWriter",
    "Create",
    "Delete",
    "NewVersion",
    "ObjectState",
    "Operation",
    "Outcome",
    "Put",
    "Restore",
    "Rollback",
    "Rollout",
    "Snapshot",
    "Update",
    "WriteResult",
    "build_snapshot",
]
