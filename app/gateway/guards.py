"""The gateway's channel guard seam: CORS, then governance's `Decision`, acted on the HTTP way.

`ChannelGuards.check` runs for sync and async requests alike: the channel's API key first (401: nothing
else may answer a caller without credentials), CORS (403), then the `Governor`'s decision (payload size
413, `validation_logic` 400, rate limit 429 + Retry-After, dedup 409 or the stored first answer,
response cache hit 200), then the pluggable hooks. `complete` stores what the governor keeps of an
answer, `abandon` frees the idempotency key of a request refused before it ran (503), and
`rollout_key` gives the sticky key sent in `quasar-rollout-key`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from starlette.responses import Response

from app.channels import CompiledChannel
from app.config_store.snapshot import ChannelView
from app.errors import Forbidden
from app.gateway.errors import error_response
from app.gateway.routing import Resolution
from app.governance.decision import Admission, Decision, StoredResponse
from app.governance.governor import Governor, rollout_key
from app.governance.store import retry_after_header
from app.settings import Settings

__all__ = ["ChannelGuards", "ChannelPolicy", "DataContext", "Guard"]


@dataclass(slots=True)
class DataContext:
    """Everything a channel guard may look at for one request."""

    channel: ChannelView
    resolution: Resolution
    data: Any
    metadata: dict[str, Any]
    headers: Mapping[str, str]
    client_ip: str
    request_id: str
    trace_id: str
    admission: Admission | None = None  # what governance was asked (set by `check`)
    decision: Decision | None = None  # and what it answered
    traceparent: str | None = None  # the gateway's request span (OpenTelemetry on), carried into Kafka

    @property
    def is_async(self) -> bool:
        return self.resolution.is_async

    def admission_for(self, size: int | None = None) -> Admission:
        if self.admission is None:
            self.admission = Admission(
                self.channel.channel,
                self.headers,
                self.trace_id,
                sync=not self.is_async,
                client=self.client_ip,
                data=self.data,
                metadata=self.metadata,
                size=size,
            )
        return self.admission


# A guard rejects by raising a QuasarError, or short-circuits by returning a Response (e.g. a cache hit).
Guard = Callable[[DataContext], Awaitable[Response | None]]


@dataclass(slots=True)
class InFlight:
    """Sync requests in flight on one channel. One object per channel name, shared by the policies of every
    config snapshot: a request admitted under an old snapshot is counted down where new ones are counted."""

    n: int = 0


@dataclass(slots=True)
class ChannelPolicy:
    """A channel's gateway-side state for one config snapshot: its compiled settings and in-flight count."""

    channel: CompiledChannel
    timeout_ms: int
    in_flight: InFlight

    @classmethod
    def build(cls, channel: CompiledChannel, settings: Settings, in_flight: InFlight | None = None) -> ChannelPolicy:
        return cls(channel, channel.timeout_ms or settings.processing_timeout_ms, in_flight or InFlight())

    @property
    def name(self) -> str:
        return self.channel.name

    @property
    def topic(self) -> str:
        return self.channel.topic

    @property
    def max_concurrent(self) -> int | None:
        return self.channel.governance.max_concurrent


def _stored(response: StoredResponse, headers: dict[str, str]) -> Response:
    return Response(response.body, status_code=response.status, media_type="application/json", headers=headers)


class ChannelGuards:
    """THE seam where per-channel checks run on the HTTP path, in one order for sync and async requests.

    Without a `governor` only the store-free guards run (API keys, size, validation); `hooks` run last.
    """

    def __init__(self, hooks: list[Guard] | None = None, *, governor: Governor | None = None) -> None:
        self.hooks: list[Guard] = list(hooks or [])
        self.governor = governor

    async def start(self) -> None:
        if self.governor is not None:
            await self.governor.start()

    async def stop(self) -> None:
        if self.governor is not None:
            await self.governor.stop()

    def health(self) -> str:
        return self.governor.health() if self.governor is not None else "ok"

    async def check(self, ctx: DataContext, policy: ChannelPolicy) -> Response | None:
        adm = ctx.admission_for()
        denied = Governor.authenticate(adm)  # first: nothing below may answer a caller without credentials
        if denied is not None:
            self._act(denied)
        allowed = policy.channel.guards.allowed_origins
        if allowed is not None:
            origin = ctx.headers.get("origin")
            if origin is not None and "*" not in allowed and origin not in allowed:
                raise Forbidden(f"Origin '{origin}' is not allowed for channel '{policy.name}'")
        if self.governor is not None:
            decision = await self.governor.decide(adm, authenticated=True)
        else:
            decision = Governor.check_guards(adm, authenticated=True) or Decision("admit")
        ctx.decision = decision
        response = self._act(decision)
        if response is not None:
            return response
        for hook in self.hooks:
            response = await hook(ctx)
            if response is not None:
                return response
        return None

    @staticmethod
    def _act(decision: Decision) -> Response | None:
        """The HTTP meaning of a decision: None to go on, a Response to answer, or the error raised."""
        action = decision.action
        if action == "admit":
            return None
        if action == "cached" and decision.response is not None:
            return _stored(decision.response, {"x-cache": "hit"})
        if action == "duplicate" and decision.response is not None:
            return _stored(decision.response, {"idempotent-replayed": "true"})
        assert decision.error is not None
        if action == "throttle":
            return error_response(decision.error, {"retry-after": retry_after_header(decision.retry_after)})
        raise decision.error

    async def abandon(self, ctx: DataContext) -> None:
        """The admitted request was refused before it ran (503): release what `check` reserved for it."""
        decision, ctx.decision = ctx.decision, None
        if self.governor is not None and ctx.admission is not None and decision is not None:
            await self.governor.abandon(ctx.admission, decision)

    async def complete(self, ctx: DataContext, response: Response) -> Response:
        """Runs on the answer of an admitted request (stores cacheable bodies / idempotent originals)."""
        if self.governor is None or ctx.admission is None or ctx.decision is None:
            return response
        policy = ctx.channel.channel.governance
        if policy.cache is None and (policy.dedup is None or not policy.dedup.return_original):
            return response
        await self.governor.complete(
            ctx.admission, ctx.decision, StoredResponse(response.status_code, bytes(response.body))
        )
        return response

    def rollout_key(self, ctx: DataContext) -> str | None:
        """The sticky rollout key sent in `quasar-rollout-key` (None: the engine picks a random bucket)."""
        if ctx.channel.channel.rollout is None:
            return None
        return rollout_key(ctx.admission_for())
