"""Fixtures of the proof suites (bad input: `_fuzz_support.py`; faults: their own helpers).

Keep this file additive: each suite registers its own fixtures here and keeps its helpers in its module.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.proof._fuzz_support import FUZZ_ENV, FuzzStack, start_fuzz_stack


@pytest.fixture(scope="session")
def fuzz_stack(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FuzzStack]:
    """`quasar worker` + `quasar gateway` processes with small limits, shared by the bad-input suites."""
    with start_fuzz_stack(kafka_bootstrap, tmp_path_factory.mktemp("fuzz"), FUZZ_ENV) as stack:
        yield stack
