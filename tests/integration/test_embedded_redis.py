"""The embedded Valkey of `signup up`: bounded, and found again by the admin commands."""

from __future__ import annotations

from pathlib import Path

from redis import Redis
from structlog.testing import capture_logs

from infrastructure.embedded import embedded_servers


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
