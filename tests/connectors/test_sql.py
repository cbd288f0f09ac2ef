"""db_read / db_write on real PostgreSQL, MariaDB and SQLite (pooled, parameterized, with timeouts)."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from app.connectors import ConnectorServices, connector_registry
from app.connectors.errors import ConnectorError
from app.connectors.sql import QueryFailed, json_value, translate_placeholders
from app.engine.compiler import compile_workflow
from app.engine.executor import Engine, RunOptions
from app.engine.message import Message
from app.errors import Timeout

MYSQL_DSN = "mysql://root@127.0.0.1:3306/test"
COLS = "paid BOOLEAN, note TEXT"
MY_COLS = "day DATE, " + COLS
REGISTRY = connector_registry()


def _mysql_ready() -> None:
    """MariaDB must be up (started here when it is down, like the other service fixtures)."""
    probe = ["mysqladmin", "-h127.0.0.1", "-uroot", "--connect-timeout=2", "ping"]
    if subprocess.run(probe, capture_output=True, check=False).returncode != 0:
        subprocess.run(["service", "mariadb", "start"], capture_output=True, check=False)
        subprocess.run([*probe[:-1], "--wait=20", "ping"], capture_output=True, check=True)
    subprocess.run(["mysql", "-h127.0.0.1", "-uroot", "-e", "CREATE DATABASE IF NOT EXISTS test"], check=True)


# dialect: (connector config, DDL with {t} for the table name, sleep query)
@pytest.fixture(params=["postgres", "mysql", "sqlite"])
async def db(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[dict[str, Any]]:
    driver = request.param
    table = f"orders_{uuid.uuid4().hex[:8]}"
    if driver == "postgres":
        dsn = request.getfixturevalue("postgres_dsn")
        ddl = f"CREATE TABLE {table} (id TEXT PRIMARY KEY, qty INT, price NUMERIC(10,2), day DATE, {COLS})"
        sleep = "SELECT pg_sleep(3)"
    elif driver == "mysql":
        _mysql_ready()
        dsn = MYSQL_DSN
        ddl = f"CREATE TABLE {table} (id VARCHAR(64) PRIMARY KEY, qty INT, price DECIMAL(10,2), {MY_COLS})"
        sleep = "SELECT SLEEP(3)"
    else:
        dsn = f"sqlite:///{tmp_path / 'test.db'}"
        ddl = f"CREATE TABLE {table} (id TEXT PRIMARY KEY, qty INT, price REAL, day TEXT, paid INT, note TEXT)"
        sleep = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c) SELECT count(*) FROM c"
    connector = {
        "name": "orders-db",
        "connector_type": "db",
        "config": {
            "connection_string": "env://ORDERS_DSN",
            "driver": driver,
            "max_connections": 3,
            "query_timeout_ms": 300,
            "connect_timeout_ms": 2000,
        },
    }
    svc = ConnectorServices({"db1": connector}, env={"ORDERS_DSN": dsn})
    sql = await svc.sql("orders-db")
    await sql.write(ddl, [])
    yield {"driver": driver, "svc": svc, "table": table, "sleep": sleep}
    await sql.write(f"DROP TABLE {table}", [])
    await svc.aclose()


def wf(*tasks: dict[str, Any]) -> Any:
    return compile_workflow(
        {
            "workflow_id": "w",
            "name": "w",
            "tasks": [{"id": f"t{i}", "name": f"t{i}", "function": f} for i, f in enumerate(tasks)],
        },
        REGISTRY,
    )


async def run(workflow: Any, svc: ConnectorServices, data: Any) -> Message:
    msg = Message.from_request(data)
    return await Engine({"ch": [workflow]}).process("ch", msg, RunOptions(services=svc))


PARSE = {"name": "parse_json", "input": {"source": "payload", "target": "in"}}


async def test_write_then_read_with_jsonlogic_params(db: dict[str, Any]) -> None:
    t = db["table"]
    insert = {
        "name": "db_write",
        "input": {
            "connector": "orders-db",
            "query": f"INSERT INTO {t} (id, qty, price, day, paid, note) VALUES ($1, $2, $3, $4, $5, $6)",
            "params": [
                {"var": "data.in.id"},
                {"var": "data.in.qty"},
                12.5,
                "2024-05-01",
                True,
                "100% cotton",
            ],
            "output": "data.write",
        },
    }
    read = {
        "name": "db_read",
        "input": {
            "connector": "orders-db",
            "query": f"SELECT id, qty, price, note FROM {t} WHERE id = $1 AND qty > $2",
            "params": [{"var": "data.in.id"}, 1],
            "output": "data.rows",
        },
    }
    if db["driver"] == "postgres":
        insert["input"]["query"] = insert["input"]["query"].replace("$4", "$4::date")
    out = await run(wf(PARSE, insert, read), db["svc"], {"id": "A1", "qty": 3})
    assert out.data["write"] == {"rows_affected": 1}
    assert out.data["rows"] == [{"id": "A1", "qty": 3, "price": 12.5, "note": "100% cotton"}]


async def test_default_output_replaces_data_and_types_are_json(db: dict[str, Any]) -> None:
    t = db["table"]
    day = "'2024-05-01'" if db["driver"] != "postgres" else "DATE '2024-05-01'"
    paid = "TRUE" if db["driver"] != "sqlite" else "1"
    sql = await db["svc"].sql("orders-db")
    await sql.write(f"INSERT INTO {t} VALUES ('B2', 7, 10.00, {day}, {paid}, NULL)", [])
    read = {"name": "db_read", "input": {"connector": "orders-db", "query": f"SELECT * FROM {t}"}}
    out = await run(wf(read), db["svc"], {})
    [row] = out.data
    assert row["id"] == "B2" and row["qty"] == 7 and row["price"] == 10 and row["note"] is None
    assert row["day"] == "2024-05-01"
    assert row["paid"] in (True, 1)


async def test_sql_injection_attempt_stays_a_parameter(db: dict[str, Any]) -> None:
    t = db["table"]
    evil = f"x'); DROP TABLE {t}; --"
    write = {
        "name": "db_write",
        "input": {
            "connector": "orders-db",
            "query": f"INSERT INTO {t} (id, note) VALUES ($1, $2)",
            "params": [{"var": "data.in.id"}, "n"],
            "output": "data.w",
        },
    }
    read = {
        "name": "db_read",
        "input": {
            "connector": "orders-db",
            "query": f"SELECT id FROM {t} WHERE id = $1",
            "params": [{"var": "data.in.id"}],
            "output": "data.r",
        },
    }
    out = await run(wf(PARSE, write, read), db["svc"], {"id": evil})
    assert out.data["r"] == [{"id": evil}]  # stored verbatim, and the table still exists
    sql = await db["svc"].sql("orders-db")
    assert await sql.read(f"SELECT count(*) AS n FROM {t}", []) == [{"n": 1}]


async def test_update_reports_rows_affected(db: dict[str, Any]) -> None:
    t = db["table"]
    sql = await db["svc"].sql("orders-db")
    for i in range(3):
        await sql.write(f"INSERT INTO {t} (id, qty) VALUES ($1, $2)", [f"u{i}", i])
    upd = {
        "name": "db_write",
        "input": {
            "connector": "orders-db",
            "query": f"UPDATE {t} SET qty = qty + 10 WHERE qty >= $1",
            "params": [1],
        },
    }
    out = await run(wf(upd), db["svc"], {})
    assert out.data == {"rows_affected": 2}


async def test_query_timeout_is_504_and_the_pool_stays_usable(db: dict[str, Any]) -> None:
    sql = await db["svc"].sql("orders-db")
    with pytest.raises(Timeout) as info:
        await sql.read(db["sleep"], [])
    assert info.value.status == 504
    assert await sql.read("SELECT 1 AS one", []) == [{"one": 1}]


async def test_bad_query_is_a_query_error_not_retried(db: dict[str, Any]) -> None:
    sql = await db["svc"].sql("orders-db")
    with pytest.raises(QueryFailed) as info:
        await sql.read("SELECT * FROM no_such_table_here", [])
    assert info.value.counts_for_breaker is False


async def test_unreachable_database_is_retried_then_reported(postgres_dsn: str) -> None:
    connector = {
        "name": "down",
        "connector_type": "db",
        "config": {
            "connection_string": "postgresql://postgres@127.0.0.1:1/test",
            "driver": "postgres",
            "connect_timeout_ms": 500,
            "retry": {"max_retries": 2, "retry_delay_ms": 1},
        },
    }
    svc = ConnectorServices({"d": connector})
    sql = await svc.sql("down")
    with pytest.raises(ConnectorError, match="cannot connect"):
        await sql.read("SELECT 1", [])
    await svc.aclose()


def test_placeholders_are_translated_outside_literals_only() -> None:
    q, order = translate_placeholders("SELECT '$1', a FROM t WHERE b = $2 AND c LIKE '5%' AND d = $1", "format", 2)
    assert q == "SELECT '$1', a FROM t WHERE b = %s AND c LIKE '5%%' AND d = %s"
    assert order == [1, 0]
    q, _ = translate_placeholders("SELECT * FROM t -- $1\nWHERE a = $1", "qmark", 1)
    assert q == "SELECT * FROM t -- $1\nWHERE a = ?1"
    assert translate_placeholders("SELECT ? ", "qmark", 1) == ("SELECT ? ", None)  # native style passes
    with pytest.raises(QueryFailed, match=r"\$3"):
        translate_placeholders("SELECT $3", "format", 1)


def test_json_values() -> None:
    import datetime as dt
    import decimal

    assert json_value(decimal.Decimal("10.00")) == 10
    assert json_value(decimal.Decimal("10.25")) == 10.25
    assert json_value(dt.datetime(2024, 1, 2, 3, 4, 5)) == "2024-01-02T03:04:05"
    assert json_value(b"\xff\x00") == "/wA="
    assert json_value([decimal.Decimal("1"), {"a": dt.date(2024, 1, 1)}]) == [1, {"a": "2024-01-01"}]


async def test_wrong_connector_type_or_driver_is_refused(tmp_path: Path) -> None:
    svc = ConnectorServices(
        {
            "m": {
                "name": "mongo",
                "connector_type": "db",
                "config": {"connection_string": "mongodb://x", "driver": "mongodb"},
            },
            "c": {"name": "cache", "connector_type": "cache", "config": {"backend": "memory"}},
        }
    )
    with pytest.raises(Exception, match="expected one of"):
        await svc.sql("mongo")
    with pytest.raises(Exception, match="of type cache, expected db"):
        await svc.sql("cache")
