"""Connectors: named external systems (http, db, cache, kafka, mongodb) and the task functions using them.

from app.connectors import ConnectorServices, connector_registry
registry = connector_registry()                       # engine built-ins + real connector functions
services = ConnectorServices(snapshot.connectors, producer=producer)
await engine.process(channel, msg, RunOptions(services=services))
"""

from __future__ import annotations

from app.connectors.breaker import BreakerConfig, BreakerRegistry, CircuitBreaker
from app.connectors.errors import ConnectorError, ConnectorNotFound, UpstreamStatus, UrlBlocked
from app.connectors.functions import check_connector_references, connector_functions, connector_registry
from app.connectors.services import ConnectorServices
from app.secrets import SecretMissing, mask_secrets, resolve_secret, resolve_secrets

__all__ = [
    "BreakerConfig",
    "BreakerRegistry",
    "CircuitBreaker",
    "ConnectorError",
    "ConnectorNotFound",
    "ConnectorServices",
    "SecretMissing",
    "UpstreamStatus",
    "UrlBlocked",
    "check_connector_references",
    "connector_functions",
    "connector_registry",
    "mask_secrets",
    "resolve_secret",
    "resolve_secrets",
]
