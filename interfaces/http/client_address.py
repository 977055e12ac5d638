"""Who the client is: the peer, or what a trusted proxy says in X-Forwarded-For."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from litestar.types import Scope

from application.services import Network

Address = ipaddress.IPv4Address | ipaddress.IPv6Address

# One IPv6 subscriber is given a /64 (RFC 6177): counting each address apart would give one
# person 2**64 clients, one per address they pick.
IPV6_CLIENT_PREFIX = 64


def _parsed(text: str) -> Address | None:
    try:
        address = ipaddress.ip_address(text.strip())
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _trusted(address: Address | None, networks: Sequence[Network]) -> bool:
    return address is not None and any(address in network for network in networks)


def _client(address: Address) -> str:
    if isinstance(address, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((address, IPV6_CLIENT_PREFIX), strict=False))
    return str(address)


def client_of(scope: Scope, forwarded_for: str | None, trusted: Sequence[Network]) -> str:
    """``client_address`` of an ASGI request: its peer, and its X-Forwarded-For lines joined."""
    peer = scope["client"][0] if scope.get("client") else ""  # type: ignore[index]
    return client_address(peer, forwarded_for, trusted)


def client_address(peer: str, forwarded_for: str | None, trusted: Sequence[Network]) -> str:
    """The client a limit counts: the right-most address not belonging to a trusted proxy,
    an IPv6 client as its /64.

    Only a trusted peer's header is read: anyone else could write any address there to
    dodge the per-client limit. Hops that are not IP addresses are skipped: a proxy writes
    addresses, so anything else was written by the client.
    """
    address = _parsed(peer)
    if address is None:
        return peer
    if not forwarded_for or not _trusted(address, trusted):
        return _client(address)
    for hop in reversed(forwarded_for.split(",")):
        named = _parsed(hop)
        if named is None:
            continue
        address = named
        if not _trusted(named, trusted):
            break
    # Every hop trusted: the left-most one is as far as anyone can see.
    return _client(address)
