"""Write the JSON Schemas of the workflow, channel and connector documents into `schemas/`.

Run `python -m app.engine.schema_export` after changing `app/engine/models.py`; a test fails
while the files are out of sync.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from app.engine.models import ChannelDoc, ConnectorDoc, WorkflowDoc

__all__ = ["SCHEMA_DIR", "render_schemas", "write_schemas"]

SCHEMA_DIR = Path(__file__).resolve().parents[2] / "schemas"
_MODELS: dict[str, type[BaseModel]] = {
    "workflow": WorkflowDoc,
    "channel": ChannelDoc,
    "connector": ConnectorDoc,
}


def render_schemas() -> dict[str, str]:
    """File name -> JSON text (stable: sorted keys, 2-space indent, trailing newline)."""
    out: dict[str, str] = {}
    for kind, model in _MODELS.items():
        schema: dict[str, Any] = model.model_json_schema(mode="validation")
        schema = {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "$id": f"quasar/{kind}",
            **schema,
        }
        out[f"{kind}.schema.json"] = json.dumps(schema, indent=2, sort_keys=True) + "\n"
    return out


def write_schemas(directory: Path = SCHEMA_DIR) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in render_schemas().items():
        path = directory / name
        path.write_text(text)
        written.append(path)
    return written


if __name__ == "__main__":
    for p in write_schemas(Path(sys.argv[1]) if len(sys.argv) > 1 else SCHEMA_DIR):
        print(p)
