"""Wakes idle projectors when events are appended, instead of leaving them to their next poll.

eventsourcing's recorder sends ``NOTIFY <events table>`` in every append; one LISTEN
connection per worker process hears it and sets each projector's wake-up. Polling stays the
fallback: a listener that is down (say, PostgreSQL restarting) only costs latency, never an
event, because positions, not notifications, say what has been projected.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import structlog

from application.error_text import describe
from infrastructure.read_side.read_store import asyncpg_dsn
from infrastructure.stopping import sleep_unless_stopped

log = structlog.get_logger(__name__)


@dataclass
class Wakeups:
    database_url: str
    channel: str = "signup_events"
    reconnect_after: float = 1.0
    _wakes: list[asyncio.Event] = field(default_factory=list, init=False)

    def subscribe(self) -> asyncio.Event:
        wake = asyncio.Event()
        self._wakes.append(wake)
        return wake

    def wake_all(self, *_: Any) -> None:
        for wake in self._wakes:
            wake.set()

    async def listen(self, stop: asyncio.Event) -> None:
        """Until ``stop`` is set, reconnecting whenever the connection is lost."""
        while not stop.is_set():
            conn: asyncpg.Connection | None = None
            try:
                conn = await asyncpg.connect(asyncpg_dsn(self.database_url), timeout=2)
                await conn.add_listener(self.channel, self.wake_all)
                # Whatever was appended while nobody listened is picked up now.
                self.wake_all()
                while not stop.is_set() and not conn.is_closed():
                    await sleep_unless_stopped(stop, self.reconnect_after)
            except (OSError, asyncpg.PostgresError, TimeoutError) as error:
                log.warning("event_listener_unavailable", error=describe(error))
                await sleep_unless_stopped(stop, self.reconnect_after)
            finally:
                if conn is not None and not conn.is_closed():
                    await conn.close(timeout=2)


async def wait_for_wake(stop: asyncio.Event, wake: asyncio.Event | None, seconds: float) -> None:
    """Sleep ``seconds`` unless ``stop`` or ``wake`` is set first; ``wake`` is then cleared."""
    waiters = [asyncio.ensure_future(stop.wait())]
    if wake is not None:
        waiters.append(asyncio.ensure_future(wake.wait()))
    try:
        await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
        if wake is not None:
            wake.clear()
