"""Waiting that a stop cuts short: the long-running loops (projectors, the mailer, the
gauges, the waits for PostgreSQL) pause between turns, and a process told to stop must not
sit out the rest of a pause first."""

from __future__ import annotations

import asyncio
import contextlib


async def sleep_unless_stopped(stop: asyncio.Event, seconds: float) -> None:
    """``seconds``, or less if ``stop`` is set meanwhile."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
