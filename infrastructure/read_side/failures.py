"""Parked events and dead letters, kept beside the registration status read model.

The status read model and this table share a database so that a registration's status and
its failures change in one transaction.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from application.retry_policy import RetryPolicy
from infrastructure import metrics
from infrastructure.read_side.event_source import Notification
from infrastructure.read_side.read_store import (
    DEAD,
    RETRYING,
    projection_failures,
    reading,
    records,
    row_dict,
)
from infrastructure.read_side.status_changes import apply_change
from projections.registration_status import DEAD_LETTERED, retried

if TYPE_CHECKING:
    from infrastructure.verification.challenges import ChallengeIssuer

# A later event of a registration whose earlier event is parked waits behind it.
WAITING = "waiting behind an earlier failed event of this registration"

# Failed sends are parked here too, as the mailer's (``notification_id`` is then the mail
# outbox row's id): retried with the same backoff and dead-lettered alike, but a message
# that cannot be sent leaves its registration's status as it is.
MAILER = "mailer"


@dataclass(frozen=True, slots=True)
class Failure:
    id: int
    projection: str
    notification_id: int
    registration_id: uuid.UUID
    topic: str
    error: str
    attempts: int
    state: str
    first_failed_at: datetime
    last_failed_at: datetime
    next_attempt_at: datetime

    @classmethod
    def from_row(cls, row: Any) -> Failure:
        return cls(**row_dict(row))


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass
class FailureLog:
    engine: AsyncEngine
    policy: RetryPolicy
    # Issues a registration's verification when a retry completes it.
    issuer: ChallengeIssuer | None = None
    # Told whose status row a retry or a dead letter changed, once committed (see
    # status_cache: a poll must then read the row, not what the cache held).
    settle: Callable[[Iterable[uuid.UUID]], None] | None = None

    async def held(self, projection: str, registration_ids: Iterable[uuid.UUID]) -> set[uuid.UUID]:
        """Which of these registrations have an open failure in this projection."""
        # Every projector asks it for every batch, and a projection mostly has no open
        # failure at all: asked first, that costs a worker ~170 us of CPU against ~500 for
        # the batch's ids (600 of them) sent and looked up one by one.
        ids = list(registration_ids)
        if not ids:
            return set()
        any_open = await records(
            self.engine,
            "SELECT EXISTS (SELECT FROM projection_failures WHERE projection = $1) AS open",
            projection,
        )
        if not any_open[0]["open"]:
            return set()
        # One array parameter (a batch has a thousand ids), encoded by asyncpg rather than
        # an id at a time by SQLAlchemy.
        rows = await records(
            self.engine,
            "SELECT registration_id FROM projection_failures"
            " WHERE projection = $1 AND registration_id = ANY($2::uuid[])",
            projection,
            list(set(ids)),
        )
        return {row["registration_id"] for row in rows}

    async def park(
        self, projection: str, notification: Notification, error: str, *, first_attempt: bool
    ) -> None:
        """Record that ``projection`` could not handle this event (``first_attempt``) or that
        it waits behind an earlier failure of its registration."""
        attempts = 1 if first_attempt else 0
        dead = first_attempt and self.policy.gives_up(attempts)
        async with self.engine.begin() as conn:
            await conn.execute(
                insert(projection_failures)
                .values(
                    projection=projection,
                    notification_id=notification.id,
                    registration_id=notification.registration_id,
                    topic=notification.topic,
                    error=error,
                    attempts=attempts,
                    state=DEAD if dead else RETRYING,
                    next_attempt_at=_now() + self.policy.delay_after(attempts),
                )
                .on_conflict_do_nothing()
            )
            if dead and projection != MAILER:
                await mark_failed(conn, notification.registration_id)
        if dead and projection != MAILER and self.settle is not None:
            self.settle([notification.registration_id])

    async def park_send(
        self, outbox_id: int, registration_id: uuid.UUID, kind: str, error: str
    ) -> None:
        """A message the relay refused: retried like a failed event, as the mailer's."""
        async with self.engine.begin() as conn:
            await conn.execute(
                insert(projection_failures)
                .values(
                    projection=MAILER,
                    notification_id=outbox_id,
                    registration_id=registration_id,
                    topic=f"mail:{kind}",
                    error=error,
                    attempts=1,
                    state=DEAD if self.policy.gives_up(1) else RETRYING,
                    next_attempt_at=_now() + self.policy.delay_after(1),
                )
                .on_conflict_do_nothing()
            )

    async def due(self, limit: int = 100) -> list[Failure]:
        """Retrying failures whose time has come, oldest event first; a registration's later
        events wait until its earlier ones are resolved."""
        async with reading(self.engine) as conn:
            result = await conn.execute(
                text(
                    "SELECT f.* FROM projection_failures f"
                    " WHERE f.state = :retrying AND f.next_attempt_at <= now()"
                    " AND NOT EXISTS (SELECT 1 FROM projection_failures e"
                    "   WHERE e.projection = f.projection"
                    "   AND e.registration_id = f.registration_id"
                    "   AND e.notification_id < f.notification_id)"
                    " ORDER BY f.notification_id LIMIT :limit"
                ),
                {"retrying": RETRYING, "limit": limit},
            )
            return [Failure.from_row(row) for row in result]

    async def get(self, failure_id: int) -> Failure | None:
        async with reading(self.engine) as conn:
            result = await conn.execute(
                select(projection_failures).where(projection_failures.c.id == failure_id)
            )
            row = result.first()
            return Failure.from_row(row) if row is not None else None

    async def list(self, state: str | None = DEAD) -> list[Failure]:
        statement = select(projection_failures).order_by(projection_failures.c.notification_id)
        if state is not None:
            statement = statement.where(projection_failures.c.state == state)
        async with reading(self.engine) as conn:
            return [Failure.from_row(row) for row in await conn.execute(statement)]

    async def count(self) -> dict[str, int]:
        # Every API process asks every second, for its gauges.
        rows = await records(
            self.engine, "SELECT state, count(*) AS n FROM projection_failures GROUP BY state"
        )
        return {row["state"]: int(row["n"]) for row in rows}

    async def resolve(self, failure: Failure) -> None:
        """The event is now projected: forget the failure and, when nothing else of this
        registration is open and the status projector has already seen it, complete it."""
        async with self.engine.begin() as conn:
            await conn.execute(
                projection_failures.delete().where(projection_failures.c.id == failure.id)
            )
            metrics.RETRIES.labels("projected").inc()
            if failure.projection == MAILER:
                return
            # Only its last open failure completes it (the mailer's are not the
            # registration's): until then it stays as given_failures made it.
            completed = await apply_change(
                conn,
                failure.registration_id,
                retried(failure.registration_id),
                unless="EXISTS (SELECT 1 FROM projection_failures"
                " WHERE registration_id = :rid AND projection <> :mailer)",
                params={"mailer": MAILER},
                returning=("registration_id", "requested_at"),
            )
            # Completed here rather than by the status projection: its verification too, in
            # this transaction.
            if self.issuer is not None:
                await self.issuer.issue(
                    conn, [(row["registration_id"], row["requested_at"]) for row in completed]
                )
        if completed and self.settle is not None:
            self.settle([failure.registration_id])

    async def attempt_failed(self, failure: Failure, error: str) -> Failure:
        attempts = failure.attempts + 1
        dead = self.policy.gives_up(attempts)
        async with self.engine.begin() as conn:
            result = await conn.execute(
                projection_failures.update()
                .where(projection_failures.c.id == failure.id)
                .values(
                    attempts=attempts,
                    error=error,
                    state=DEAD if dead else RETRYING,
                    last_failed_at=func.now(),
                    next_attempt_at=_now() + self.policy.delay_after(attempts),
                )
                .returning(*projection_failures.c)
            )
            updated = Failure.from_row(result.one())
            metrics.RETRIES.labels("dead_lettered" if dead else "failed").inc()
            if dead and failure.projection != MAILER:
                await mark_failed(conn, failure.registration_id)
        if dead and failure.projection != MAILER and self.settle is not None:
            self.settle([failure.registration_id])
        return updated

    async def discard(self, failure_id: int) -> bool:
        async with self.engine.begin() as conn:
            result = await conn.execute(
                projection_failures.delete()
                .where(projection_failures.c.id == failure_id)
                .returning(projection_failures.c.id)
            )
            return result.first() is not None

    async def forget(self, registration_ids: Sequence[uuid.UUID]) -> int:
        """Drop registrations' parked events and dead letters (their error texts may quote
        them)."""
        async with self.engine.begin() as conn:
            result = await conn.execute(
                projection_failures.delete().where(
                    projection_failures.c.registration_id.in_(list(registration_ids))
                )
            )
            return int(result.rowcount)


async def mark_failed(conn: AsyncConnection, registration_id: uuid.UUID) -> None:
    """A dead letter fails its registration (``DEAD_LETTERED``), if the status projector has
    seen it already: otherwise that projector will find the dead letter itself."""
    await apply_change(conn, registration_id, DEAD_LETTERED)
