"""A Lua script called over a connection held for it, past redis-py's per-command layers.

The rate limiter and the status cache each send one script call at a time, for a whole turn
of requests (or batch of registrations). Through redis-py's client a call takes a pooled
connection, runs inside the retry machinery and awaits the observability hooks around it:
~30 us of the API's CPU a call of the limiter's, against ~67 for the call itself on a
connection of its own (``docs/performance.md``). So each keeps one connection from the
client's pool (its URL, timeouts, parser and TLS; closed with the client) and uses redis-py's
public ``send_command``/``read_response`` on it.

What the client's layers did that still matters is done here: a server that has lost the
script (restarted, its scripts flushed) is sent it again, as ``AsyncScript`` does; after any
failure but an error answer the connection is dropped, as redis-py drops it, so that a late
answer is never read as the next call's; the next call connects again. The retries are left
out: callers fail open at once (a signup is not held for a Redis that does not answer).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import NoScriptError, ResponseError


@dataclass
class HeldScript:
    redis: Redis
    source: str
    _sha: str = field(init=False)
    _connection: AbstractConnection | None = field(init=False, default=None)
    # One call at a time on the connection: answers come back in order.
    _turn: asyncio.Lock = field(init=False, default_factory=asyncio.Lock)

    def __post_init__(self) -> None:
        self._sha = self.redis.register_script(self.source).sha

    async def __call__(self, args: Sequence[Any]) -> Any:
        async with self._turn:
            connection = self._connection
            if connection is None:
                pool = self.redis.connection_pool
                connection = self._connection = await pool.get_connection()  # type: ignore[no-untyped-call]
            try:
                try:
                    await connection.send_command("EVALSHA", self._sha, 0, *args)
                    return await connection.read_response()
                except NoScriptError:
                    await connection.send_command("EVAL", self.source, 0, *args)
                    return await connection.read_response()
            except ResponseError:
                raise  # a whole answer was read: the connection is still in step
            except BaseException:
                await connection.disconnect(nowait=True)
                raise
