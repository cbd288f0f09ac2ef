"""SSRF guard: refusals happen at the resolve/validate step, before any connection is opened.

Every test's network layer is `LoopbackOnlyBackend`, which fails the test if it is ever asked to
connect to an address it does not route to a loopback test server, so no traffic can leave.
"""

from __future__ import annotations

from typing import Any

import pytest

from app.connectors import UrlBlocked
from app.connectors.http import HttpConnector
from app.connectors.ssrf import blocked_reason, check_host
from app.engine.models import HttpConnectorConfig
from tests.connectors.servers import AcceptCounter, HttpTestServer, LoopbackOnlyBackend

PUBLIC = "93.184.215.14"  # a public address; the test backend maps it to the local server (never dialled)


def fake_dns(table: dict[str, list[str]]) -> Any:
    async def resolve(host: str, port: int) -> list[str]:
        if host not in table:
            raise OSError(f"unknown test host {host}")
        return table[host]

    return resolve


def guarded(url: str, backend: LoopbackOnlyBackend, resolver: Any = None, **cfg: Any) -> HttpConnector:
    config = HttpConnectorConfig(url=url, retry={"max_retries": 2, "retry_delay_ms": 1}, **cfg)
    return HttpConnector("ext", config, network_backend=backend, resolver=resolver)


@pytest.mark.parametrize(
    "host",
    [
        "127.0.0.1",
        "127.8.9.10",
        "[::1]",
        "10.0.0.1",
        "172.16.5.4",
        "192.168.1.1",
        "169.254.169.254",
        "169.254.1.1",
        "100.64.0.1",
        "0.0.0.0",
        "[::]",
        "224.0.0.1",
        "[fd00:ec2::254]",
        "[fe80::1]",
        "[::ffff:127.0.0.1]",
        "[::ffff:10.0.0.1]",
    ],
)
async def test_private_literal_addresses_are_refused_before_connecting(host: str) -> None:
    backend = LoopbackOnlyBackend()
    client = guarded(f"http://{host}:8080", backend)
    with pytest.raises(UrlBlocked) as info:
        await client.call("GET", "/latest/meta-data")
    assert info.value.status == 403 and info.value.code == "SSRF_BLOCKED"
    assert "allow_private_urls" in info.value.message
    assert backend.calls == []  # the network layer was never asked to connect (and no retry either)
    await client.aclose()


async def test_hostname_resolving_to_loopback_is_refused_and_nothing_is_accepted(
    accept_counter: AcceptCounter,
) -> None:
    backend = LoopbackOnlyBackend(allow_loopback=True)  # would really connect if the guard let it
    client = guarded(f"http://localhost:{accept_counter.port}", backend)  # the system resolver
    with pytest.raises(UrlBlocked, match="loopback"):
        await client.call("GET", "/")
    assert backend.calls == []
    assert accept_counter.accepted == 0
    # Control: the listener does count a real connection, so the 0 above means something.
    import asyncio

    _, writer = await asyncio.open_connection("127.0.0.1", accept_counter.port)
    await accept_counter.wait_for(1)
    writer.close()
    await client.aclose()


@pytest.mark.parametrize(
    "addresses",
    [["10.1.2.3"], ["169.254.169.254"], [PUBLIC, "127.0.0.1"], ["fd12::1"]],
)
async def test_dns_answers_with_any_private_address_are_refused(addresses: list[str]) -> None:
    backend = LoopbackOnlyBackend()
    client = guarded("http://internal.example.test", backend, fake_dns({"internal.example.test": addresses}))
    with pytest.raises(UrlBlocked, match=r"internal\.example\.test \("):
        await client.call("GET", "/")
    assert backend.calls == []
    await client.aclose()


