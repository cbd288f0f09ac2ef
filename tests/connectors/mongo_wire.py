"""A small MongoDB wire-protocol server for tests: real sockets, real driver, mongomock storage.

No MongoDB server can be installed here. This speaks enough of the protocol for the official
driver (`pymongo.AsyncMongoClient`): the OP_QUERY handshake, OP_MSG commands `hello`/`isMaster`,
`ping`, `find` (filters evaluated by mongomock), `endSessions`, `killCursors`. Collections named
`slow*` answer `find` after `slow_ms`, to exercise client timeouts.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import struct
from typing import Any

import bson
import mongomock
from bson.int64 import Int64

__all__ = ["MongoWireServer"]

OP_REPLY, OP_QUERY, OP_MSG = 1, 2004, 2013


class MongoWireServer:
    def __init__(self, slow_ms: int = 2000) -> None:
        self.store = mongomock.MongoClient()
        self.slow_ms = slow_ms
        self.commands: list[str] = []
        self.port = 0
        self._server: asyncio.Server | None = None
        self._request_id = 0

    @property
    def url(self) -> str:
        return f"mongodb://127.0.0.1:{self.port}/?directConnection=true"

    async def start(self) -> MongoWireServer:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                header = await reader.readexactly(16)
                length, request_id, _, opcode = struct.unpack("<iiii", header)
                body = await reader.readexactly(length - 16)
                if opcode == OP_QUERY:
                    reply = self._op_reply(request_id, await self._command(self._parse_query(body)))
                elif opcode == OP_MSG:
                    reply = self._op_msg(request_id, await self._command(self._parse_msg(body)))
                else:
                    break
                writer.write(reply)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    @staticmethod
    def _parse_query(body: bytes) -> dict[str, Any]:
        end = body.index(b"\0", 4)  # flags, then the cstring collection name
        doc_start = end + 1 + 8  # skip numberToSkip, numberToReturn
        size = struct.unpack_from("<i", body, doc_start)[0]
        return bson.decode(body[doc_start : doc_start + size])

    @staticmethod
    def _parse_msg(body: bytes) -> dict[str, Any]:
        flags = struct.unpack_from("<I", body, 0)[0]
        end = len(body) - (4 if flags & 1 else 0)
        pos = 4
        doc: dict[str, Any] = {}
        while pos < end:
            kind = body[pos]
            pos += 1
            size = struct.unpack_from("<i", body, pos)[0]
            if kind == 0:
                doc.update(bson.decode(body[pos : pos + size]))
            else:  # kind 1: a document sequence, e.g. `documents` of an insert
                name_end = body.index(b"\0", pos + 4)
                name = body[pos + 4 : name_end].decode()
                seq, p = [], name_end + 1
                while p < pos + size:
                    n = struct.unpack_from("<i", body, p)[0]
                    seq.append(bson.decode(body[p : p + n]))
                    p += n
                doc[name] = seq
            pos += size
        return doc

    def _next_id(self) -> int:
        self._request_id += 1
        return self._request_id

    def _op_reply(self, response_to: int, doc: dict[str, Any]) -> bytes:
        payload = struct.pack("<iqii", 0, 0, 0, 1) + bson.encode(doc)
        return struct.pack("<iiii", 16 + len(payload), self._next_id(), response_to, OP_REPLY) + payload

    def _op_msg(self, response_to: int, doc: dict[str, Any]) -> bytes:
        payload = struct.pack("<I", 0) + b"\0" + bson.encode(doc)
        return struct.pack("<iiii", 16 + len(payload), self._next_id(), response_to, OP_MSG) + payload

    async def _command(self, doc: dict[str, Any]) -> dict[str, Any]:
        name = next(iter(doc))
        self.commands.append(name)
        lowered = name.lower()
        if lowered in ("hello", "ismaster"):
            return {
                "ismaster": True,
                "isWritablePrimary": True,
                "helloOk": True,
                "maxWireVersion": 17,
                "minWireVersion": 0,
                "maxBsonObjectSize": 16 * 1024 * 1024,
                "maxMessageSizeBytes": 48_000_000,
                "maxWriteBatchSize": 100_000,
                "localTime": dt.datetime.now(dt.UTC),
                "logicalSessionTimeoutMinutes": 30,
                "connectionId": 1,
                "ok": 1.0,
            }
        if lowered in ("ping", "endsessions", "killcursors", "buildinfo"):
            return {"ok": 1.0}
        if lowered == "find":
            db, coll = doc["$db"], doc["find"]
            if coll.startswith("slow"):
                await asyncio.sleep(self.slow_ms / 1000)  # the server being slow is what is tested
            docs = list(self.store[db][coll].find(doc.get("filter") or {}))
            return {"cursor": {"id": Int64(0), "ns": f"{db}.{coll}", "firstBatch": docs}, "ok": 1.0}
        return {"ok": 0.0, "errmsg": f"no such command: '{name}'", "code": 59, "codeName": "CommandNotFound"}
