"""Who the client is: the peer, or what a trusted proxy says in X-Forwarded-For."""

from __future__ import annotations

import functools
import ipaddress
import re
import socket
from collections.abc import Sequence

from litestar.types import Scope

from application.services import Network

Address = ipaddress.IPv4Address | ipaddress.IPv6Address

# One IPv6 subscriber is given a /64 (RFC 6177): counting each address apart would give one
# person 2**64 clients, one per address they pick.
IPV6_CLIENT_PREFIX = 64


# A dotted quad as ``ipaddress`` writes one (no leading zeros, each part at most 255): such a
# text is its own canonical form, and its value is what ``socket.inet_aton`` reads. Every
# request names its peer and, behind a proxy, its client this way, and ``ipaddress`` took
# 9.5 us a request to parse and test them; anything else still goes through ``ipaddress``.
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_DOTTED_QUAD = re.compile(rf"{_OCTET}(?:\.{_OCTET}){{3}}", re.ASCII)


@functools.lru_cache(maxsize=64)
def _ipv4_masks(trusted: tuple[Network, ...]) -> tuple[tuple[int, int], ...] | None:
    """The trusted IPv4 networks as (network, mask) integers; None when some trusted network
    is IPv6 (which an IPv4-mapped address could fall in: the slow path decides then)."""
    if any(network.version != 4 for network in trusted):
        return None
    return tuple((int(n.network_address), int(n.netmask)) for n in trusted)


def _quad(text: str, masks: tuple[tuple[int, int], ...]) -> tuple[str, bool] | None:
    """A canonical dotted quad and whether it is trusted, or None for any other text."""
    if _DOTTED_QUAD.fullmatch(text) is None:
        return None
    value = int.from_bytes(socket.inet_aton(text), "big")
    return text, any(value & mask == network for network, mask in masks)


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
    masks = _ipv4_masks(tuple(trusted))
    if masks is not None:
        quick = _quick_client(peer, forwarded_for, masks)
        if quick is not None:
            return quick
    return _client_address(peer, forwarded_for, trusted)


def _quick_client(
    peer: str, forwarded_for: str | None, masks: tuple[tuple[int, int], ...]
) -> str | None:
    """``client_address`` when the peer and every hop read are canonical dotted quads and
    only IPv4 networks are trusted; None to leave any other case to ``ipaddress``."""
    seen = _quad(peer, masks)
    if seen is None:
        return None
    address, trusted = seen
    if not forwarded_for or not trusted:
        return address
    for hop in reversed(forwarded_for.split(",")):
        seen = _quad(hop.strip(), masks)
        if seen is None:
            return None
        address, trusted = seen
        if not trusted:
            break
    return address


def _client_address(peer: str, forwarded_for: str | None, trusted: Sequence[Network]) -> str:
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
