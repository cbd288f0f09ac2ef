"""Secret masking (pure): which fields are secrets, any depth, env:// references kept, unmask on write."""

from __future__ import annotations

from app.secrets import MASK, is_secret_field, mask_secrets, unmask_with


def test_secret_field_names_follow_orion_plus_common_suffixes() -> None:
    for name in (
        "token",
        "password",
        "key",
        "secret",
        "api_key",
        "connection_string",
        "Access_Token",
        "db_password",
    ):
        assert is_secret_field(name), name
    for name in ("url", "keys", "key_logic", "cache_key_fields", "tokenizer", "name", "type"):
        assert not is_secret_field(name), name


def test_masks_at_any_depth_and_keeps_references_and_structure() -> None:
    doc = {"a": [{"b": {"token": "t", "url": "u"}}, {"password": "env://PW"}], "key": 3, "secret": None,
           "auth": {"secret": {"nested": "x"}}}  # fmt: skip
    masked = mask_secrets(doc)
    assert masked == {"a": [{"b": {"token": MASK, "url": "u"}}, {"password": "env://PW"}], "key": MASK,
                      "secret": None, "auth": {"secret": {"nested": "x"}}}  # fmt: skip
    assert doc["a"][0]["b"]["token"] == "t"  # the input is not modified


def test_unmask_restores_stored_values_only_where_the_mask_was_sent_back() -> None:
    stored = {"auth": {"token": "real"}, "list": [{"api_key": "k1"}], "url": "old"}
    sent = {"auth": {"token": MASK}, "list": [{"api_key": MASK}, {"api_key": MASK}], "url": "new"}
    expected = {"auth": {"token": "real"}, "list": [{"api_key": "k1"}, {"api_key": MASK}], "url": "new"}
    assert unmask_with(sent, stored) == expected
    assert unmask_with({"token": "changed"}, {"token": "real"}) == {"token": "changed"}
