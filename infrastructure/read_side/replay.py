"""The process manager's replayer: a parked event projected again by the projector that
failed on it, or a parked message sent again by the mailer."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from infrastructure.postgres_outages import is_unavailable
from infrastructure.read_side.event_source import EventSource
from infrastructure.read_side.failures import MAILER
from infrastructure.read_side.projector import Projector
from infrastructure.verification.mailer import Mailer


@dataclass
class Replays:
    """``application.process_manager.Replayer`` over the read side's projectors and mailer."""

    source: EventSource
    projectors: Sequence[Projector]
    mailer: Mailer

    async def replay(self, projection: str, notification_id: int) -> None:
        if projection == MAILER:
            # A parked message: ``notification_id`` is its outbox row.
            await self.mailer.send_one(notification_id)
            return
        note = await self.source.read_one(notification_id)
        if note is None:
            raise LookupError(f"no event {notification_id} in the event store")
        await self._projector(projection).apply(note)

    def transient(self, error: BaseException) -> bool:
        return is_unavailable(error)

    def _projector(self, name: str) -> Projector:
        for projector in self.projectors:
            if projector.name == name:
                return projector
        raise KeyError(name)
