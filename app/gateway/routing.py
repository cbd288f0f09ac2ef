"""REST route table: resolve `METHOD /path` under `/api/v1/data/` to a channel (pure, no IO).

Orion semantics (`orion-semantics.md` §1d "REST route matching"):

- the table holds active **sync** channels with protocol `rest`/`http` and a `route_pattern`;
- entries sort by channel `priority` descending, then by segment count descending; first match wins;
- the method must be in `methods` (an empty list means any method);
- segment counts must be equal; static segments compare case-insensitively; `{name}` captures a string.

Resolution: REST table, else a single path segment is a channel name, else not found. Unlike Orion
(quirk 9) a single segment that names no active channel is *not* found: the caller answers 404.

Literal beats parameter: among entries of equal priority and length, the one with a static segment
where the other has a parameter (leftmost difference) is tried first, and a pattern made only of
parameters never takes a single segment that names an active channel (`/{any}` used to take every
other channel's traffic). Two patterns that match the same paths with the same methods and priority
and neither more literal are refused at write (`ambiguous_with`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from app.channels import CompiledChannel, compile_route

__all__ = ["Resolution", "RouteEntry", "RouteTable", "ambiguous_with", "split_async", "split_path"]


def split_path(path: str) -> list[str]:
    """Non-empty segments of a URL path (`/a//b/` -> `["a", "b"]`)."""
    return [segment for segment in path.split("/") if segment]


def split_async(segments: list[str]) -> tuple[list[str], bool]:
    """Strip one trailing `async` segment (Orion step 1); `True` when it was there."""
    if len(segments) > 1 and segments[-1] == "async":
        return segments[:-1], True
    return segments, False


@dataclass(frozen=True, slots=True)
class RouteEntry:
    """One channel's compiled route pattern."""

    channel: str
    methods: frozenset[str]
    # Each segment is ("static", lower-cased text) or ("param", name).
    segments: tuple[tuple[str, str], ...]
    priority: int = 0
    order: int = 0  # insertion order: a stable tie-break so equal entries resolve the same way everywhere

    @classmethod
    def compile(
        cls, channel: str, pattern: str, methods: Iterable[str] = (), priority: int = 0, order: int = 0
    ) -> RouteEntry:
        route = compile_route(pattern, list(methods))
        return cls(channel, route.methods, route.segments, int(priority), order)

    @property
    def literal_rank(self) -> tuple[int, ...]:
        """Sort key part: static segments (0) before parameters (1), leftmost first."""
        return tuple(0 if kind == "static" else 1 for kind, _ in self.segments)

    @property
    def all_params(self) -> bool:
        return all(kind == "param" for kind, _ in self.segments)

    def overlaps(self, other: RouteEntry) -> bool:
        """Whether some request (method and path) matches both entries."""
        if self.methods and other.methods and not (self.methods & other.methods):
            return False
        if len(self.segments) != len(other.segments):
            return False
        return all(
            a_kind == "param" or b_kind == "param" or a_text == b_text
            for (a_kind, a_text), (b_kind, b_text) in zip(self.segments, other.segments, strict=True)
        )

    def match(self, method: str, segments: list[str]) -> dict[str, str] | None:
        """Path params when `method` + `segments` match this entry, else `None`."""
        if self.methods and method.upper() not in self.methods:
            return None
        if len(segments) != len(self.segments):
            return None
        params: dict[str, str] = {}
        for (kind, text), actual in zip(self.segments, segments, strict=True):
            if kind == "param":
                params[text] = actual
            elif text != actual.lower():
                return None
        return params


@dataclass(frozen=True, slots=True)
class Resolution:
    """Where a request goes: the channel, its path params, and whether it asked for async."""

    channel: str
    params: dict[str, str] = field(default_factory=dict)
    is_async: bool = False
    via_route: bool = False


class RouteTable:
    """Immutable, sorted route table; rebuild it whenever the active channel set changes."""

    def __init__(self, entries: Iterable[RouteEntry] = (), channel_names: Iterable[str] = ()) -> None:
        self._entries = sorted(entries, key=lambda e: (-e.priority, -len(e.segments), e.literal_rank, e.order))
        self._names = frozenset(channel_names)

    @classmethod
    def of(cls, channels: Iterable[CompiledChannel]) -> RouteTable:
        """The table of active channels (compiled): sync `rest`/`http` channels with a `route_pattern`
        are matched by route; every channel by its name."""
        entries: list[RouteEntry] = []
        names: list[str] = []
        for index, ch in enumerate(channels):
            names.append(ch.name)
            if ch.route is not None and ch.channel_type == "sync" and ch.protocol in ("rest", "http"):
                entries.append(RouteEntry(ch.name, ch.route.methods, ch.route.segments, ch.priority, order=index))
        return cls(entries, names)

    @property
    def entries(self) -> list[RouteEntry]:
        return list(self._entries)

    def has_channel(self, name: str) -> bool:
        return name in self._names

    def resolve(self, method: str, path: str) -> Resolution | None:
        """Resolve `path` (relative to `/api/v1/data/`); `None` means 404."""
        segments, is_async = split_async(split_path(path))
        if not segments:
            return None
        names_a_channel = len(segments) == 1 and segments[0] in self._names
        for entry in self._entries:
            if names_a_channel and entry.all_params:
                continue  # the literal channel name wins over a pattern of parameters only
            params = entry.match(method, segments)
            if params is not None:
                return Resolution(entry.channel, params, is_async, via_route=True)
        if names_a_channel:
            return Resolution(segments[0], {}, is_async)
        return None


def ambiguous_with(entry: RouteEntry, others: Iterable[RouteEntry]) -> RouteEntry | None:
    """Another entry that matches the same requests as `entry` with nothing to decide between them
    (same priority, same literal rank): which one answers would depend on write order."""
    for other in others:
        if (
            other.channel != entry.channel
            and other.priority == entry.priority
            and other.literal_rank == entry.literal_rank
            and entry.overlaps(other)
        ):
            return other
    return None
