"""Issue 14 item 1 over HTTP, against a real gateway + worker: internal fields never come from clients.

The crash needed a ~900 kB `_quasar_call_chain` in client metadata on a channel_call workflow (the error
reply repeated it and exceeded Kafka's limit). Here the body stays under the stack's payload limit, so the
proof is the behaviour: the client's chain is ignored (the call succeeds instead of hitting the depth limit
with the client's chain in the message) and the worker keeps running.
"""

from __future__ import annotations

import httpx

from tests.proof._fuzz_support import SYNC_CHANNEL, FuzzStack

CALLER = {
    "name": "poison-caller",
    "condition": True,
    "tasks": [{"id": "call", "name": "call", "function": {"name": "channel_call", "input": {"channel": SYNC_CHANNEL}}}],
}


def test_client_call_chain_is_ignored_over_http(fuzz_stack: FuzzStack) -> None:
    fuzz_stack.activate("poison-caller", CALLER, channel_type="sync", config={})
    body = {"data": {"n": 1}, "metadata": {"_quasar_call_chain": [""] * 30_000, "_quasar_other": "x"}}
    r = httpx.post(f"{fuzz_stack.gateway_url}/api/v1/data/poison-caller", json=body, timeout=30)
    assert r.status_code == 200, r.text
    assert "_quasar" not in r.text
    fuzz_stack.alive()
