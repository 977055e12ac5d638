import ipaddress

from hypothesis import given, settings
from hypothesis import strategies as st

from application.services import trusted_networks
from interfaces.http.client_address import (
    _client_address,
    _ipv4_masks,
    _quick_client,
    client_address,
)

PROXIES = trusted_networks(["10.0.0.0/8", "192.0.2.1"])


def test_a_direct_client_is_its_peer_whatever_its_header_says() -> None:
    assert client_address("203.0.113.7", "198.51.100.1", PROXIES) == "203.0.113.7"


def test_behind_a_trusted_proxy_the_client_is_the_last_untrusted_hop() -> None:
    forwarded = "198.51.100.9, 203.0.113.7, 10.1.2.3"
    assert client_address("192.0.2.1", forwarded, PROXIES) == "203.0.113.7"


def test_a_trusted_proxy_without_a_header_is_the_client() -> None:
    assert client_address("10.0.0.5", None, PROXIES) == "10.0.0.5"


def test_nothing_is_trusted_by_default() -> None:
    assert client_address("10.0.0.5", "198.51.100.9", trusted_networks([])) == "10.0.0.5"


def test_a_hop_that_is_not_an_address_is_skipped_for_the_one_before_it() -> None:
    forwarded = "203.0.113.7, not-an-address, 10.1.2.3"
    assert client_address("192.0.2.1", forwarded, PROXIES) == "203.0.113.7"


def test_a_client_cannot_make_itself_new_with_a_header_line_before_the_proxys() -> None:
    # HAProxy appends its line after whatever the client sent: the client's own is left of it.
    forwarded = "198.51.100.77, 203.0.113.7"
    assert client_address("192.0.2.1", forwarded, PROXIES) == "203.0.113.7"


def test_an_ipv6_client_is_counted_by_its_slash_64() -> None:
    one = client_address("2001:db8:1:2::1", None, PROXIES)
    other = client_address("2001:db8:1:2:ffff::9", None, PROXIES)
    assert one == other == "2001:db8:1:2::/64"
    assert client_address("2001:db8:1:3::1", None, PROXIES) != one


def test_an_ipv6_client_behind_a_proxy_is_counted_by_its_slash_64() -> None:
    assert client_address("10.0.0.5", "2001:db8::abcd", PROXIES) == "2001:db8::/64"


def test_an_ipv4_mapped_address_is_the_ipv4_client() -> None:
    assert client_address("::ffff:203.0.113.7", None, PROXIES) == "203.0.113.7"


def test_when_every_hop_is_trusted_the_left_most_is_the_client() -> None:
    assert client_address("10.0.0.5", "10.9.9.9, 10.0.0.7", PROXIES) == "10.9.9.9"


# --- the dotted-quad fast path answers as ipaddress does --------------------------------------

_octets = st.one_of(
    st.integers(0, 255).map(str),
    st.integers(0, 999).map(str),
    st.integers(0, 255).map(lambda n: f"0{n}"),  # leading zeros: not canonical
    st.sampled_from(["", " ", "-1", "0x1f", "1e2", "²", "٣"]),  # and non-ASCII digits
)
_quads = st.lists(_octets, min_size=3, max_size=5).map(".".join)
_addresses = st.one_of(
    _quads,
    st.sampled_from(
        ["127.0.0.1", "10.1.2.3", "192.0.2.1", "::1", "::ffff:10.0.0.1", "2001:db8::1"]
    ),
    st.text(max_size=20),
)
_hop = st.tuples(st.sampled_from(["", " ", "  "]), _addresses).map("".join)
_networks = st.lists(
    st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 32)).map(
        lambda pair: ipaddress.IPv4Network(pair, strict=False)
    ),
    max_size=3,
).map(tuple)


@settings(max_examples=1_000)
@given(_addresses, st.none() | st.lists(_hop, min_size=1, max_size=4).map(",".join), _networks)
def test_the_dotted_quad_fast_path_answers_as_ipaddress_does(
    peer: str, forwarded_for: str | None, trusted: tuple[ipaddress.IPv4Network, ...]
) -> None:
    masks = _ipv4_masks(trusted)
    assert masks is not None
    quick = _quick_client(peer, forwarded_for, masks)
    if quick is not None:
        assert quick == _client_address(peer, forwarded_for, trusted)
