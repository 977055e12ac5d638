"""Appends a batch of registrations to the event store in one transaction, with asyncpg.

The store stays eventsourcing's: its events table and stored-event format (the rows are made
by ``SignupEvents``' own mapper), the lock every writer takes so that notification ids
commit in order, and its NOTIFY channel; eventsourcing reads back everything written here.
What differs is the way there: asyncpg on the event loop, with COPY, instead of psycopg on a
worker thread dumping a composite array in Python under the GIL the event loop needs.

A batch is one round trip: a call of the store's append function
(``infrastructure.event_store.append_function``), which takes the append lock every writer
of the events table takes (eventsourcing's recorder too, see ``SignupRecorder``), claims the
values where free, refuses the registrations that did not get all of theirs, writes the
others' keys and events, and commits. Its innocent neighbours are written with it, whatever
a batch holds.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
import structlog
from eventsourcing.persistence import Mapper, StoredEvent
from eventsourcing.postgres import PostgresApplicationRecorder

from application.outages import StoreUnavailable
from application.registering import Submission
from domain.errors import AlreadyRegistered
from infrastructure.event_store import append_function
from infrastructure.event_store.store import SignupEvents
from infrastructure.event_store.subject_keys import subject_keys_table
from infrastructure.postgres_outages import UNAVAILABLE, open_pool
from infrastructure.read_side.read_store import asyncpg_dsn

log = structlog.get_logger(__name__)


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
        function = f'"{self.schema}"."{append_function.function_name(self.events_table)}"'
        self._append_batch = (
            f"SELECT refused_registration, held_claim FROM {function}"
            "($1::uuid[], $2::uuid[], $3::text[], $4::uuid[], $5::bytea[],"
            " $6::uuid[], $7::bigint[], $8::text[], $9::bytea[], $10::text)"
        )

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
                # Only a writer that skips the append lock could get here; isolate its victim.
                if len(group) == 1:
                    raise
                middle = len(group) // 2
                await self._append(batch, group[:middle], rows, outcomes)
                await self._append(batch, group[middle:], rows, outcomes)
                return
            except asyncpg.UndefinedFunctionError:
                # An API of this version before `signup migrate` has run on its store (the
                # deploy order is wrong): every signup would fail alike, so clients hear 503
                # and retry while the operator is told what to do.
                log.error("event_store_not_migrated", hint="run `signup migrate`")
                raise StoreUnavailable("the event store is not migrated") from None
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
        wanted = [
            (claim_id, batch[index].registration_id, claim.kind)
            for index in group
            for claim_id, claim in batch[index].claims.items()
        ]
        keys = [
            (submission.registration_id, submission.subject_key)
            for submission in (batch[index] for index in group)
            if submission.subject_key is not None
        ]
        events = [row for index in group for row in rows[index]]
        # One statement outside a transaction: its own transaction, committed before it
        # answers (see ``infrastructure.event_store.append_function``).
        async with self.pool.acquire() as conn:
            answer = await conn.fetch(
                self._append_batch,
                *_columns(wanted, 3),
                *_columns(keys, 2),
                *_columns(events, 4),
                f"{self.lock_timeout_seconds}s",
            )
        held: dict[uuid.UUID, set[uuid.UUID]] = {}
        for registration_id, claim_id in answer:
            if claim_id is not None:
                held.setdefault(registration_id, set()).add(claim_id)
        # Only once committed: a retried transaction decides afresh. A registration stored by
        # an earlier try comes back without a claim, and is recorded.
        for index in group:
            submission = batch[index]
            lost = held.get(submission.registration_id)
            if lost:
                claim = next(c for claim_id, c in submission.claims.items() if claim_id in lost)
                outcomes[index] = claim.conflict()


def _columns(rows: list[tuple[Any, ...]], width: int) -> list[list[Any]]:
    """Rows as one list per column, for unnest()."""
    return [[row[column] for row in rows] for column in range(width)]


def _row(stored: StoredEvent) -> tuple[Any, ...]:
    return (stored.originator_id, stored.originator_version, stored.topic, stored.state)
