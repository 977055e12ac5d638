"""Appends a batch of registrations to the event store in one transaction, with asyncpg.

The store stays eventsourcing's: its events table and stored-event format (the rows are made
by ``SignupEvents``' own mapper), its table lock, which makes notification ids commit in
order, and its NOTIFY channel; eventsourcing reads back everything written here. What differs
is the way there: asyncpg on the event loop, with COPY, instead of psycopg on a worker thread
dumping a composite array in Python under the GIL the event loop needs.

The uniqueness check runs under the table lock. Every writer of the events table takes that
lock (eventsourcing's recorder does for each insert), so no claim can be committed between
the check and the insert: a batch's conflicts are all known before it is written, and its
innocent neighbours are written with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
import structlog
from eventsourcing.persistence import Mapper, StoredEvent
from eventsourcing.postgres import PostgresApplicationRecorder
from eventsourcing.utils import get_topic

from application.registering import StoreUnavailable, Submission
from domain.errors import AlreadyRegistered
from domain.reservations import Reservation, reclaim
from infrastructure.event_store import SignupEvents
from infrastructure.postgres_outages import UNAVAILABLE, open_pool
from infrastructure.read_store import asyncpg_dsn
from infrastructure.subject_keys import subject_keys_table

log = structlog.get_logger(__name__)

_RELEASED = get_topic(Reservation.Released)

_COLUMNS = ("originator_id", "originator_version", "topic", "state")


@dataclass
class BatchAppender:
    """Records batches of submissions; each submission's fate is reported separately."""

    pool: asyncpg.Pool
    mapper: Mapper[uuid.UUID]
    schema: str = "public"
    events_table: str = "signup_events"
    keys_table: str = "signup_subject_keys"
    # Tries of one batch when the database goes away; a client has heard 503 long before
    # the last one (GroupCommit.answer_within).
    attempts: int = 5
    first_wait: float = 0.1
    lock_timeout_seconds: int = 5

    @classmethod
    async def open(cls, database_url: str, events: SignupEvents, connections: int) -> BatchAppender:
        """An appender to the store of ``events``, with a pool of ``connections``; it connects
        when the first batch comes, so the API starts whether or not the database is up."""
        recorder = events.recorder
        assert isinstance(recorder, PostgresApplicationRecorder)
        pool = await open_pool(asyncpg_dsn(database_url), connections)
        return cls(
            pool,
            events.mapper,
            schema=recorder.datastore.schema,
            events_table=recorder.events_table_name,
            keys_table=subject_keys_table(recorder.events_table_name),
        )

    async def close(self) -> None:
        await self.pool.close()

    def __post_init__(self) -> None:
        table = f'"{self.schema}"."{self.events_table}"'
        channel = self.events_table.replace(".", "_")
        self._begin_and_lock = (
            f"BEGIN; SET LOCAL lock_timeout = '{self.lock_timeout_seconds}s';"
            f" LOCK TABLE {table} IN EXCLUSIVE MODE"
        )
        self._latest = (
            "SELECT DISTINCT ON (originator_id) originator_id, originator_version, topic"
            f" FROM {table} WHERE originator_id = ANY($1::uuid[])"
            " ORDER BY originator_id, originator_version DESC"
        )
        # What eventsourcing's readers LISTEN for, sent when the transaction commits.
        self._notify_and_commit = f'NOTIFY "{channel}"; COMMIT'

    async def record(self, batch: Sequence[Submission]) -> list[AlreadyRegistered | None]:
        outcomes: list[AlreadyRegistered | None] = [None] * len(batch)
        candidates: list[int] = []
        claimed: dict[uuid.UUID, int] = {}  # which submission claimed each value first
        beaten: list[tuple[int, int]] = []  # (refused submission, the neighbour it clashed with)
        for index, submission in enumerate(batch):
            clash = next((rid for rid in submission.claims if rid in claimed), None)
            if clash is not None:
                outcomes[index] = submission.claims[clash].conflict()
                beaten.append((index, claimed[clash]))
                continue
            claimed.update(dict.fromkeys(submission.claims, index))
            candidates.append(index)
        # Encoded (and encrypted) before the lock is taken: it is most of a batch's work.
        rows = {index: self._rows(batch[index]) for index in candidates}
        await self._append(batch, candidates, rows, outcomes)
        # A submission refused for a neighbour that was then refused itself clashed with a
        # value nobody holds: it gets its own try (a smaller batch, so this ends).
        again = [index for index, neighbour in beaten if outcomes[neighbour] is not None]
        if again:
            retried = await self.record([batch[index] for index in again])
            for index, outcome in zip(again, retried, strict=True):
                outcomes[index] = outcome
        return outcomes

    def _rows(self, submission: Submission) -> list[tuple[Any, ...]]:
        return [_row(self.mapper.to_stored_event(event)) for event in submission.events]

    async def _append(
        self,
        batch: Sequence[Submission],
        group: list[int],
        rows: dict[int, list[tuple[Any, ...]]],
        outcomes: list[AlreadyRegistered | None],
    ) -> None:
        if not group:
            return
        wait = self.first_wait
        for attempt in range(1, self.attempts + 1):
            try:
                await self._transaction(batch, group, rows, outcomes)
                return
            except asyncpg.UniqueViolationError:
                # Only a writer that skips the table lock could get here; isolate its victim.
                if len(group) == 1:
                    raise
                middle = len(group) // 2
                await self._append(batch, group[:middle], rows, outcomes)
                await self._append(batch, group[middle:], rows, outcomes)
                return
            except UNAVAILABLE as error:
                # Perhaps while COMMIT was on its way: the next try finds out (see below).
                log.warning(
                    "event_store_append_interrupted", error=type(error).__name__, attempt=attempt
                )
            if attempt < self.attempts:
                await asyncio.sleep(wait)
                wait *= 2
        raise StoreUnavailable("the event store could not be reached")

    async def _transaction(
        self,
        batch: Sequence[Submission],
        group: list[int],
        rows: dict[int, list[tuple[Any, ...]]],
        outcomes: list[AlreadyRegistered | None],
    ) -> None:
        decided: list[AlreadyRegistered | None] = [None] * len(group)
        # BEGIN with the lock, the check, the keys, the events, NOTIFY with COMMIT.
        async with self.pool.acquire() as conn:
            await conn.execute(self._begin_and_lock)
            try:
                # The registrations too: one found was committed by an earlier try whose
                # acknowledgement was lost. It is recorded, not a clash with itself.
                ids = [rid for index in group for rid in batch[index].claims]
                ids += [batch[index].registration_id for index in group]
                latest = {
                    row["originator_id"]: (row["originator_version"], row["topic"])
                    for row in await conn.fetch(self._latest, ids)
                }
                events: list[tuple[Any, ...]] = []
                keys: list[tuple[uuid.UUID, bytes]] = []
                for position, index in enumerate(group):
                    submission = batch[index]
                    if submission.registration_id in latest:
                        continue
                    conflict = _conflict(submission, latest)
                    if conflict is not None:
                        decided[position] = conflict
                        continue
                    events.extend(self._reclaiming(submission, rows[index], latest))
                    keys.append((submission.registration_id, submission.subject_key))
                if events:
                    # The keys first: an event is never stored without the key that opens it.
                    await conn.copy_records_to_table(
                        self.keys_table,
                        records=keys,
                        columns=("registration_id", "key"),
                        schema_name=self.schema,
                    )
                    await conn.copy_records_to_table(
                        self.events_table,
                        records=events,
                        columns=_COLUMNS,
                        schema_name=self.schema,
                    )
                await conn.execute(self._notify_and_commit if events else "COMMIT")
            except BaseException:
                if not conn.is_closed():
                    with contextlib.suppress(*UNAVAILABLE):
                        await conn.execute("ROLLBACK")
                raise
        # Only once committed: a retried transaction decides afresh.
        for position, index in enumerate(group):
            outcomes[index] = decided[position]

    def _reclaiming(
        self,
        submission: Submission,
        rows: list[tuple[Any, ...]],
        latest: dict[uuid.UUID, tuple[int, str]],
    ) -> list[tuple[Any, ...]]:
        """A new reservation of a released value becomes a reclaim at the version after."""
        if not any(rid in latest for rid in submission.claims):
            return rows
        remade = []
        for event, row in zip(submission.events, rows, strict=True):
            if isinstance(event, Reservation.Reserved) and event.originator_id in latest:
                version = latest[event.originator_id][0]
                row = _row(
                    self.mapper.to_stored_event(
                        reclaim(event.originator_id, version, event.registration_id)
                    )
                )
            remade.append(row)
        return remade


def _row(stored: StoredEvent) -> tuple[Any, ...]:
    return (stored.originator_id, stored.originator_version, stored.topic, stored.state)


def _conflict(
    submission: Submission, latest: dict[uuid.UUID, tuple[int, str]]
) -> AlreadyRegistered | None:
    """The first of its values someone holds: a reservation not released."""
    for reservation_id, claim in submission.claims.items():
        found = latest.get(reservation_id)
        if found is not None and found[1] != _RELEASED:
            return claim.conflict()
    return None