async def test_public_address_is_allowed_and_the_checked_address_is_the_one_connected(
    http_server: HttpTestServer,
) -> None:
    backend = LoopbackOnlyBackend(routes={PUBLIC: ("127.0.0.1", http_server.port)})
    client = guarded("http://api.example.test", backend, fake_dns({"api.example.test": [PUBLIC]}))
    result = await client.call("GET", "/echo/x")
    assert result.body["path"] == "/echo/x"
    assert result.body["headers"]["Host"] == "api.example.test"
    # pinned: the backend received the resolved, checked IP, never the name (no rebinding window)
    assert backend.calls == [(PUBLIC, 80)]
    await client.aclose()


async def test_redirect_to_loopback_is_refused_at_the_hop(
    http_server: HttpTestServer, accept_counter: AcceptCounter
) -> None:
    backend = LoopbackOnlyBackend(routes={PUBLIC: ("127.0.0.1", http_server.port)})
    client = guarded("http://api.example.test", backend, fake_dns({"api.example.test": [PUBLIC]}))
    target = f"http://127.0.0.1:{accept_counter.port}/admin"
    with pytest.raises(UrlBlocked, match="loopback"):
        await client.call("GET", f"/redirect?to={target}")
    assert http_server.hits["/redirect"] == 1  # the first hop happened
    assert backend.calls == [(PUBLIC, 80)]  # the second was never attempted
    assert accept_counter.accepted == 0
    await client.aclose()


async def test_redirect_to_a_name_resolving_to_metadata_is_refused(http_server: HttpTestServer) -> None:
    backend = LoopbackOnlyBackend(routes={PUBLIC: ("127.0.0.1", http_server.port)})
    dns = fake_dns({"api.example.test": [PUBLIC], "metadata.example.test": ["169.254.169.254"]})
    client = guarded("http://api.example.test", backend, dns)
    with pytest.raises(UrlBlocked, match="metadata"):
        await client.call("GET", "/redirect?to=http://metadata.example.test/latest/")
    assert backend.calls == [(PUBLIC, 80)]
    await client.aclose()


async def test_allow_private_urls_lets_loopback_through(http_server: HttpTestServer) -> None:
    client = HttpConnector("int", HttpConnectorConfig(url=http_server.url, allow_private_urls=True))
    assert (await client.call("GET", "echo")).body["method"] == "GET"
    await client.aclose()


def test_blocked_reason_classifies_addresses() -> None:
    assert blocked_reason("8.8.8.8") is None
    assert blocked_reason("2606:4700::1111") is None
    assert blocked_reason("169.254.169.254") == "cloud metadata address"
    assert blocked_reason("fd00:ec2::254") == "cloud metadata address"
    assert blocked_reason("100.127.255.255") is not None
    assert blocked_reason("::ffff:192.168.0.1") is not None
    assert blocked_reason("not-an-ip") == "not an IP address"


async def test_check_host_reports_unresolvable_names() -> None:
    import httpcore

    with pytest.raises(httpcore.ConnectError, match="cannot resolve"):
        await check_host("nowhere.example.test", 80, fake_dns({}))


@pytest.mark.parametrize(
    "address",
    [
        "64:ff9b::a00:1",  # NAT64 of 10.0.0.1
        "64:ff9b:1::a00:1",  # local-use NAT64
        "fec0::1",  # site-local
        "2002:c0a8:101::1",  # 6to4 of 192.168.1.1
        "2001:0:4136:e378:8000:63bf:3fff:fdd2",  # Teredo
        "::7f00:1",  # IPv4-compatible 127.0.0.1
        "100::1",  # discard prefix
        "2001:db8::1",  # documentation
        "192.0.2.1",  # documentation (IPv4)
    ],
)
def test_every_ipv6_form_of_a_non_public_address_is_blocked(address: str) -> None:
    """Issue 14 (Low): the table missed NAT64, site-local, 6to4 of private IPv4; `ipaddress` decides the rest."""
    assert blocked_reason(address) is not None


def test_public_addresses_stay_reachable() -> None:
    for address in ("8.8.8.8", "2606:4700:4700::1111", "1.1.1.1"):
        assert blocked_reason(address) is None, address
