"""The embedded PostgreSQL's buffer pool is sized for the machine, once per data dir."""

from __future__ import annotations

from pathlib import Path

import psycopg
from structlog.testing import capture_logs

from infrastructure.embedded import _machine_memory, embedded_servers, shared_buffers_mb


def _buffers_mb(url: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT pg_size_bytes(current_setting('shared_buffers')) / 1048576"
        ).fetchone()
    assert row is not None
    return int(row[0])


def _events(logged: list[dict[str, object]], name: str) -> list[dict[str, object]]:
    return [line for line in logged if line["event"] == name]


def test_the_embedded_postgres_runs_with_a_buffer_pool_sized_for_the_machine(
    data_dir: Path,
) -> None:
    wanted = shared_buffers_mb(_machine_memory())

    with capture_logs() as first_start, embedded_servers(data_dir, redis=False) as first:
        assert _buffers_mb(first.database_url) == wanted
        # An admin command beside it attaches to the server as it runs.
        with capture_logs() as attached, embedded_servers(data_dir, redis=False) as second:
            assert _buffers_mb(second.database_url) == wanted
        assert not _events(attached, "embedded_postgres_resized")
    [resized] = _events(first_start, "embedded_postgres_resized")
    assert resized["shared_buffers_mb"] == wanted

    # Started again, the data dir keeps its size: no second start to take it.
    with capture_logs() as again, embedded_servers(data_dir, redis=False) as third:
        assert _buffers_mb(third.database_url) == wanted
    assert not _events(again, "embedded_postgres_resized")
