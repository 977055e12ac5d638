"""Running the read side: every projector (or those named), and, beside the status projector,
the process manager's retries, the mailer and the verification expiry sweep."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Collection, Coroutine, Sequence
from typing import Any

import structlog

from application.error_text import describe
from application.process_manager import ProcessManager
from infrastructure.read_side.failures import Failure
from infrastructure.read_side.parts import ReadSide
from infrastructure.read_side.projector import Projector, run_forever
from infrastructure.read_side.wakeups import Wakeups
from infrastructure.stopping import sleep_unless_stopped

log = structlog.get_logger(__name__)


def slowest_position(projectors: Sequence[Projector]) -> Callable[[], Awaitable[int]]:
    """The status projector's gate: it may not pass the slowest of ``projectors``, so that
    ``completed`` means the registration is in every other read model."""

    async def slowest() -> int:
        return min([await projector.live_position() for projector in projectors])

    return slowest


async def run(
    read_side: ReadSide,
    stop: asyncio.Event,
    *,
    wakeups: Wakeups,
    fill: float,
    retry_every: float = 0.5,
    only: Collection[str] | None = None,
    beside_status: Sequence[Callable[[asyncio.Event], Coroutine[Any, Any, None]]] = (),
    mail: bool = True,
) -> None:
    """The projectors (``only`` those named, to spread them over processes and cores) and
    the process manager, until ``stop`` is set; ``fill``: how long a projector waits after a
    partial batch for more to come (``run_forever``).

    The process manager runs beside the status projector, so that exactly one process
    retries parked events however the projectors are spread; so do the mailer (unless
    ``mail`` is off: then a ``signup mailer --shard 0`` sends shard 0) and ``beside_status``
    (the verification expiry sweep).
    """
    everyone = read_side.all_projectors
    chosen = [p for p in everyone if only is None or p.name in only]
    unknown = set(only or ()) - {p.name for p in everyone}
    if unknown:
        raise ValueError(f"unknown projections: {', '.join(sorted(unknown))}")
    status = read_side.status
    status_wake = wakeups.subscribe()

    def others_moved() -> None:
        status_wake.set()

    tasks = [
        asyncio.create_task(
            # The status projector follows the others: their progress wakes it, and a
            # fill wait of its own would only add to every registration's latency.
            run_forever(p, stop, wake=status_wake, fill=0)
            if p is status
            else run_forever(p, stop, wake=wakeups.subscribe(), moved=others_moved, fill=fill)
        )
        for p in chosen
    ]
    tasks.append(asyncio.create_task(wakeups.listen(stop)))
    if status in chosen:
        tasks.append(asyncio.create_task(_retry_loop(read_side.process_manager, stop, retry_every)))
        if mail:
            tasks.append(asyncio.create_task(read_side.mailer.run(stop)))
        tasks.extend(asyncio.create_task(loop(stop)) for loop in beside_status)
    try:
        await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _retry_loop(
    process_manager: ProcessManager[Failure], stop: asyncio.Event, every: float
) -> None:
    while not stop.is_set():
        try:
            await process_manager.retry_due()
        except Exception as error:
            log.warning("process_manager_unavailable", error=describe(error))
        await sleep_unless_stopped(stop, every)
