"""Declarative topic specs (`topics/*.toml`) and applying them to a cluster.

A spec file names a *role* (config, audit, replies, traces, dlq; or the templates channel, output);
the topic name always comes from `TopicNames` (the settings' prefix), never from the file:

    role = "replies"
    partitions = 8                 # omitted in templates: QUASAR_DEFAULT_PARTITIONS
    description = "..."
    [configs]
    "retention.ms" = 3600000

`apply_topics` creates missing topics and checks existing ones; a partition-count mismatch is a
`TopicMismatch` (startup refuses to run). Config values a broker does not report (Tansu reports only
what it was given) are not treated as errors.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import (  # type: ignore[attr-defined]  # not re-exported in the stubs
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewTopic,
)

from app.errors import QuasarError
from app.kafka.admin import create_admin, topic_partitions
from app.kafka.names import TopicNames, channel_topic_is_valid
from app.settings import Settings

__all__ = [
    "FIXED_ROLES",
    "TEMPLATE_ROLES",
    "ConfigFix",
    "TopicError",
    "TopicMismatch",
    "TopicPlan",
    "TopicResult",
    "TopicSpec",
    "TopicSpecError",
    "apply_topics",
    "apply_topics_for_settings",
    "channel_topic_plan",
    "channel_topic_plans",
    "default_topics_dir",
    "drift_fixes",
    "ensure_channel_topic",
    "fix_drift",
    "fixed_topic_plans",
    "load_specs",
    "output_topic_plan",
    "partition_mismatches",
    "spec_configs",
    "tasks_topic_plan",
]

FIXED_ROLES: tuple[str, ...] = (
    "config",
    "audit",
    "replies",
    "traces",
    "dlq",
    "flow_events",
    "flow_state",
    "flow_results",
)
TEMPLATE_ROLES: tuple[str, ...] = ("channel", "output", "tasks")
_KEYS = {"role", "partitions", "description", "configs"}

Status = Literal["created", "ok", "drift", "mismatch"]


class TopicSpecError(QuasarError):
    """A topic spec file is missing, unreadable or invalid."""

    code = "TOPIC_SPEC_INVALID"


class TopicError(QuasarError):
    """The broker refused to create a topic."""

    code, status = "TOPIC_ERROR", 503


class TopicMismatch(QuasarError):
    """Existing topics disagree with their spec in a way Quasar cannot run with (partition count)."""

    code, status = "TOPIC_MISMATCH", 500

    def __init__(self, results: list[TopicResult]) -> None:
        self.results = results
        super().__init__("; ".join(r.detail for r in results), details=[r.name for r in results])


@dataclass(frozen=True)
class TopicSpec:
    """One parsed `topics/*.toml` file."""

    role: str
    partitions: int | None
    configs: Mapping[str, str]
    description: str = ""
    source: str = ""

    @property
    def is_template(self) -> bool:
        return self.role in TEMPLATE_ROLES


@dataclass(frozen=True)
class TopicPlan:
    """A concrete topic to create or check."""

    name: str
    partitions: int
    replication_factor: int = 1
    configs: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class TopicResult:
    """Outcome for one topic: created, ok, drift (configs differ; a warning) or mismatch (an error)."""

    name: str
    status: Status
    partitions: int
    expected_partitions: int
    detail: str = ""


def default_topics_dir() -> Path:
    """`topics/` of the source tree (next to `app/`), else `./topics`."""
    beside_app = Path(__file__).resolve().parents[2] / "topics"
    return beside_app if beside_app.is_dir() else Path.cwd() / "topics"


def _config_value(value: Any, where: str) -> str:
    # Kafka configs are strings on the wire; TOML lets authors write numbers and booleans naturally.
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float | str):
        return str(value)
    raise TopicSpecError(f"{where}: config values must be strings, numbers or booleans, got {value!r}")


def _parse_spec(path: Path) -> TopicSpec:
    try:
        raw = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise TopicSpecError(f"{path}: {exc}") from exc
    unknown = set(raw) - _KEYS
    if unknown:
        raise TopicSpecError(f"{path}: unknown keys {sorted(unknown)} (allowed: {sorted(_KEYS)})")
    role = raw.get("role")
    if role not in FIXED_ROLES + TEMPLATE_ROLES:
        raise TopicSpecError(f"{path}: role must be one of {list(FIXED_ROLES + TEMPLATE_ROLES)}, got {role!r}")
    partitions = raw.get("partitions")
    if partitions is None:
        if role in FIXED_ROLES:
            raise TopicSpecError(f"{path}: topic {role!r} needs `partitions`")
    elif isinstance(partitions, bool) or not isinstance(partitions, int) or partitions < 1:
        raise TopicSpecError(f"{path}: partitions must be an integer >= 1, got {partitions!r}")
    configs = raw.get("configs", {})
    if not isinstance(configs, dict):
        raise TopicSpecError(f"{path}: [configs] must be a table")
    if "max.message.bytes" in configs:
        raise TopicSpecError(
            f"{path}: max.message.bytes follows QUASAR_MAX_RECORD_BYTES on every topic (with the producers' "
            "message.max.bytes): remove it from the spec"
        )
    return TopicSpec(
        role=role,
        partitions=partitions,
        configs={k: _config_value(v, f"{path}: configs.{k}") for k, v in configs.items()},
        description=str(raw.get("description", "")),
        source=str(path),
    )


def load_specs(directory: Path | str | None = None) -> dict[str, TopicSpec]:
    """Parse every `*.toml` in `directory` (default `default_topics_dir()`), keyed by role.

    Every fixed role and template must be declared exactly once.
    """
    root = Path(directory) if directory is not None else default_topics_dir()
    if not root.is_dir():
        raise TopicSpecError(f"topic spec directory {root} does not exist")
    specs: dict[str, TopicSpec] = {}
    for path in sorted(root.glob("*.toml")):
        spec = _parse_spec(path)
        if spec.role in specs:
            raise TopicSpecError(f"{path}: role {spec.role!r} already declared in {specs[spec.role].source}")
        specs[spec.role] = spec
    missing = [r for r in FIXED_ROLES + TEMPLATE_ROLES if r not in specs]
    if missing:
        raise TopicSpecError(f"{root}: no spec for {missing}")
    return specs


def spec_configs(spec: TopicSpec, settings: Settings) -> dict[str, str]:
    """The broker configs of a topic made from `spec`: its own, plus max.message.bytes from the record budget."""
    return {**spec.configs, "max.message.bytes": str(settings.kafka_message_max_bytes)}


def fixed_topic_plans(specs: Mapping[str, TopicSpec], settings: Settings) -> list[TopicPlan]:
    """The topics every Quasar cluster needs (config, audit, replies, traces, dlq)."""
    names = TopicNames(settings.topic_prefix)
    return [
        TopicPlan(
            name=getattr(names, role),
            partitions=specs[role].partitions or settings.default_partitions,
            replication_factor=settings.replication_factor,
            configs=spec_configs(specs[role], settings),
        )
        for role in FIXED_ROLES
    ]


def _template_plan(spec: TopicSpec, name: str, settings: Settings, partitions: int | None) -> TopicPlan:
    if not channel_topic_is_valid(name):
        raise TopicSpecError(f"invalid topic name {name!r}: use 1-249 of [A-Za-z0-9._-]")
    return TopicPlan(
        name=name,
        partitions=partitions or spec.partitions or settings.default_partitions,
        replication_factor=settings.replication_factor,
        configs=spec_configs(spec, settings),
    )


def channel_topic_plan(
    specs: Mapping[str, TopicSpec],
    settings: Settings,
    channel: str,
    *,
    declared: str | None = None,
    partitions: int | None = None,
) -> TopicPlan:
    """The request topic of `channel` (its declared topic, else `<prefix>ch.<channel>`)."""
    name = TopicNames(settings.topic_prefix).channel(channel, declared)
    return _template_plan(specs["channel"], name, settings, partitions)


def tasks_topic_plan(specs: Mapping[str, TopicSpec], settings: Settings, handler: str) -> TopicPlan:
    """The topic external workers of `handler` consume (`<prefix>tasks.<handler>`)."""
    return _template_plan(specs["tasks"], TopicNames(settings.topic_prefix).tasks(handler), settings, None)


def output_topic_plan(
    specs: Mapping[str, TopicSpec], settings: Settings, channel: str, *, partitions: int | None = None
) -> TopicPlan:
    """The result topic of async `channel` (`<prefix>out.<channel>`)."""
    return _template_plan(specs["output"], TopicNames(settings.topic_prefix).output(channel), settings, partitions)


def _norm(value: str) -> str:
    return ",".join(part.strip() for part in value.lower().split(","))


def _create(admin: AdminClient, plans: list[TopicPlan], timeout: float) -> dict[str, bool]:
    """Create `plans`; name -> True if created, False if it already existed (a race). Other errors raise."""
    if not plans:
        return {}
    futures = admin.create_topics(
        [NewTopic(p.name, p.partitions, p.replication_factor, config=dict(p.configs)) for p in plans],
        request_timeout=timeout,
        operation_timeout=timeout,
    )
    created: dict[str, bool] = {}
    for name, fut in futures.items():
        try:
            fut.result()
            created[name] = True
        except KafkaException as exc:
            err = exc.args[0] if exc.args else None
            if isinstance(err, KafkaError) and err.code() == KafkaError.TOPIC_ALREADY_EXISTS:
                created[name] = False
                continue
            raise TopicError(f"cannot create topic {name}: {exc}") from exc
    return created


def _reported_configs(admin: AdminClient, names: list[str], timeout: float) -> dict[str, dict[str, str]]:
    """Configs the broker reports per topic; a topic whose configs cannot be described maps to {}."""
    if not names:
        return {}
    out: dict[str, dict[str, str]] = {name: {} for name in names}
    try:
        futures = admin.describe_configs(
            [ConfigResource(ConfigResource.Type.TOPIC, n) for n in names], request_timeout=timeout
        )
    except (KafkaException, ValueError, NotImplementedError):
        return out  # brokers without DescribeConfigs: configs simply go unchecked
    for resource, fut in futures.items():
        try:
            entries = fut.result()
        except KafkaException:
            continue
        out[resource.name] = {k: e.value for k, e in entries.items() if e.value is not None}
    return out


def _check(plan: TopicPlan, partitions: int, reported: Mapping[str, str]) -> TopicResult:
    if partitions != plan.partitions:
        return TopicResult(
            plan.name,
            "mismatch",
            partitions,
            plan.partitions,
            f"topic {plan.name} has {partitions} partitions, spec says {plan.partitions}: partitions "
            "decide key placement and reply routing, so Quasar will not run on it; recreate the topic "
            "or change the spec (and QUASAR_TOPIC_PREFIX) deliberately",
        )
    drift = [
        f"{k}={reported[k]} (spec {v})"
        for k, v in sorted(plan.configs.items())
        if k in reported and _norm(reported[k]) != _norm(v)
    ]
    unreported = [k for k in sorted(plan.configs) if k not in reported]
    if drift:
        return TopicResult(plan.name, "drift", partitions, plan.partitions, "configs differ: " + ", ".join(drift))
    detail = f"broker does not report {', '.join(unreported)}" if unreported else ""
    return TopicResult(plan.name, "ok", partitions, plan.partitions, detail)


def apply_topics(
    admin: AdminClient, plans: Iterable[TopicPlan], *, strict: bool = True, timeout: float = 15.0
) -> list[TopicResult]:
    """Create missing topics, check existing ones; results in `plans` order.

    strict: raise `TopicMismatch` (all mismatches in one message) instead of returning them.
    Config drift never raises: configs can be altered in place, partitions cannot shrink.
    """
    plans = list(plans)
    existing = topic_partitions(admin, timeout)
    created = _create(admin, [p for p in plans if p.name not in existing], timeout)
    if not all(created.values()):
        existing = topic_partitions(admin, timeout)  # lost a creation race: check what the winner made
    to_check = [p for p in plans if not created.get(p.name, False)]
    unseen = [p.name for p in to_check if p.name not in existing]
    if unseen:
        raise TopicError(f"topics {unseen} exist (creation was refused) but are not in the broker metadata")
    reported = _reported_configs(admin, [p.name for p in to_check], timeout)
    results = [
        TopicResult(p.name, "created", p.partitions, p.partitions)
        if created.get(p.name, False)
        else _check(p, existing[p.name], reported[p.name])
        for p in plans
    ]
    mismatches = [r for r in results if r.status == "mismatch"]
    if strict and mismatches:
        raise TopicMismatch(mismatches)
    return results


@dataclass(frozen=True)
class ConfigFix:
    """One config change `fix_drift` makes: `key` from `current` to `wanted` on `topic`."""

    topic: str
    key: str
    current: str
    wanted: str


def drift_fixes(admin: AdminClient, plans: Iterable[TopicPlan], timeout: float = 15.0) -> list[ConfigFix]:
    """The config changes that would bring existing topics back to their specs (creates or changes nothing)."""
    plans = [p for p in plans if p.configs]
    reported = _reported_configs(admin, [p.name for p in plans], timeout)
    return [
        ConfigFix(p.name, key, reported[p.name][key], wanted)
        for p in plans
        for key, wanted in sorted(p.configs.items())
        if key in reported[p.name] and _norm(reported[p.name][key]) != _norm(wanted)
    ]


def fix_drift(admin: AdminClient, fixes: Iterable[ConfigFix], timeout: float = 15.0) -> None:
    """Apply `fixes` with IncrementalAlterConfigs (only the drifted keys; other topic configs stay)."""
    by_topic: dict[str, list[ConfigFix]] = {}
    for fix in fixes:
        by_topic.setdefault(fix.topic, []).append(fix)
    if not by_topic:
        return
    resources = [
        ConfigResource(
            ConfigResource.Type.TOPIC,
            topic,
            incremental_configs=[
                ConfigEntry(f.key, f.wanted, incremental_operation=AlterConfigOpType.SET) for f in topic_fixes
            ],
        )
        for topic, topic_fixes in by_topic.items()
    ]
    for resource, fut in admin.incremental_alter_configs(resources, request_timeout=timeout).items():
        try:
            fut.result()
        except KafkaException as exc:
            raise TopicError(f"cannot change configs of topic {resource.name}: {exc}") from exc


def channel_topic_plans(
    specs: Mapping[str, TopicSpec], settings: Settings, topics: Iterable[str], outputs: Iterable[str]
) -> list[TopicPlan]:
    """Plans of channel request topics (`channel` spec) and output topics (`output` spec), by name."""
    outputs = set(outputs)
    plans = []
    for name in sorted(set(topics) | outputs):
        spec = specs["output" if name in outputs else "channel"]
        plans.append(_template_plan(spec, name, settings, None))
    return plans


def ensure_channel_topic(
    admin: AdminClient,
    name: str,
    partitions: int,
    *,
    configs: Mapping[str, str] | None = None,
    replication_factor: int = 1,
    timeout: float = 15.0,
) -> TopicResult:
    """Create a channel (or output) topic if missing; idempotent and safe against concurrent creators.

    An existing topic with another partition count is reported (status "mismatch"), not raised: a
    channel may declare a topic that someone else owns.
    """
    if not channel_topic_is_valid(name):
        raise TopicSpecError(f"invalid topic name {name!r}: use 1-249 of [A-Za-z0-9._-]")
    if partitions < 1:
        raise TopicSpecError(f"topic {name}: partitions must be >= 1, got {partitions}")
    plan = TopicPlan(name, partitions, replication_factor, dict(configs or {}))
    (result,) = apply_topics(admin, [plan], strict=False, timeout=timeout)
    return result


def partition_mismatches(settings: Settings, *, specs_dir: Path | str | None = None) -> list[TopicResult]:
    """Existing fixed topics whose partition count differs from their spec (creates nothing).

    For process start-up: partitions decide key placement and reply routing, so a mismatch means refuse to run.
    """
    plans = fixed_topic_plans(load_specs(specs_dir), settings)
    existing = topic_partitions(create_admin(settings))
    return [_check(p, existing[p.name], {}) for p in plans if existing.get(p.name, p.partitions) != p.partitions]


def apply_topics_for_settings(
    settings: Settings, *, specs_dir: Path | str | None = None, timeout: float = 15.0
) -> list[TopicResult]:
    """Startup check: create/check the fixed topics of `settings`; raises `TopicMismatch` (refuse to run)."""
    plans = fixed_topic_plans(load_specs(specs_dir), settings)
    return apply_topics(create_admin(settings), plans, timeout=timeout)
