"""The worker's record decoding: nesting depth is refused before any engine work, whatever the envelope."""

from __future__ import annotations

import orjson
import pytest

from app.jsonlimits import MAX_JSON_DEPTH
from app.worker.codec import DecodeError, decode_json, decode_raw


def _nested(levels: int) -> bytes:
    return b"[" * levels + b"]" * levels


def test_a_record_nesting_deeper_than_the_limit_is_refused_in_either_envelope() -> None:
    deep = _nested(MAX_JSON_DEPTH + 1)
    with pytest.raises(DecodeError, match=f"deeper than {MAX_JSON_DEPTH} levels"):
        decode_raw(deep)
    with pytest.raises(DecodeError, match=f"deeper than {MAX_JSON_DEPTH} levels"):
        decode_json(b'{"data": ' + _nested(MAX_JSON_DEPTH) + b"}")  # the envelope is one level more


def test_records_at_the_limit_or_with_many_shallow_brackets_decode() -> None:
    assert decode_raw(_nested(MAX_JSON_DEPTH))[0] is not None
    wide = orjson.dumps({"data": [[i] for i in range(3 * MAX_JSON_DEPTH)]})  # many brackets, depth 3
    data, metadata = decode_json(wide)
    assert len(data) == 3 * MAX_JSON_DEPTH and metadata == {}
