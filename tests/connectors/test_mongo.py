"""mongo_read through the official async driver against a MongoDB-wire test server (see mongo_wire.py).

What this proves: the driver handshake, pooling, filter shape (JSONLogic evaluated), BSON -> JSON
conversion and timeouts over a real socket. What it does not: behaviour of a real mongod (its query
engine here is mongomock's), authentication, replica sets.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from typing import Any

import pytest
from bson import Decimal128, ObjectId

from app.connectors import ConnectorServices, connector_registry
from app.engine.compiler import compile_workflow
from app.engine.executor import Engine, RunOptions
from app.engine.message import Message
from app.errors import Timeout
from tests.connectors.mongo_wire import MongoWireServer

OID = ObjectId("65f000000000000000000001")


@pytest.fixture
async def mongo() -> AsyncIterator[MongoWireServer]:
    server = await MongoWireServer(slow_ms=1500).start()
    server.store["shop"]["orders"].insert_many(
        [
            {
                "_id": OID,
                "customer": "c1",
                "total": Decimal128("12.50"),
                "at": dt.datetime(2024, 5, 1, 12, 0),
                "items": [{"sku": "a"}],
            },
            {"_id": ObjectId(), "customer": "c2", "total": Decimal128("3"), "at": dt.datetime(2024, 5, 2)},
            {"_id": ObjectId(), "customer": "c1", "total": Decimal128("1"), "at": dt.datetime(2024, 5, 3)},
        ]
    )
    yield server
    await server.stop()


def services(server: MongoWireServer, **cfg: Any) -> ConnectorServices:
    config = {"connection_string": "env://MONGO_URL", "driver": "mongodb", "connect_timeout_ms": 2000, **cfg}
    return ConnectorServices(
        {"m": {"name": "docs", "connector_type": "db", "config": config}}, env={"MONGO_URL": server.url}
    )


def wf(inp: dict[str, Any]) -> Any:
    return compile_workflow(
        {
            "workflow_id": "w",
            "name": "w",
            "tasks": [
                {
                    "id": "p",
                    "name": "p",
                    "function": {"name": "parse_json", "input": {"source": "payload", "target": "q"}},
                },
                {
                    "id": "m",
                    "name": "m",
                    "function": {"name": "mongo_read", "input": {"connector": "docs", **inp}},
                },
            ],
        },
        connector_registry(),
    )


async def test_mongo_read_filters_with_jsonlogic_and_converts_bson(mongo: MongoWireServer) -> None:
    svc = services(mongo)
    w = wf(
        {
            "database": "shop",
            "collection": "orders",
            "filter": {"customer": {"var": "data.q.customer"}},
            "output": "data.orders",
        }
    )
    out = await Engine({"ch": [w]}).process("ch", Message.from_request({"customer": "c1"}), RunOptions(services=svc))
    orders = out.data["orders"]
    assert [o["total"] for o in orders] == [12.5, 1]
    assert orders[0]["_id"] == str(OID)
    assert orders[0]["at"].startswith("2024-05-01T12:00:00")
    assert orders[0]["items"] == [{"sku": "a"}]
    assert "find" in mongo.commands
    await svc.aclose()


async def test_mongo_read_default_output_replaces_data(mongo: MongoWireServer) -> None:
    svc = services(mongo)
    w = wf({"database": "shop", "collection": "orders", "filter": {"customer": "c2"}})
    out = await Engine({"ch": [w]}).process("ch", Message.from_request({}), RunOptions(services=svc))
    assert isinstance(out.data, list) and len(out.data) == 1 and out.data[0]["customer"] == "c2"
    await svc.aclose()


async def test_mongo_read_query_timeout(mongo: MongoWireServer) -> None:
    svc = services(mongo, query_timeout_ms=200)
    client = await svc.mongo("docs")
    with pytest.raises(Timeout):
        await client.find("shop", "slow_orders", {})
    await svc.aclose()


async def test_mongo_connector_needs_the_mongodb_driver(mongo: MongoWireServer) -> None:
    svc = ConnectorServices(
        {
            "m": {
                "name": "docs",
                "connector_type": "db",
                "config": {"connection_string": "sqlite:///x.db", "driver": "sqlite"},
            }
        }
    )
    with pytest.raises(Exception, match="expected mongodb"):
        await svc.mongo("docs")
