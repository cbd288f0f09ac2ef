"""Channels compiled once per config version: `compile_channel(id, definition, topics) -> CompiledChannel`.

Lower layers (config store, governance) and upper ones (gateway, worker) all read the compiled channel;
this package imports only the engine's document model and JSONLogic, and the topic names.
The package exports exactly what its two modules declare in their `__all__`.
"""

from __future__ import annotations

from app.channels import compile as _compile
from app.channels import compiled as _compiled
from app.channels.compile import *  # noqa: F403
from app.channels.compiled import *  # noqa: F403

__all__ = [*_compile.__all__, *_compiled.__all__]
