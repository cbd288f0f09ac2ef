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


def test_masking_is_by_pattern_header_values_nested_keys_and_url_userinfo() -> None:
    """Issue 14 item 5: every shape the review found in clear."""
    doc = {
        "headers": {"Authorization": "Bearer abc123", "X-API-Key": "k", "Cookie": "sid=1", "Accept": "json"},
        "vault": {"secret_key": "s", "private_key": "p", "aws_secret_access_key": "a", "dsn": "d"},
        "url": "redis://:redispw@cache:6379/0",
        "endpoint": "https://svc:svcpw@api.test/v1?token=qtok&page=2",
        "key_logic": {"var": "data.id"},
        "api_key_header": "X-API-Key",
        "rollout_key": "X-User-Id",
        "cache_key_fields": ["user"],
    }
    masked = mask_secrets(doc)
    assert masked["headers"] == {"Authorization": MASK, "X-API-Key": MASK, "Cookie": MASK, "Accept": "json"}
    assert set(masked["vault"].values()) == {MASK}
    assert masked["url"] == f"redis://:{MASK}@cache:6379/0"
    assert masked["endpoint"] == f"https://svc:{MASK}@api.test/v1?token={MASK}&page=2"
    # Names of secrets, rules and selectors are not secrets.
    for name in ("key_logic", "api_key_header", "rollout_key", "cache_key_fields"):
        assert masked[name] == doc[name], name


def test_a_masked_url_sent_back_keeps_its_stored_password() -> None:
    stored = {"url": "redis://:redispw@cache:6379/0"}
    assert unmask_with(mask_secrets(stored), stored) == stored
    assert unmask_with({"url": "redis://:new@cache:6379/0"}, stored) == {"url": "redis://:new@cache:6379/0"}


def test_log_lines_never_carry_credentials() -> None:
    import io
    import logging

    from app.observability.logs import configure_logging

    out = io.StringIO()
    configure_logging("info", "json", stream=out)
    try:
        logging.getLogger("httpx").info(
            'HTTP Request: POST %s "HTTP/1.1 200 OK"', "http://u:logpw@h:1/x?api_key=logkey"
        )
        logging.getLogger("quasar.test").warning("calling with Authorization: Bearer logtoken1")
        logging.getLogger("quasar.test").info("conn", extra={"password": "extrapw", "dsn": "postgres://a:dsnpw@h/d"})
    finally:
        configure_logging("info", "json")
    text = out.getvalue()
    for secret in ("logpw", "logkey", "logtoken1", "extrapw", "dsnpw"):
        assert secret not in text, text
    assert "HTTP Request: POST http://u:******@h:1/x?api_key=******" in text
