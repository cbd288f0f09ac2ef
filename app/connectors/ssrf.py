"""SSRF guard for http connectors: decide on the *resolved* address, before any connection opens.

`GuardedBackend` is an httpcore network backend: every TCP connection an http connector opens
(first request, each redirect hop, each retry) goes through `connect_tcp`, which resolves the host,
refuses the call if any resolved address is private, and then connects to the checked address
itself, so a DNS answer cannot change between the check and the connect (no rebinding window).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import httpcore

from app.connectors.errors import UrlBlocked

__all__ = [
    "BLOCKED_NETWORKS",
    "GuardedBackend",
    "Resolver",
    "blocked_reason",
    "check_host",
    "system_resolver",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], Awaitable[list[str]]]

# (network, why) - checked after unwrapping IPv4-mapped/compatible IPv6 addresses.
BLOCKED_NETWORKS: tuple[tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, str], ...] = tuple(
    (ipaddress.ip_network(net), why)
    for net, why in (
        ("169.254.169.254/32", "cloud metadata address"),
        ("fd00:ec2::254/128", "cloud metadata address"),
        ("0.0.0.0/8", "unspecified address"),
        ("::/128", "unspecified address"),
        ("127.0.0.0/8", "loopback address"),
        ("::1/128", "loopback address"),
        ("10.0.0.0/8", "private address (RFC 1918)"),
        ("172.16.0.0/12", "private address (RFC 1918)"),
        ("192.168.0.0/16", "private address (RFC 1918)"),
        ("100.64.0.0/10", "carrier-grade NAT address (RFC 6598)"),
        ("169.254.0.0/16", "link-local address"),
        ("fe80::/10", "link-local address"),
        ("fc00::/7", "unique local address"),
        ("224.0.0.0/4", "multicast address"),
        ("ff00::/8", "multicast address"),
        ("240.0.0.0/4", "reserved address"),
        ("255.255.255.255/32", "broadcast address"),
        ("192.0.0.0/24", "IETF protocol assignment"),
        ("198.18.0.0/15", "benchmarking network"),
        ("64:ff9b::/96", "NAT64 address"),
        ("64:ff9b:1::/48", "NAT64 address"),
        ("fec0::/10", "site-local address"),
        ("2001::/32", "Teredo address"),
        ("2002::/16", "6to4 address"),
    )
)


def _embedded(ip: IPAddress) -> list[IPAddress]:
    """`ip` and every IPv4 address an IPv6 form carries (mapped, compatible, 6to4, Teredo, NAT64)."""
    out: list[IPAddress] = [ip]
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            out.append(ip.ipv4_mapped)
        if ip.sixtofour is not None:
            out.append(ip.sixtofour)
        if ip.teredo is not None:
            out.extend(ip.teredo)
        packed = int(ip)
        if packed >> 32 == 0 and packed > 1:  # IPv4-compatible ::a.b.c.d (deprecated, still routed)
            out.append(ipaddress.IPv4Address(packed & 0xFFFFFFFF))
        if ip in ipaddress.ip_network("64:ff9b::/96"):
            out.append(ipaddress.IPv4Address(packed & 0xFFFFFFFF))
    return out


def blocked_reason(address: str) -> str | None:
    """Why `address` (an IP literal) may not be reached, or None when it is public.

    The table names the common cases; anything else the `ipaddress` module does not classify as
    globally reachable (in any IPv6 form's embedded IPv4 address too) is refused as well.
    """
    try:
        parsed = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return "not an IP address"
    forms = _embedded(parsed)
    for ip in reversed(forms):  # the embedded IPv4 address names the reason best
        for net, why in BLOCKED_NETWORKS:
            if ip.version == net.version and ip in net:
                return why
    if not all(ip.is_global for ip in forms):
        return "non-global address"
    return None


async def system_resolver(host: str, port: int) -> list[str]:
    """All addresses `host` resolves to (the event loop's getaddrinfo)."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


async def check_host(host: str, port: int, resolver: Resolver = system_resolver) -> list[str]:
    """Resolve `host` and return its addresses; `UrlBlocked` if any of them is not public.

    Any blocked address refuses the whole name: a name with one public and one private address is
    exactly what a rebinding attacker serves.
    """
    host = host.strip("[]")
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
        addresses = [host]
    except ValueError:
        try:
            addresses = await resolver(host, port)
        except OSError as exc:
            raise httpcore.ConnectError(f"cannot resolve '{host}': {exc}") from exc
    if not addresses:
        raise httpcore.ConnectError(f"'{host}' resolves to no address")
    for address in addresses:
        why = blocked_reason(address)
        if why is not None:
            shown = host if address == host else f"{host} ({address})"
            raise UrlBlocked(f"request to {shown} refused: {why}; set allow_private_urls on the connector to allow it")
    return addresses


class GuardedBackend(httpcore.AsyncNetworkBackend):
    """Resolve, check, then connect to the checked address through `inner` (the real backend)."""

    def __init__(self, inner: httpcore.AsyncNetworkBackend | None = None, resolver: Resolver | None = None) -> None:
        self._inner = inner if inner is not None else httpcore.AnyIOBackend()
        self._resolver = resolver or system_resolver

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        addresses = await check_host(host, port, self._resolver)
        last: Exception | None = None
        for address in addresses:
            try:
                return await self._inner.connect_tcp(
                    address, port, timeout=timeout, local_address=local_address, socket_options=socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                last = exc
        assert last is not None
        raise last

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise UrlBlocked("unix sockets are not reachable through an http connector")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)
