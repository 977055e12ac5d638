"""The read side's parts, as the composition root (``infrastructure/composition/read_side``)
wires them: its engines, the notification log, the failure log, the projectors, the process manager
and the mailer.

What is done with them is each a module of its own: ``projection_runner`` runs the projectors
and the process manager, ``rebuild`` rebuilds one projection, ``erasure`` forgets a
registration, ``projection_gauges`` measures lag.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine

from application.process_manager import ProcessManager
from infrastructure.read_side.event_source import EventSource
from infrastructure.read_side.failures import Failure, FailureLog
from infrastructure.read_side.projector import Projector, StatusProjector
from infrastructure.read_side.status_cache import Settlements
from infrastructure.verification.challenges import Verifications
from infrastructure.verification.mailer import Mailer
from projections.shards import ShardMap


@dataclass
class ReadSide:
    events_engine: AsyncEngine
    read_engine: AsyncEngine
    # One a physical users shard, in the shard map's order.
    shard_engines: list[AsyncEngine]
    shard_map: ShardMap
    source: EventSource
    failures: FailureLog
    # By name: every projector but the status projector, which follows them.
    projectors: dict[str, Projector]
    status: StatusProjector
    verifications: Verifications
    mailer: Mailer
    process_manager: ProcessManager[Failure]
    # The status projection's and the process manager's settlements of the status cache.
    settlements: Settlements | None = None

    @property
    def all_projectors(self) -> list[Projector]:
        return [*self.projectors.values(), self.status]

    def projector(self, name: str) -> Projector:
        for projector in self.all_projectors:
            if projector.name == name:
                return projector
        raise KeyError(name)

    async def close(self) -> None:
        if self.settlements is not None:
            await self.settlements.close()
        for engine in {
            self.events_engine,
            self.read_engine,
            *self.shard_engines,
            self.mailer.engine,
        }:
            await engine.dispose()
