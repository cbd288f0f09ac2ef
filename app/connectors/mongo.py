"""MongoDB connector: the official async driver (`pymongo.AsyncMongoClient`), pooled, read-only here.

Documents become JSON: ObjectId -> hex text, datetime -> ISO 8601, Decimal128 -> number,
binary -> base64 text, other BSON types -> their text form.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import decimal
from typing import Any

from app.connectors.errors import ConnectorError
from app.connectors.sql import QueryFailed
from app.engine.models import DbConnectorConfig
from app.errors import Timeout

__all__ = ["MongoConnector", "bson_json"]


def bson_json(value: Any) -> Any:
    """A BSON value as JSON."""
    from bson import Binary, Decimal128, ObjectId

    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, dict):
        return {str(k): bson_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [bson_json(v) for v in value]
    if isinstance(value, ObjectId):
        return str(value)
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    if isinstance(value, Decimal128):
        d = value.to_decimal()
        if not d.is_finite():
            return str(d)
        return int(d) if d == d.to_integral_value() else float(d)
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, Binary | bytes):
        return base64.b64encode(bytes(value)).decode()
    return str(value)


class MongoConnector:
    def __init__(self, name: str, config: DbConnectorConfig, url: str) -> None:
        from pymongo import AsyncMongoClient

        self.name = name
        self.config = config
        self.query_timeout = (config.query_timeout_ms or 30_000) / 1000.0
        connect_ms = config.connect_timeout_ms or 10_000
        self._client: Any = AsyncMongoClient(
            url,
            maxPoolSize=config.max_connections or 100,
            serverSelectionTimeoutMS=connect_ms,
            connectTimeoutMS=connect_ms,
            tz_aware=True,
            connect=False,
        )

    async def find(self, database: str, collection: str, filter: dict[str, Any]) -> list[Any]:
        from pymongo.errors import ConnectionFailure, ExecutionTimeout, OperationFailure, PyMongoError

        coll = self._client[database][collection]
        try:
            async with asyncio.timeout(self.query_timeout):
                cursor = coll.find(filter, max_time_ms=int(self.query_timeout * 1000))
                docs = await cursor.to_list(length=None)
        except (TimeoutError, ExecutionTimeout) as exc:
            raise Timeout(f"mongo_read on connector '{self.name}' exceeded {self.query_timeout:.3g}s") from exc
        except ConnectionFailure as exc:
            raise ConnectorError(f"connector '{self.name}': {exc}") from exc
        except OperationFailure as exc:
            raise QueryFailed(f"mongo_read on connector '{self.name}' failed: {exc}") from exc
        except PyMongoError as exc:
            raise ConnectorError(f"connector '{self.name}': {exc}") from exc
        return [bson_json(d) for d in docs]

    async def aclose(self) -> None:
        await self._client.close()
