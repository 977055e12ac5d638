"""Projectors: read the notification log in batches, write rows and position in one transaction.

A batch that fails is replayed one event at a time, so the event at fault is parked for the
process manager while the others are projected; a registration whose event is parked has its
later events parked behind it, so its own events stay in order.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import structlog
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from application.error_text import describe
from domain.statuses import COMPLETED, EXPIRED
from infrastructure import metrics
from infrastructure.postgres_outages import is_unavailable
from infrastructure.read_side.event_source import EventSource, Notification
from infrastructure.read_side.failures import MAILER, WAITING, FailureLog
from infrastructure.read_side.read_store import DEAD, ProjectionStore
from infrastructure.read_side.wakeups import wait_for_wake
from infrastructure.stopping import sleep_unless_stopped
from projections.model import Projection
from projections.registration_status import given_failures

if TYPE_CHECKING:
    from infrastructure.verification.challenges import ChallengeIssuer

log = structlog.get_logger(__name__)

# Two lock strengths in one statement, which SQLAlchemy's with_for_update cannot say.
_CHECK_ACTIVE = text(
    "SELECT t.active_table FROM projection_tables t"
    " JOIN projection_tracking k ON k.table_name = :planned"
    " WHERE t.projection = :projection FOR SHARE OF t FOR UPDATE OF k"
)


class TableSwitched(Exception):
    """A rebuild switched the active table while this batch was being prepared."""


@dataclass
class Projector:
    projection: Projection
    store: ProjectionStore
    source: EventSource
    failures: FailureLog
    batch_size: int = 1000
    # The status projector may not pass the slowest of the others.
    gate: Callable[[], Awaitable[int]] | None = None
    # Told, once a live batch has committed, whose rows it wrote (the status projector's
    # settlements of the status cache: see status_cache).
    settle: Callable[[Iterable[uuid.UUID]], None] | None = None
    projected: int = field(default=0, init=False)
    # A running projector is its table's only writer, so it remembers where it is instead of
    # asking the database before every batch; a rebuild's switch or an error clears this.
    _live_table: str | None = field(default=None, init=False)
    _live_position: int | None = field(default=None, init=False)
    # The next batch, read (and decoded) while this one is written: the database's time and
    # ours overlap. Keyed by the table and position it was read for.
    _read_ahead: tuple[str, int, asyncio.Task[tuple[list[Notification], int]]] | None = field(
        default=None, init=False
    )

    @property
    def name(self) -> str:
        return self.projection.name

    async def step(self, table: str | None = None, *, up_to: int | None = None) -> int:
        """Project the next batch into ``table`` (the active one by default).

        Returns how many notifications it moved past, 0 when caught up.
        """
        live = table is None
        if live:
            if self._live_table is None or self._live_position is None:
                self._live_table = await self.store.active_table()
                self._live_position = await self.store.position(self._live_table)
            target, position = self._live_table, self._live_position
        else:
            assert table is not None
            target, position = table, await self.store.position(table)
        try:
            return await self._step(target, position, up_to, live=live)
        except BaseException:
            self._forget()
            raise

    async def live_position(self) -> int:
        """Where the live table is: remembered while running, else read."""
        if self._live_position is not None:
            return self._live_position
        return await self.store.position(await self.store.active_table())

    def _forget(self) -> None:
        self._live_table = self._live_position = None
        self.stop_reading_ahead()

    def stop_reading_ahead(self) -> None:
        if self._read_ahead is not None:
            self._read_ahead[2].cancel()
            self._read_ahead = None

    async def _read(
        self, target: str, position: int, limit: int | None
    ) -> tuple[list[Notification], int]:
        ahead, self._read_ahead = self._read_ahead, None
        if ahead is not None and ahead[:2] == (target, position):
            notes, reached = await ahead[2]
            if reached != position:
                return notes, reached
            # It found nothing new then; look again now, or a catch-up could stop short.
        elif ahead is not None:
            ahead[2].cancel()
        return await self.source.read(position, self.batch_size, self.projection.topics, limit)

    def _read_next(self, target: str, position: int, limit: int | None) -> None:
        task = asyncio.create_task(
            self.source.read(position, self.batch_size, self.projection.topics, limit)
        )
        # A read ahead that is never awaited (a failed write, a stop) must not log its error.
        task.add_done_callback(lambda done: done.cancelled() or done.exception())
        self._read_ahead = (target, position, task)

    async def _step(self, target: str, position: int, up_to: int | None, *, live: bool) -> int:
        limit = up_to
        if self.gate is not None:
            gate = await self.gate()
            limit = gate if limit is None else min(limit, gate)
            if limit <= position:
                # The others have not moved past it: nothing to read. Every append's NOTIFY
                # wakes the status projector too, and in a 20 s c64 run 1,623 of its 1,760
                # reads asked the database for nothing (~8 % of the worker's CPU).
                return 0
        notes, reached = await self._read(target, position, limit)
        if reached == position:
            return 0
        if reached - position >= self.batch_size:
            # A full batch: more are probably waiting. (The gate's limit only ever grows, so
            # reading ahead with this one is safe.)
            self._read_next(target, reached, limit)
        held = await self.failures.held(self.name, (n.registration_id for n in notes))
        try:
            if live and not any(n.registration_id in held for n in notes):
                written = await self._write_at_once(target, notes, reached)
                if written is False:
                    raise TableSwitched
                if written:
                    return self._passed(notes, position, reached, live=live)
            async with self.store.engine.begin() as conn:
                if live:
                    await self._check_active(conn, target)
                else:
                    await self.store.lock(conn, target)
                waiting = [n for n in notes if n.registration_id in held]
                if waiting:
                    raise _Isolate
                await self.write(conn, target, notes, reached, live=live)
        except TableSwitched:
            self._forget()
            return 1
        except Exception as error:
            if is_unavailable(error):
                raise
            await self._one_by_one(target, notes, reached, held, live=live)
        return self._passed(notes, position, reached, live=live)

    async def _write_at_once(
        self, table: str, notes: Sequence[Notification], position: int
    ) -> bool | None:
        """A live batch in one round trip (``ProjectionStore.write_batch``): True once written,
        False when the table was switched, None when it must go through ``write``."""
        rows = [row for note in notes for row in self.projection.reduce(note.registration)]
        return await self.store.write_batch(table, rows, position)

    def _passed(
        self, notes: Sequence[Notification], position: int, reached: int, *, live: bool
    ) -> int:
        if live:
            self._live_position = reached
            if self.settle is not None:
                self.settle(n.registration_id for n in notes)
        self.projected += len(notes)
        metrics.PROJECTED.labels(self.name).inc(len(notes))
        return reached - position

    async def write(
        self,
        conn: AsyncConnection,
        table: str,
        notes: Sequence[Notification],
        position: int,
        *,
        live: bool = False,
    ) -> None:
        rows = [row for note in notes for row in self.projection.reduce(note.registration)]
        await self.store.write(table, rows, position, conn)

    async def apply(self, note: Notification) -> None:
        """Project one event into the active table without moving the position (a retry)."""
        table = await self.store.active_table()
        async with self.store.writing(table) as conn:
            await self.write(conn, table, [note], position=0)

    async def _check_active(self, conn: AsyncConnection, planned: str) -> None:
        # FOR SHARE of the catalog row: a rebuild switching tables holds it FOR UPDATE, so
        # this batch either commits before the switch (and the rebuild's catch-up sees it) or
        # sees it. FOR UPDATE of the table's tracking row: what ProjectionStore.write needs
        # (an erasure's lock), in the same round trip.
        result = await conn.execute(_CHECK_ACTIVE, {"projection": self.name, "planned": planned})
        if result.scalar_one_or_none() != planned:
            raise TableSwitched

    async def _one_by_one(
        self,
        table: str,
        notes: Sequence[Notification],
        reached: int,
        held: set[Any],
        *,
        live: bool,
    ) -> None:
        for note in notes:
            if note.registration_id in held:
                await self.failures.park(self.name, note, WAITING, first_attempt=False)
            else:
                try:
                    async with self.store.writing(table) as conn:
                        await self.write(conn, table, [note], note.id, live=live)
                    continue
                except Exception as error:
                    if is_unavailable(error):
                        raise
                    log.warning(
                        "projection_failed",
                        projection=self.name,
                        notification_id=note.id,
                        error=describe(error),
                    )
                    await self.failures.park(self.name, note, describe(error), first_attempt=True)
                    held.add(note.registration_id)
            # The failure is recorded before the position passes the event, so whoever sees
            # the new position also sees the failure.
            async with self.store.writing(table) as conn:
                await self.store.write(table, [], note.id, conn)
        async with self.store.writing(table) as conn:
            await self.store.write(table, [], reached, conn)


class _Isolate(Exception):
    """Some events of the batch must be parked: go through it one event at a time."""


@dataclass
class StatusProjector(Projector):
    """Writes each registration's status from the failures the other projectors recorded,
    and, in the same transaction, the verification (a challenge and its first message) of
    each registration it completes."""

    issuer: ChallengeIssuer | None = None

    async def write(
        self,
        conn: AsyncConnection,
        table: str,
        notes: Sequence[Notification],
        position: int,
        *,
        live: bool = False,
    ) -> None:
        if live:
            # An expiry's verdict is the first of its steps: ``expired`` says its email and
            # CPF/CNPJ are free again, and they are not until the sweep has released them, so
            # the sweep writes it, last (ExpireRegistrations; its rerun after a crash does
            # too). A rebuild writes it from the event: its table answers nothing until the
            # switch.
            notes = [n for n in notes if n.registration.outcome != EXPIRED]
        rows = [row for note in notes for row in self.projection.reduce(note.registration)]
        if rows:
            # FOR SHARE: the process manager's resolve/give-up waits for this transaction,
            # and then its own update sees the row written here. A failed send is the
            # mailer's, not the registration's: it changes no status.
            result = await conn.execute(
                text(
                    "SELECT registration_id, state FROM projection_failures"
                    " WHERE registration_id = ANY(:ids) AND projection <> :mailer FOR SHARE"
                ),
                {"ids": [row["registration_id"] for row in rows], "mailer": MAILER},
            )
            states: dict[Any, set[str]] = {}
            for rid, state in result.all():
                states.setdefault(rid, set()).add(state)
            held = [states.get(row["registration_id"], set()) for row in rows]
            rows = [
                given_failures(row, dead_lettered=DEAD in its, waiting=bool(its))
                for row, its in zip(rows, held, strict=True)
            ]
        await self.store.write(table, rows, position, conn)
        if self.issuer is not None and rows:
            # The registrations this batch completes: with an address (a message goes), or
            # duplicate attempts' ids (none goes, but they expire as the others do); the
            # issuer skips the ones issued before.
            addressed = {n.registration_id for n in notes if n.registration.details is not None}
            decoys = {n.registration_id for n in notes if n.registration.attempt}
            completed = [
                (row["registration_id"], row["requested_at"])
                for row in rows
                if row["status"] == COMPLETED
            ]
            await self.issuer.issue(conn, [c for c in completed if c[0] in addressed])
            await self.issuer.issue(conn, [c for c in completed if c[0] in decoys], unmailed=True)

    async def apply(self, note: Notification) -> None:
        raise NotImplementedError("the status projector is not retried event by event")

    async def _write_at_once(
        self, table: str, notes: Sequence[Notification], position: int
    ) -> bool | None:
        # Its batch reads the failures and issues verifications in its transaction.
        return None


def until_next_fill(fill: float, now: float) -> float:
    """How long a projector that has just written a partial batch waits: until the next
    multiple of ``fill`` seconds on the monotonic clock (0 when it does not wait).

    The clock is the machine's, so the projectors that wait step again at the same moments,
    and the status projector, which follows the slowest of them, steps once after them. Each
    waiting ``fill`` from the end of its own step, they drifted apart: the status projector
    waited for the latest of three unrelated moments and stepped about twice a cycle, a
    registration took 286-292 ms to complete (p50) and the bench's polls asked that much longer.
    Aligned: 217-221 ms, the same CPU a signup (docs/performance.md)."""
    if fill <= 0:
        return 0.0
    return fill - now % fill


async def run_forever(
    projector: Projector,
    stop: asyncio.Event,
    idle: tuple[float, float] = (0.01, 0.25),
    backoff: float = 1.0,
    fill: float = 0.05,
    wake: asyncio.Event | None = None,
    moved: Callable[[], None] | None = None,
) -> None:
    """Step until ``stop`` is set; back off while a database is down.

    A full batch is followed at once by the next. After a partial one it waits for the next
    ``fill`` tick (``until_next_fill``): under a steady trickle, stepping again at once wrote
    batches of a few events, each paying a batch's fixed costs (six queries), and the worker
    burnt a core at 300/s.
    When caught up it waits for ``wake`` (set when events are appended) and polls anyway
    after ``idle[0]`` seconds, doubling up to ``idle[1]`` while nothing comes. ``moved`` is
    told whenever this projector has moved (the status projector waits for the others).
    """
    pause = idle[0]
    try:
        while not stop.is_set():
            try:
                passed = await projector.step()
            except Exception as error:
                if is_unavailable(error):
                    log.warning(
                        "projector_unavailable", projection=projector.name, error=describe(error)
                    )
                else:
                    # Not an outage: something in the store this projector cannot get past (an
                    # event that does not open, as one written with another cipher key did).
                    # It is tried again, but every later registration waits behind it: an
                    # operator must be told so, not that the database is down.
                    log.error("projector_stuck", projection=projector.name, error=describe(error))
                await sleep_unless_stopped(stop, backoff)
                continue
            if passed and moved is not None:
                moved()
            if passed >= projector.batch_size:
                pause = idle[0]
            elif passed:
                pause = idle[0]
                await sleep_unless_stopped(stop, until_next_fill(fill, time.monotonic()))
            else:
                await wait_for_wake(stop, wake, pause)
                pause = min(idle[1], pause * 2)
    finally:
        projector.stop_reading_ahead()
