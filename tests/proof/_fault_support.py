"""Shared helpers of the fault tests: scale (CI vs local) and a readable failure message.

The scenarios themselves live in `bench/faults.py` (the same code runs at full scale in `make proof`).
"""

from __future__ import annotations

import json
import os
from typing import Any

__all__ = ["ci_scale", "show"]


def ci_scale(ci: int, local: int) -> int:
    """`ci` when running under CI (CI=true: 2 shared cores), else `local`."""
    return ci if os.environ.get("CI") else local


def show(result: dict[str, Any]) -> str:
    """The scenario's result as indented JSON, for assertion messages."""
    return json.dumps({k: v for k, v in result.items() if k != "fingerprints"}, indent=1, default=str)[:4000]
