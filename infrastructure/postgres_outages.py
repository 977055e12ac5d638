"""Which driver errors mean PostgreSQL is out of reach, rather than that a query is wrong:
asyncpg's (the appends, the status queries), psycopg's through eventsourcing (the recorder's
own statements), SQLAlchemy's (the read side). The one place that says so.

The command and query sides answer those with ``StoreUnavailable`` (503, retry), never 500;
the read side waits them out instead of spending a failing event's attempts.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

import asyncpg
import psycopg
import structlog
from eventsourcing.persistence import InterfaceError, OperationalError
from sqlalchemy.exc import DBAPIError

from application.error_text import describe
from infrastructure.stopping import sleep_unless_stopped

log = structlog.get_logger(__name__)

T = TypeVar("T")

UNAVAILABLE: tuple[type[BaseException], ...] = (
    OSError,  # refused, reset, timed out (TimeoutError is an OSError)
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,  # the connection was closed under us
    asyncpg.exceptions.OperatorInterventionError,  # shutting down, starting up
    asyncpg.exceptions.LockNotAvailableError,  # lock_timeout: another writer is stuck
    asyncpg.exceptions.TooManyConnectionsError,
)


# eventsourcing's recorder (psycopg) says so with its own two classes.
EVENT_STORE_UNAVAILABLE: tuple[type[BaseException], ...] = (OperationalError, InterfaceError)

# Through SQLAlchemy (the read side), the cause is wrapped: a lost connection, or a socket
# error underneath.
_SOCKET: tuple[type[BaseException], ...] = (OSError, ConnectionError, TimeoutError)


def is_unavailable(error: BaseException) -> bool:
    """Whether a read-side error says the database is unreachable, not that an event is bad
    (then the batch is retried, without spending the event's attempts)."""
    if isinstance(error, _SOCKET):
        return True
    # asyncpg's own, from a statement sent past SQLAlchemy on the engine's connection (the
    # worker's event reads and rows, the mailer's marks): unwrapped.
    if isinstance(error, UNAVAILABLE):
        return True
    if not isinstance(error, DBAPIError):
        return False
    if error.connection_invalidated or isinstance(error.orig, _SOCKET):
        return True
    # SQLAlchemy keeps asyncpg's own error as the cause of its wrapper. A server in crash
    # recovery refuses connections with "the database system is starting up" (57P03), which
    # SQLAlchemy neither counts as a disconnect nor wraps as a socket error: read plainly, a
    # projector that met it spent an event's attempts on the outage.
    cause = error.orig.__cause__ if error.orig is not None else None
    return isinstance(cause, UNAVAILABLE)


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


async def once_reachable(
    open_: Callable[[], Awaitable[T]],
    stop: asyncio.Event,
    *,
    waiting: str,
    url: str | None = None,
    longest: float = 10.0,
) -> T | None:
    """``open_()`` once PostgreSQL answers; None if ``stop`` is set first.

    For what connects as it is opened (eventsourcing's application registers its types on a
    connection) at a process's start: the process waits for the server instead of dying of
    its absence. Each failed attempt is one ``waiting`` log line, the error named, then a
    pause from 0.5 s doubling to ``longest``. With ``url`` (the database ``open_`` opens),
    the line also gives the server's own ``reason`` (see ``refusal``)."""
    wait = 0.5
    while not stop.is_set():
        try:
            return await open_()
        except EVENT_STORE_UNAVAILABLE as error:
            reason = await refusal(url) if url is not None else None
            log.warning(waiting, error=describe(error), reason=reason, retry_in=wait)
        await sleep_unless_stopped(stop, wait)
        wait = min(longest, wait * 2)
    return None


async def refusal(url: str) -> str | None:
    """Why one direct connection to ``url`` fails, in libpq's words; None if it succeeds.

    eventsourcing's pool reports only "couldn't get a connection after 2.00 sec", the same for
    a server that is down, a wrong password and a database that does not exist: an operator
    who got the URL wrong watched the process wait forever with no clue why. libpq's message
    of a failed connection names the server, the user and the database, never the password,
    and quotes no row (which is why ``describe`` leaves driver messages out elsewhere)."""
    try:
        connection = await psycopg.AsyncConnection.connect(url, connect_timeout=2)
    except psycopg.Error as error:
        return " ".join(str(error).split())[:500]
    await connection.close()
    return None
