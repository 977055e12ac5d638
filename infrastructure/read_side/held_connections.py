"""asyncpg connections kept open for the read side's statements outside a transaction.

A projector's step is a handful of one-statement round trips (its headers, its payloads, the
held failures, its rows), each of which checked a connection out of the engine's SQLAlchemy
pool and back in: three greenlet hops, each mapping and unmapping a frame stack of its own,
and the pool's bookkeeping: ``records`` cost 140-169 us of client CPU a statement against
24-30 for the statement itself (``docs/performance.md``); through asyncpg's own pool, 56-79
(its release runs in a task of its own). Here a statement takes an open connection from a
list and puts it back: ``records`` 31-47 us.

A connection is never shared by two statements at once, and one that a statement left in an
unknown state (any error, a cancellation) is closed instead of reused, so an outage costs a
reconnect, as the engine's pool would. The engine's own pool still serves every transaction.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg


class HeldConnections:
    """At most ``most`` connections to ``dsn``, opened when first needed and kept."""

    def __init__(self, dsn: str, most: int, connect_timeout: float) -> None:
        self._dsn = dsn
        self._most = most
        self._connect_timeout = connect_timeout
        self._idle: list[asyncpg.Connection] = []
        self._open = 0
        self._waiting: deque[asyncio.Future[None]] = deque()
        # Connections belong to the event loop that opened them.
        self._loop: asyncio.AbstractEventLoop | None = None

    @asynccontextmanager
    async def lease(self) -> AsyncIterator[asyncpg.Connection]:
        connection = await self._take()
        try:
            yield connection
        except BaseException:
            self._drop(connection)
            raise
        if connection.is_closed() or connection.is_in_transaction():
            self._drop(connection)
        else:
            self._idle.append(connection)
            self._pass_on()

    def close(self) -> None:
        """Close the idle connections (the engine is disposed); leased ones close when they
        come back broken or are left to the next lease, as a disposed pool's are."""
        idle, self._idle = self._idle, []
        self._open -= len(idle)
        for connection in idle:
            connection.terminate()

    async def _take(self) -> asyncpg.Connection:
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            # Another loop's connections cannot be used here (a test's, a command's).
            self._idle, self._open, self._waiting = [], 0, deque()
            self._loop = loop
        while True:
            while self._idle:
                connection = self._idle.pop()
                if not connection.is_closed():
                    return connection
                self._open -= 1
            if self._open < self._most:
                self._open += 1
                try:
                    return await asyncpg.connect(self._dsn, timeout=self._connect_timeout)
                except BaseException:
                    self._open -= 1
                    self._pass_on()
                    raise
            turn = loop.create_future()
            self._waiting.append(turn)
            try:
                await turn
            except BaseException:
                if turn.done() and not turn.cancelled():
                    self._pass_on()  # given a turn it will not take: the next waiter's
                else:
                    self._waiting.remove(turn)
                raise

    def _drop(self, connection: asyncpg.Connection) -> None:
        connection.terminate()
        self._open -= 1
        self._pass_on()

    def _pass_on(self) -> None:
        while self._waiting:
            turn = self._waiting.popleft()
            if not turn.done():
                turn.set_result(None)
                return
