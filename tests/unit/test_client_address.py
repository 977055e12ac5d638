from interfaces.http.client_address import client_address, trusted_networks

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
