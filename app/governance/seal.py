"""The gateway's seal on the records it produces: proof that governance already ran over HTTP.

A record produced straight to a channel topic goes through the channel's Kafka-path governance (rate
limit, dedup) in the worker; a record the gateway produced was governed there and must not be charged
twice. Headers alone cannot tell them apart (anyone can write `quasar-mode`), so the gateway adds
`quasar-gateway-seal`: a keyed BLAKE2b of the topic and the value, under `QUASAR_INGEST_SEAL_KEY` (default:
the admin API key). The worker skips Kafka-path governance only for records whose seal verifies. A sealed
record copied verbatim is a copy of a request the gateway admitted; any change to its value breaks the seal.
Without any key configured (development), records carrying `quasar-mode` are trusted as before.
"""

from __future__ import annotations

import hashlib
import hmac

from app.secrets import resolve_secret
from app.settings import Settings

__all__ = ["seal", "seal_key", "verify"]


def seal_key(settings: Settings) -> bytes | None:
    """The shared key of gateways and workers (None: no seal, records are trusted by their headers)."""
    raw = settings.ingest_seal_key or settings.admin_api_key
    if not raw:
        return None
    return str(resolve_secret(raw)).encode()


def seal(key: bytes, topic: str, value: bytes | None) -> bytes:
    mac = hashlib.blake2b(key=key[:64], digest_size=16)
    mac.update(topic.encode())
    mac.update(b"\0")
    mac.update(value or b"")
    return mac.hexdigest().encode()


def verify(key: bytes, topic: str, value: bytes | None, claimed: str | bytes | None) -> bool:
    if not claimed:
        return False
    given = claimed.encode() if isinstance(claimed, str) else claimed
    return hmac.compare_digest(seal(key, topic, value), given)
