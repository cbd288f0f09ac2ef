"""SQL connectors: PostgreSQL (asyncpg), MySQL/MariaDB (aiomysql), SQLite (aiosqlite), pooled.

Queries are parameterized only. Write placeholders as `$1, $2, ...` for every driver (they are
translated to `%s` / `?N` outside string literals and comments); a query without `$N` is passed
to the driver unchanged, so its native placeholder style works too. Values are never
interpolated into SQL text.

Row values become JSON: str/int/float/bool/null as they are, Decimal -> int when integral else
float, date/time -> ISO 8601 text, UUID -> text, bytes -> UTF-8 text (base64 when not UTF-8),
JSON columns -> their value, arrays -> lists. (Orion's sqlx typing turns decimals and dates into
null: a documented Quasar difference.)
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import decimal
import re
import sqlite3
import uuid
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar
from urllib.parse import parse_qs, unquote, urlsplit

import orjson

from app.connectors.errors import ConnectorError
from app.connectors.retry import with_retries
from app.digits import parse_uint
from app.engine.models import DbConnectorConfig
from app.errors import Timeout

__all__ = [
    "DEFAULT_QUERY_TIMEOUT_MS",
    "QueryFailed",
    "SqlConnector",
    "json_value",
    "open_sql",
    "translate_placeholders",
]

DEFAULT_QUERY_TIMEOUT_MS = 30_000
DEFAULT_CONNECT_TIMEOUT_MS = 10_000
DEFAULT_POOL_SIZE = 10
T = TypeVar("T")


class QueryFailed(ConnectorError):
    """The database rejected the query (syntax, constraint, type): not retried, not a health failure."""

    code, status = "DB_QUERY_ERROR", 500
    retryable = False
    counts_for_breaker = False


class _ConnectFailed(ConnectorError):
    """No connection could be made: retried with backoff."""


# --- placeholders ------------------------------------------------------------------------------

_TOKENS = re.compile(r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"|--[^\n]*|/\*.*?\*/|\$(\d+)", re.S)


def translate_placeholders(query: str, style: str, nparams: int) -> tuple[str, list[int] | None]:
    """`$N` -> `style` (`"format"`: `%s`, `"qmark"`: `?N`); returns the query and, for `format`,
    the parameter order. Quoted text and comments are left alone; `$N` beyond the params is an error."""
    order: list[int] = []
    found = False

    def repl(m: re.Match[str]) -> str:
        nonlocal found
        if m.group(1) is None:
            return m.group(0)
        found = True
        n = int(m.group(1))
        if not 1 <= n <= nparams:
            raise QueryFailed(f"query uses ${n} but {nparams} param(s) were given")
        if style == "format":
            order.append(n - 1)
            return "%s"
        return f"?{n}"

    if style == "format":
        # pymysql formats the whole text with `%` when params are given: escape every literal `%`.
        pieces: list[str] = []
        pos = 0
        for m in _TOKENS.finditer(query):
            pieces.append(query[pos : m.start()].replace("%", "%%"))
            pieces.append(repl(m) if m.group(1) is not None else m.group(0).replace("%", "%%"))
            pos = m.end()
        pieces.append(query[pos:].replace("%", "%%"))
        out = "".join(pieces)
    else:
        out = _TOKENS.sub(repl, query)
    if not found:
        return query, None
    return out, order if style == "format" else None


# --- JSON-safe values ----------------------------------------------------------------------------


def json_value(value: Any) -> Any:
    """A database value as JSON (see the module docstring)."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, decimal.Decimal):
        if not value.is_finite():
            return str(value)
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, bytes | bytearray | memoryview):
        raw = bytes(value)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return base64.b64encode(raw).decode()
    if isinstance(value, dict):
        return {str(k): json_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [json_value(v) for v in value]
    return str(value)


def _row(names: Sequence[str], values: Sequence[Any]) -> dict[str, Any]:
    return {n: json_value(v) for n, v in zip(names, values, strict=True)}


# --- connectors --------------------------------------------------------------------------------


class SqlConnector(ABC):
    """One pooled SQL connector. `read` -> rows, `write` -> affected row count."""

    def __init__(self, name: str, config: DbConnectorConfig, dsn: str) -> None:
        self.name = name
        self.config = config
        self._dsn = dsn
        self._lock = asyncio.Lock()
        self.query_timeout = (config.query_timeout_ms or DEFAULT_QUERY_TIMEOUT_MS) / 1000.0
        self.connect_timeout = (config.connect_timeout_ms or DEFAULT_CONNECT_TIMEOUT_MS) / 1000.0
        self.pool_size = config.max_connections or DEFAULT_POOL_SIZE

    @abstractmethod
    async def read(self, query: str, params: list[Any]) -> list[dict[str, Any]]: ...

    @abstractmethod
    async def write(self, query: str, params: list[Any]) -> int: ...

    @abstractmethod
    async def aclose(self) -> None: ...

    async def _with_timeout(self, op: Callable[[], Awaitable[T]], on_timeout: Callable[[], None] | None = None) -> T:
        timer = asyncio.timeout(self.query_timeout)
        try:
            async with timer:
                return await op()
        except Exception as exc:
            # A driver may turn our cancellation into its own error: trust the timer.
            if not (timer.expired() or isinstance(exc, TimeoutError)):
                raise
            if on_timeout is not None:
                on_timeout()
            limit_ms = int(self.query_timeout * 1000)
            raise Timeout(f"query on connector '{self.name}' exceeded query_timeout_ms ({limit_ms})") from exc

    async def _connect_retrying(self, connect: Callable[[], Awaitable[T]]) -> T:
        async def attempt() -> T:
            try:
                async with asyncio.timeout(self.connect_timeout):
                    return await connect()
            except TimeoutError as exc:
                raise _ConnectFailed(f"connector '{self.name}': connect timed out") from exc
            except (OSError, ConnectionError) as exc:
                raise _ConnectFailed(f"connector '{self.name}': cannot connect: {exc}") from exc

        return await with_retries(attempt, self.config.retry, lambda e: isinstance(e, _ConnectFailed))


class _Postgres(SqlConnector):
    def __init__(self, name: str, config: DbConnectorConfig, dsn: str) -> None:
        super().__init__(name, config, dsn)
        self._pool: Any = None

    async def _get_pool(self) -> Any:
        if self._pool is None:
            async with self._lock:
                if self._pool is None:
                    import asyncpg

                    async def init(conn: Any) -> None:
                        for typ in ("json", "jsonb"):
                            await conn.set_type_codec(
                                typ, encoder=lambda v: orjson.dumps(v).decode(), decoder=orjson.loads,
                                schema="pg_catalog",
                            )  # fmt: skip

                    async def connect() -> Any:
                        try:
                            return await asyncpg.create_pool(
                                self._dsn,
                                min_size=0,
                                max_size=self.pool_size,
                                timeout=self.connect_timeout,
                                init=init,
                            )
                        except asyncpg.PostgresError as exc:
                            raise QueryFailed(f"connector '{self.name}': {exc}") from exc

                    self._pool = await self._connect_retrying(connect)
        return self._pool

    async def _acquire(self) -> tuple[Any, Any]:
        pool = await self._get_pool()
        # min_size=0: connections are opened here, so connection failures are retried here.
        return pool, await self._connect_retrying(lambda: pool.acquire())

    async def read(self, query: str, params: list[Any]) -> list[dict[str, Any]]:
        pool, conn = await self._acquire()

        async def op() -> list[dict[str, Any]]:
            stmt = await conn.prepare(query)  # cached per connection by asyncpg
            records = await stmt.fetch(*_pg_params(stmt, params))
            return [{k: json_value(v) for k, v in r.items()} for r in records]

        try:
            return await self._run(op)
        finally:
            await pool.release(conn)

    async def write(self, query: str, params: list[Any]) -> int:
        pool, conn = await self._acquire()

        async def op() -> int:
            stmt = await conn.prepare(query)
            await stmt.fetch(*_pg_params(stmt, params))
            status = stmt.get_statusmsg() or ""
            tail = status.rsplit(" ", 1)[-1]
            return parse_uint(tail) or 0

        try:
            return await self._run(op)
        finally:
            await pool.release(conn)

    async def _run(self, op: Callable[[], Awaitable[T]]) -> T:
        import asyncpg

        try:
            return await self._with_timeout(op)
        except (asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.DataError) as exc:
            raise QueryFailed(f"query on connector '{self.name}' failed: {exc}") from exc
        except (OSError, ConnectionError) as exc:
            raise ConnectorError(f"connector '{self.name}': connection lost: {exc}") from exc

    async def aclose(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None


def _pg_value(value: Any, typ: str) -> Any:
    """A JSON parameter as the Python type asyncpg's binary protocol expects for `typ`.

    JSON has no dates, decimals or UUIDs: text like "2024-05-01" bound to a DATE parameter is parsed
    here, as PostgreSQL would parse the literal. Anything unconvertible is passed unchanged and the
    driver reports the mismatch.
    """
    if value is None:
        return None
    try:
        if typ in ("date",) and isinstance(value, str):
            return dt.date.fromisoformat(value)
        if typ in ("timestamp", "timestamptz") and isinstance(value, str):
            parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
            if typ == "timestamp" and parsed.tzinfo is not None:
                parsed = parsed.astimezone(dt.UTC).replace(tzinfo=None)
            if typ == "timestamptz" and parsed.tzinfo is None:
                parsed = parsed.replace(tzinfo=dt.UTC)
            return parsed
        if typ in ("time",) and isinstance(value, str):
            return dt.time.fromisoformat(value)
        if typ == "numeric" and isinstance(value, int | float | str) and not isinstance(value, bool):
            return decimal.Decimal(str(value))
        if typ in ("int2", "int4", "int8"):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            if isinstance(value, str) and value.lstrip("-").isdigit():
                return int(value)
        if typ in ("float4", "float8") and isinstance(value, int | str) and not isinstance(value, bool):
            return float(value)
        if typ == "uuid" and isinstance(value, str):
            return uuid.UUID(value)
        if typ in ("text", "varchar", "bpchar", "name") and isinstance(value, int | float | bool):
            return orjson.dumps(value).decode()
    except (ValueError, decimal.InvalidOperation):
        return value
    return value


def _pg_params(stmt: Any, params: list[Any]) -> list[Any]:
    types = stmt.get_parameters()
    if len(types) != len(params):
        raise QueryFailed(f"query takes {len(types)} parameter(s) but {len(params)} were given")
    return [_pg_value(v, t.name) for v, t in zip(params, types, strict=True)]


class _MySql(SqlConnector):
    def __init__(self, name: str, config: DbConnectorConfig, dsn: str) -> None:
        super().__init__(name, config, dsn)
        self._pool: Any = None

    def _connect_args(self) -> dict[str, Any]:
        parts = urlsplit(self._dsn)
        if parts.scheme not in ("mysql", "mariadb", "mysql+aiomysql"):
            raise ConnectorError(f"connector '{self.name}': a mysql connection_string starts with mysql://")
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        return {
            "host": parts.hostname or "127.0.0.1",
            "port": parts.port or 3306,
            "user": unquote(parts.username or "root"),
            "password": unquote(parts.password or ""),
            "db": unquote(parts.path.lstrip("/")) or None,
            "charset": query.get("charset", "utf8mb4"),
        }

    async def _get_pool(self) -> Any:
        if self._pool is None:
            async with self._lock:
                if self._pool is None:
                    import aiomysql
                    import pymysql

                    args = self._connect_args()

                    async def connect() -> Any:
                        try:
                            return await aiomysql.create_pool(
                                minsize=0, maxsize=self.pool_size, autocommit=True,
                                connect_timeout=self.connect_timeout, **args,
                            )  # fmt: skip
                        except pymysql.err.OperationalError as exc:
                            if exc.args and exc.args[0] in (2003, 2006, 2013):
                                raise OSError(str(exc)) from exc
                            raise QueryFailed(f"connector '{self.name}': {exc}") from exc

                    self._pool = await self._connect_retrying(connect)
        return self._pool

    async def _execute(self, query: str, params: list[Any], fetch: bool) -> Any:
        import pymysql

        pool = await self._get_pool()
        sql, order = translate_placeholders(query, "format", len(params))
        args: Any = None
        if order is not None:
            args = [params[i] for i in order]
        elif params:
            args = params
        conn = await pool.acquire()
        broken = False

        async def op() -> Any:
            async with conn.cursor() as cur:
                await cur.execute(sql, args)
                if fetch:
                    names = [d[0] for d in cur.description or ()]
                    return [_row(names, r) for r in await cur.fetchall()]
                return cur.rowcount

        def on_timeout() -> None:
            nonlocal broken
            broken = True

        try:
            return await self._with_timeout(op, on_timeout)
        except pymysql.err.OperationalError as exc:
            broken = True
            raise ConnectorError(f"query on connector '{self.name}' failed: {exc}") from exc
        except pymysql.err.MySQLError as exc:
            raise QueryFailed(f"query on connector '{self.name}' failed: {exc}") from exc
        finally:
            if broken:
                # A cancelled query leaves the protocol mid-stream: drop the connection.
                conn.close()
            pool.release(conn)

    async def read(self, query: str, params: list[Any]) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = await self._execute(query, params, True)
        return rows

    async def write(self, query: str, params: list[Any]) -> int:
        count: int = await self._execute(query, params, False)
        return max(count, 0)

    async def aclose(self) -> None:
        if self._pool is not None:
            self._pool.close()
            await self._pool.wait_closed()
            self._pool = None


def _sqlite_path(dsn: str) -> str:
    if not dsn.startswith("sqlite:"):
        raise ConnectorError("a sqlite connection_string starts with sqlite:")
    rest = dsn[len("sqlite:") :]
    if rest.startswith("//"):
        rest = rest[2:]
    rest = rest.split("?", 1)[0]
    if not rest:
        raise ConnectorError("a sqlite connection_string needs a file path (sqlite:///path/to/db)")
    return rest


class _Sqlite(SqlConnector):
    def __init__(self, name: str, config: DbConnectorConfig, dsn: str) -> None:
        super().__init__(name, config, dsn)
        self._path = _sqlite_path(dsn)
        if self._path == ":memory:":
            self.pool_size = 1  # every connection would see its own empty database
        self._idle: asyncio.Queue[Any] = asyncio.Queue()
        self._all: list[Any] = []
        self._slots = asyncio.Semaphore(self.pool_size)

    async def _acquire(self) -> Any:
        await self._slots.acquire()
        try:
            if not self._idle.empty():
                return self._idle.get_nowait()
            import aiosqlite

            async def connect() -> Any:
                try:
                    return await aiosqlite.connect(self._path, isolation_level=None)
                except sqlite3.OperationalError as exc:
                    raise QueryFailed(f"connector '{self.name}': cannot open {self._path}: {exc}") from exc

            conn = await self._connect_retrying(connect)
            self._all.append(conn)
            return conn
        except BaseException:
            self._slots.release()
            raise

    def _release(self, conn: Any) -> None:
        self._idle.put_nowait(conn)
        self._slots.release()

    async def _execute(self, query: str, params: list[Any], fetch: bool) -> Any:
        sql, _ = translate_placeholders(query, "qmark", len(params))
        conn = await self._acquire()

        async def op() -> Any:
            async with conn.execute(sql, params) as cur:
                if fetch:
                    names = [d[0] for d in cur.description or ()]
                    return [_row(names, r) for r in await cur.fetchall()]
                return cur.rowcount

        try:
            # sqlite3's interrupt() is thread-safe: it stops the query running in aiosqlite's thread.
            return await self._with_timeout(op, conn._conn.interrupt)
        except sqlite3.Error as exc:
            raise QueryFailed(f"query on connector '{self.name}' failed: {exc}") from exc
        finally:
            self._release(conn)

    async def read(self, query: str, params: list[Any]) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = await self._execute(query, params, True)
        return rows

    async def write(self, query: str, params: list[Any]) -> int:
        count: int = await self._execute(query, params, False)
        return max(count, 0)

    async def aclose(self) -> None:
        for conn in self._all:
            await conn.close()
        self._all.clear()


def open_sql(name: str, config: DbConnectorConfig, dsn: str) -> SqlConnector:
    """The connector for `config.driver` (`dsn` = the resolved connection string). No IO here."""
    if config.driver == "postgres":
        return _Postgres(name, config, dsn)
    if config.driver == "mysql":
        return _MySql(name, config, dsn)
    if config.driver == "sqlite":
        return _Sqlite(name, config, dsn)
    raise ConnectorError(f"connector '{name}': driver '{config.driver}' is not a SQL driver")
