"""Non-negative integers written as text by others (Kafka headers, HTTP headers, config keys, CLI input).

`str.isdigit()` accepts '²' and other Unicode digits that `int()` refuses, and `int()` refuses more than
4,300 digits: a check with `isdigit()` alone lets a hostile header through to a ValueError.
"""

from __future__ import annotations

__all__ = ["is_uint", "parse_uint"]

_MAX_DIGITS = 19  # every 64-bit offset, partition, revision and epoch-ms value fits


def is_uint(text: str) -> bool:
    """`text` is 1-19 ASCII digits."""
    return 0 < len(text) <= _MAX_DIGITS and text.isascii() and text.isdigit()


def parse_uint(text: str | None) -> int | None:
    """The value of `text` when it is 1-19 ASCII digits, else None."""
    return int(text) if text is not None and is_uint(text) else None
