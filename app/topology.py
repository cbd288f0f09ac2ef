"""Topology control (Orion's `[channels]` include/exclude): which channels an instance serves.

Globs (`fnmatch`, case-sensitive) over channel names, from `QUASAR_CHANNELS_INCLUDE` /
`QUASAR_CHANNELS_EXCLUDE`. A worker consumes only the channels it serves (another worker group or
instance set takes the rest); a gateway answers 404 for the others. Empty include = every channel.
"""

from __future__ import annotations

from dataclasses import dataclass
from fnmatch import fnmatchcase

from app.settings import Settings

__all__ = ["ChannelFilter"]


@dataclass(frozen=True, slots=True)
class ChannelFilter:
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()

    @classmethod
    def from_settings(cls, settings: Settings) -> ChannelFilter:
        return cls(tuple(settings.channels_include), tuple(settings.channels_exclude))

    @property
    def everything(self) -> bool:
        return not self.include and not self.exclude

    def serves(self, channel: str) -> bool:
        if self.include and not any(fnmatchcase(channel, p) for p in self.include):
            return False
        return not any(fnmatchcase(channel, p) for p in self.exclude)
