"""The connection properties of every librdkafka client, translated for Faust's aiokafka client.

The Faust app runs the worker process and talks to Kafka through aiokafka, which does not read
librdkafka properties: its security comes from `broker_credentials`. This module derives those from
the same `connection_properties` every other client gets, so one set of settings secures them all.
aiokafka knows only the connection subset (protocol, SASL, TLS); other passthrough properties tune the
librdkafka clients only. GSSAPI/Kerberos is not supported (refused with a clear error).
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Callable
from typing import Any

import httpx
from aiokafka.abc import AbstractTokenProvider
from aiokafka.helpers import create_ssl_context
from faust.auth import OAuthCredentials, SASLCredentials, SSLCredentials
from faust.types.auth import CredentialsT

from app.kafka.config import KafkaConfig, KafkaSettingsError, connection_properties
from app.settings import Settings

__all__ = ["OidcTokenProvider", "faust_credentials", "ssl_context_of"]

# Refresh a cached token this long before it expires.
_TOKEN_MARGIN_S = 30.0


def ssl_context_of(props: KafkaConfig) -> ssl.SSLContext:
    """A client TLS context from librdkafka's ssl.* properties (CA, client cert/key, hostname check)."""
    context: ssl.SSLContext = create_ssl_context(
        cafile=props.get("ssl.ca.location"),
        certfile=props.get("ssl.certificate.location"),
        keyfile=props.get("ssl.key.location"),
        password=props.get("ssl.key.password"),
    )
    if str(props.get("ssl.endpoint.identification.algorithm", "https")).lower() == "none":
        context.check_hostname = False
    if str(props.get("enable.ssl.certificate.verification", "true")).lower() == "false":
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


class OidcTokenProvider(AbstractTokenProvider):  # type: ignore[misc]
    """OAuth 2 client-credentials grant against an OIDC token endpoint (what librdkafka's `oidc` does)."""

    def __init__(self, endpoint: str, client_id: str, client_secret: str, scope: str | None = None) -> None:
        self.endpoint = endpoint
        self.client_id = client_id
        self.client_secret = client_secret
        self.scope = scope
        self._token: str | None = None
        self._expires = 0.0

    async def token(self) -> str:
        if self._token is None or time.time() > self._expires - _TOKEN_MARGIN_S:
            form = {"grant_type": "client_credentials"}
            if self.scope:
                form["scope"] = self.scope
            async with httpx.AsyncClient(timeout=10.0) as http:
                response = await http.post(self.endpoint, data=form, auth=(self.client_id, self.client_secret))
            if response.status_code != 200:
                raise KafkaSettingsError(
                    f"OIDC token endpoint {self.endpoint} answered {response.status_code}: {response.text[:200]}"
                )
            body = response.json()
            self._token = str(body["access_token"])
            self._expires = time.time() + float(body.get("expires_in", 300))
        return self._token


class _CallableTokenProvider(AbstractTokenProvider):  # type: ignore[misc]
    """A `kafka_oauth_token_provider` callable (blocking: it may sign or call out) run off the loop."""

    def __init__(self, oauth_cb: Callable[[str], tuple[str, float]]) -> None:
        self.oauth_cb = oauth_cb

    async def token(self) -> str:
        token, _expiry = await asyncio.get_running_loop().run_in_executor(None, self.oauth_cb, "")
        return token


def faust_credentials(settings: Settings) -> CredentialsT | None:
    """Faust `broker_credentials` equivalent to the librdkafka connection properties (None: plaintext)."""
    props = connection_properties(settings)
    protocol = str(props.get("security.protocol", "PLAINTEXT")).upper()
    if protocol == "PLAINTEXT":
        return None
    tls = ssl_context_of(props) if protocol.endswith("SSL") else None
    if protocol == "SSL":
        assert tls is not None
        return SSLCredentials(tls)
    mechanism = str(props.get("sasl.mechanism", "GSSAPI")).upper()
    if mechanism in {"PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"}:
        return SASLCredentials(
            username=props.get("sasl.username"),
            password=props.get("sasl.password"),
            ssl_context=tls,
            mechanism=mechanism,
        )
    if mechanism == "OAUTHBEARER":
        provider: Any
        if "oauth_cb" in props:
            provider = _CallableTokenProvider(props["oauth_cb"])
        elif str(props.get("sasl.oauthbearer.method", "default")).lower() == "oidc":
            missing = [
                p
                for p in (
                    "sasl.oauthbearer.token.endpoint.url",
                    "sasl.oauthbearer.client.id",
                    "sasl.oauthbearer.client.secret",
                )
                if not props.get(p)
            ]
            if missing:
                raise KafkaSettingsError(f"OAUTHBEARER with method oidc needs {', '.join(missing)}")
            provider = OidcTokenProvider(
                props["sasl.oauthbearer.token.endpoint.url"],
                props["sasl.oauthbearer.client.id"],
                props["sasl.oauthbearer.client.secret"],
                props.get("sasl.oauthbearer.scope"),
            )
        else:
            raise KafkaSettingsError(
                "OAUTHBEARER needs a token source: QUASAR_KAFKA_SASL_OAUTHBEARER_METHOD=oidc (+ endpoint, client id "
                "and secret) or QUASAR_KAFKA_OAUTH_TOKEN_PROVIDER=module:callable"
            )
        return OAuthCredentials(oauth_cb=provider, ssl_context=tls)
    raise KafkaSettingsError(f"sasl.mechanism {mechanism} is not supported (PLAIN, SCRAM-SHA-256/512, OAUTHBEARER)")
