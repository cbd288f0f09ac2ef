"""The runtime view of a folded config: what the worker and the gateway actually use.

A `Snapshot` is immutable and built from a `ConfigState` only when the state changed; readers swap it
in one attribute assignment, so a request always sees one consistent config.

- `channels`: active channels by name, each with its `CompiledChannel` and its bound workflows
  (`workflow_id` or `workflow_ids`), every active version of each with its rollout bucket range,
  newest first: `[0, p_new)`, `[p_new, 100)`;
- `connectors`: active connector documents by id;
- `engine`: the engine built from all of it (or None when no engine factory is available);
- `problems`: invalid definitions and dangling bindings, for `/health` and the CLI.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from app.channels import ChannelInvalid, CompiledChannel, compile_channel
from app.config_store.rulesets import ruleset_catalog
from app.config_store.state import ConfigState, ObjectState, definition_of
from app.kafka.names import TopicNames

__all__ = [
    "BoundWorkflow",
    "ChannelView",
    "EngineFactory",
    "Snapshot",
    "build_snapshot",
    "default_engine_factory",
    "rollout_ranges",
]

# ({channel name: [(compiled workflow, (lo, hi)), ...]}, rulesets=<RulesetCatalog>) -> engine
EngineFactory = Callable[..., Any]


@dataclass(frozen=True, slots=True)
class BoundWorkflow:
    workflow_id: str
    version: int
    rollout: tuple[int, int]  # half-open bucket range [lo, hi) over 0..99
    compiled: Any  # CompiledWorkflow; None when the version is invalid
    errors: tuple[Mapping[str, Any], ...] = ()


@dataclass(frozen=True, slots=True)
class ChannelView:
    """An active channel of a snapshot: its compiled settings and the workflow versions bound to it."""

    id: str
    version: int
    channel: CompiledChannel  # every setting, compiled once (topics, envelope, guards, governance, ...)
    workflows: tuple[BoundWorkflow, ...]
    active_since_ms: int = 0  # when this version was activated: `start_from: latest` starts there

    @property
    def name(self) -> str:
        return self.channel.name


@dataclass(frozen=True, slots=True)
class Snapshot:
    offset: int  # config log position this view reflects
    generation: int
    channels: Mapping[str, ChannelView] = field(default_factory=dict)
    connectors: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    workflows: Mapping[str, tuple[BoundWorkflow, ...]] = field(default_factory=dict)  # active, by id
    engine: Any = None
    problems: tuple[Mapping[str, Any], ...] = ()
    rulesets: Any = None  # RulesetCatalog: active and archived ruleset versions (what `rule` tasks call)


def rollout_ranges(obj: ObjectState) -> list[tuple[int, tuple[int, int]]]:
    """Bucket ranges of the active versions, newest first: [(version, (lo, hi)), ...].

    Each version takes its `rollout_percentage` after the newer ones; with Orion's two-version rule
    that is `[0, p_new)` and `[p_new, 100)`. A lone version at p < 100 owns `[0, p)`: the rest of the
    traffic runs no version of this workflow (gradual ramp-up, as in Orion).
    """
    out: list[tuple[int, tuple[int, int]]] = []
    lo = 0
    for n in obj.active:
        p = obj.versions[n].get("rollout_percentage", 100)
        p = p if type(p) is int and 0 <= p <= 100 else 100
        hi = min(100, lo + p)
        out.append((n, (lo, hi)))
        lo = hi
    return out


def default_engine_factory(channels: Mapping[str, list[tuple[Any, tuple[int, int]]]], rulesets: Any = None) -> Any:
    """Build `app.engine.Engine` from compiled workflows and their rollout ranges (and the ruleset catalog)."""
    from app.engine import ChannelWorkflow, Engine

    return Engine(
        {name: [ChannelWorkflow(wf, rollout=rng) for wf, rng in wfs] for name, wfs in channels.items()},
        rulesets=rulesets,
    )


def _compiled_channel(obj: ObjectState, n: int, doc: Mapping[str, Any], topics: TopicNames | None) -> Any:
    """The version's `CompiledChannel`, or its errors. The fold compiles channels; a state whose compiler
    leaves them alone (tests, tools) gets them compiled here, once per snapshot."""
    result = obj.compiled.get(n)
    if result is not None and not result.valid:
        return list(result.errors)
    if result is not None and isinstance(result.compiled, CompiledChannel):
        return result.compiled
    try:
        return compile_channel(obj.id, definition_of("channel", doc), topics)
    except ChannelInvalid as exc:
        return exc.errors


def _unusable_settings(channel: CompiledChannel, topics: TopicNames) -> list[dict[str, str]]:
    """Settings that compile but cannot work here: the channel still runs (an unresolvable API key
    matches nobody, so the channel refuses every caller) and /health says why."""
    from app.secrets import ENV_PREFIX

    problems = [
        {"field": "config.api_keys", "message": f"{ref} is not set: this key matches no caller"}
        for ref in channel.guards.api_keys
        if ref.startswith(ENV_PREFIX) and not os.environ.get(ref[len(ENV_PREFIX) :])
    ]
    group = f"{topics.prefix}worker"
    if channel.consumer_group is not None and channel.consumer_group != group:
        problems.append(
            {
                "field": "consumer_group",
                "message": f"not honoured: workers consume every channel in their group '{group}'",
            }
        )
    return problems


def build_snapshot(
    state: ConfigState,
    *,
    engine_factory: EngineFactory | None = default_engine_factory,
    topics: TopicNames | None = None,
) -> Snapshot:
    """The runtime view of `state` (pure apart from what the engine factory does)."""
    problems: list[Mapping[str, Any]] = []

    workflows: dict[str, tuple[BoundWorkflow, ...]] = {}
    for obj in state.objects("workflow"):
        bound = []
        for n, rng in rollout_ranges(obj):
            result = obj.compiled.get(n)
            if result is None or not result.valid:
                errors = tuple(result.errors) if result is not None else ()
                problems.append({"kind": "workflow", "id": obj.id, "version": n, "errors": list(errors)})
                bound.append(BoundWorkflow(obj.id, n, rng, None, errors))
            else:
                bound.append(BoundWorkflow(obj.id, n, rng, result.compiled))
        if bound:
            workflows[obj.id] = tuple(bound)

    channels: dict[str, ChannelView] = {}
    # Orion allows several channel rows with one name; their workflows share that engine channel. The
    # highest-priority row (then lowest id) provides the channel's own settings.
    compiled_channels = []
    for obj in state.objects("channel"):
        if not obj.active:
            continue
        n, doc = _newest_active(obj)
        compiled = _compiled_channel(obj, n, doc, topics)
        if not isinstance(compiled, CompiledChannel):
            problems.append({"kind": "channel", "id": obj.id, "version": n, "errors": compiled})
            continue
        compiled_channels.append((obj, n, compiled))
    compiled_channels.sort(key=lambda item: (-item[2].priority, item[0].id))
    for obj, n, channel in compiled_channels:
        bound_wfs: list[BoundWorkflow] = []
        for wid in channel.workflow_ids:
            if wid not in workflows:
                problems.append(
                    {
                        "kind": "channel",
                        "id": obj.id,
                        "version": n,
                        "errors": [{"field": "workflow_id", "message": f"workflow '{wid}' has no active version"}],
                    }
                )
                continue
            bound_wfs.extend(workflows[wid])
        unusable = _unusable_settings(channel, topics or TopicNames())
        if unusable:
            problems.append({"kind": "channel", "id": obj.id, "version": n, "errors": unusable})
        existing = channels.get(channel.name)
        if existing is not None:
            channels[channel.name] = ChannelView(
                existing.id,
                existing.version,
                existing.channel,
                existing.workflows + tuple(bound_wfs),
                existing.active_since_ms,
            )
        else:
            channels[channel.name] = ChannelView(obj.id, n, channel, tuple(bound_wfs), _activated_ms(obj.versions[n]))

    connectors = {}
    for obj in state.objects("connector"):
        if obj.active:
            n, doc = _newest_active(obj)
            result = obj.compiled.get(n)
            if result is not None and not result.valid:
                problems.append({"kind": "connector", "id": obj.id, "version": n, "errors": list(result.errors)})
                continue
            connectors[obj.id] = doc

    for obj in state.objects("ruleset"):
        for n in obj.active:
            result = obj.compiled.get(n)
            if result is not None and not result.valid:
                problems.append({"kind": "ruleset", "id": obj.id, "version": n, "errors": list(result.errors)})
    catalog = ruleset_catalog(state)

    engine = None
    if engine_factory is not None:
        engine_input = {
            name: [(b.compiled, b.rollout) for b in view.workflows if b.compiled is not None]
            for name, view in channels.items()
        }
        engine = engine_factory(engine_input, rulesets=catalog)

    return Snapshot(
        offset=state.offset,
        generation=state.generation,
        channels=channels,
        connectors=connectors,
        workflows=workflows,
        engine=engine,
        problems=tuple(problems),
        rulesets=catalog,
    )


def _activated_ms(doc: Mapping[str, Any]) -> int:
    """When a version was activated (`activated_at`; versions stored before it existed: `updated_at`)."""
    for field_name in ("activated_at", "updated_at"):
        raw = doc.get(field_name)
        if isinstance(raw, str):
            with contextlib.suppress(ValueError):
                return int(datetime.fromisoformat(raw).timestamp() * 1000)
    return 0


def _newest_active(obj: ObjectState) -> tuple[int, Mapping[str, Any]]:
    n = obj.active[0]
    return n, obj.versions[n]
