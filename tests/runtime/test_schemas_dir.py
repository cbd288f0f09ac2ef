"""Named Avro schemas resolve in every layout: a source checkout, an installed wheel, the Docker image."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.settings import Settings
from app.worker.codec import SCHEMAS_DIR, AvroMismatch, SchemaCache, schemas_dir

ORDER = '{"type": "record", "name": "Order", "fields": [{"name": "id", "type": "string"}]}'


def test_source_checkout_uses_its_own_schemas_dir() -> None:
    assert schemas_dir() == SCHEMAS_DIR and (SCHEMAS_DIR / "order.avsc").is_file()
    assert SchemaCache().get("order")["name"] == "quasar.examples.Order"


def test_installed_wheel_uses_the_working_directory(tmp_path: Path) -> None:
    # In site-packages there is no `schemas/` next to `app/`: the working directory's is used.
    site_packages = tmp_path / "site-packages" / "schemas"
    (tmp_path / "srv" / "schemas").mkdir(parents=True)
    (tmp_path / "srv" / "schemas" / "order.avsc").write_text(ORDER)
    found = schemas_dir(source_tree=site_packages, cwd=tmp_path / "srv")
    assert found == tmp_path / "srv" / "schemas"
    assert SchemaCache(found).get("order")["name"] == "Order"


def test_configured_directory_wins_in_every_layout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "order.avsc").write_text(ORDER)
    monkeypatch.setenv("QUASAR_SCHEMAS_DIR", str(tmp_path))  # what the Docker image sets
    settings = Settings()
    assert schemas_dir(settings) == tmp_path
    assert schemas_dir(settings, source_tree=SCHEMAS_DIR) == tmp_path
    with pytest.raises(AvroMismatch, match=r"'nope' not found"):
        SchemaCache(schemas_dir(settings)).get("nope")
