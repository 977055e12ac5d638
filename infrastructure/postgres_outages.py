"""Which asyncpg errors mean PostgreSQL is out of reach, rather than that a query is wrong.

The command and query sides answer those with ``StoreUnavailable`` (503, retry), never 500.
"""

from __future__ import annotations

import asyncpg

UNAVAILABLE: tuple[type[BaseException], ...] = (
    OSError,  # refused, reset, timed out (TimeoutError is an OSError)
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,  # the connection was closed under us
    asyncpg.exceptions.OperatorInterventionError,  # shutting down, starting up
    asyncpg.exceptions.LockNotAvailableError,  # lock_timeout: another writer is stuck
    asyncpg.exceptions.TooManyConnectionsError,
)


async def open_pool(dsn: str, size: int) -> asyncpg.Pool:
    """A pool that connects on first use, so a process starts whether or not the database
    is up yet, and gives up on a silent server in seconds rather than asyncpg's minute."""
    pool = await asyncpg.create_pool(dsn, min_size=0, max_size=size, timeout=2, reset=_keep_session)
    assert pool is not None
    return pool


async def _keep_session(connection: asyncpg.Connection) -> None:
    """Nothing to undo between uses (no session settings, listeners or advisory locks are
    taken on these pools; asyncpg itself rolls back an open transaction): asyncpg's default
    reset would cost every use a round trip."""
