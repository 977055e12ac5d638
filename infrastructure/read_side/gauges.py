"""How far behind each projection is: read for ``signup projections status`` and published
as gauges on the API's /metrics, where ``/health/ready`` learns whether they move."""

from __future__ import annotations

import asyncio
import time

import structlog

from application.error_text import describe
from application.projection_progress import ProjectionProgress
from infrastructure import metrics
from infrastructure.read_side.parts import ReadSide
from infrastructure.read_side.projector import Projector
from infrastructure.read_side.read_store import DEAD, RETRYING, active_positions
from infrastructure.stopping import sleep_unless_stopped

log = structlog.get_logger(__name__)


async def lag(read_side: ReadSide) -> dict[str, tuple[int, int]]:
    """Each projection's position and how many notifications it is behind."""
    # One statement per database, not two per projection: the API processes read this
    # every second (it was ~3 % of their time under load).
    positions: dict[str, int] = {}
    by_engine: dict[int, list[Projector]] = {}
    for projector in read_side.all_projectors:
        by_engine.setdefault(id(projector.store.engine), []).append(projector)
    for projectors in by_engine.values():
        found = await active_positions(projectors[0].store.engine)
        positions.update({p.name: found.get(p.name, 0) for p in projectors})
    # The head after the positions: read before, it could be passed by them meanwhile.
    head = await read_side.source.head()
    return {name: (position, max(0, head - position)) for name, position in positions.items()}


async def publish_gauges(
    read_side: ReadSide, stop: asyncio.Event, progress: ProjectionProgress, every: float = 1.0
) -> None:
    """Lag, positions, stalls and failure counts, read from the databases once a second."""
    reported: set[str] = set()  # stalled, as last logged
    while not stop.is_set():
        try:
            lags = await lag(read_side)
            now = time.monotonic()
            for name, (position, behind) in lags.items():
                metrics.PROJECTION_POSITION.labels(name).set(position)
                metrics.PROJECTION_LAG.labels(name).set(behind)
                progress.observe(name, position, behind, now)
            stalled = set(progress.stalled(now))
            for name in lags:
                metrics.PROJECTION_STALLED.labels(name).set(int(name in stalled))
            for name in sorted(stalled - reported):
                log.error("projection_stalled", projection=name, lag=lags[name][1])
            for name in sorted(reported - stalled):
                log.info("projection_moving_again", projection=name)
            reported = stalled
            counts = await read_side.failures.count()
            for state in (RETRYING, DEAD):
                metrics.PROJECTION_FAILURES.labels(state).set(counts.get(state, 0))
        except Exception as error:
            log.debug("metrics_refresh_failed", error=describe(error))
        await sleep_unless_stopped(stop, every)
