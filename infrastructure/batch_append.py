"""Appends a batch of registrations to the event store in one transaction, with asyncpg.

The store stays eventsourcing's: its events table and stored-event format (the rows are made
by ``SignupEvents``' own mapper), its table lock, which makes notification ids commit in
order, and its NOTIFY channel; eventsourcing reads back everything written here. What differs
is the way there: asyncpg on the event loop, with COPY, instead of psycopg on a worker thread
dumping a composite array in Python under the GIL the event loop needs.

A batch is four round trips, under the table lock (every writer of the events table takes
it, as eventsourcing's recorder does): the claims are inserted where free (the claims
table's primary key decides, and no other appender runs meanwhile); a registration that did
not get every value it claims gives back the ones it got and is refused; the others' keys and
events are inserted; COMMIT. Its innocent neighbours are written with it, whatever a batch
holds. Each round trip waits a turn of the event loop, which under load is a millisecond:
fewer round trips, shorter batches, less time for a signup.
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

from application.registering import StoreUnavailable, Submission
from domain.errors import AlreadyRegistered
from infrastructure.claims import claims_table
from infrastructure.event_store import SignupEvents
from infrastructure.postgres_outages import UNAVAILABLE, open_pool
from infrastructure.read_store import asyncpg_dsn
from infrastructure.subject_keys import subject_keys_table

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
    claims_table: str = "signup_claims"
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
            claims_table=claims_table(recorder.events_table_name),
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
        claims = f'"{self.schema}"."{self.claims_table}"'
        keys = f'"{self.schema}"."{self.keys_table}"'
        # The values each registration claims, taken where free (the primary key decides,
        # and the lock keeps other appenders out meanwhile); and which of the registrations
        # are stored already, by a try whose acknowledgement was lost.
        self._claim = (
            f"WITH taken AS (INSERT INTO {claims} (claim_id, registration_id, kind)"
            " SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::text[])"
            " ON CONFLICT (claim_id) DO NOTHING RETURNING claim_id)"
            " SELECT claim_id AS id FROM taken"
            f" UNION ALL SELECT originator_id FROM {table}"
            " WHERE originator_id = ANY($4::uuid[]) AND originator_version = 1"
        )
        # What refused registrations took back, then the keys (an event is never stored
        # without the key that opens it) and the events, and the NOTIFY eventsourcing's
        # readers LISTEN for (sent at COMMIT).
        give_back = f"DELETE FROM {claims} WHERE claim_id = ANY($1::uuid[])"
        self._give_back = give_back
        self._append_all = (
            f"WITH given_back AS ({give_back}),"
            f" keys AS (INSERT INTO {keys} (registration_id, key)"
            " SELECT * FROM unnest($2::uuid[], $3::bytea[])),"
            f" events AS (INSERT INTO {table} ({', '.join(_COLUMNS)})"
            " SELECT * FROM unnest($4::uuid[], $5::bigint[], $6::text[], $7::bytea[]))"
            f" SELECT pg_notify('{channel}', '')"
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
        # Four round trips: BEGIN with the lock, the claims, the rest, COMMIT.
        async with self.pool.acquire() as conn:
            await conn.execute(self._begin_and_lock)
            try:
                wanted = [
                    (claim_id, batch[index].registration_id, claim.kind)
                    for index in group
                    for claim_id, claim in batch[index].claims.items()
                ]
                won = {
                    row["id"]
                    for row in await conn.fetch(
                        self._claim,
                        *_columns(wanted, 3),
                        [batch[index].registration_id for index in group],
                    )
                }
                events: list[tuple[Any, ...]] = []
                keys: list[tuple[uuid.UUID, bytes]] = []
                given_back: list[uuid.UUID] = []
                for position, index in enumerate(group):
                    submission = batch[index]
                    if submission.registration_id in won:
                        continue  # recorded by an earlier try
                    lost = next(
                        (
                            claim
                            for claim_id, claim in submission.claims.items()
                            if claim_id not in won
                        ),
                        None,
                    )
                    if lost is not None:
                        decided[position] = lost.conflict()
                        given_back += [c for c in submission.claims if c in won]
                        continue
                    events.extend(rows[index])
                    keys.append((submission.registration_id, submission.subject_key))
                if events:
                    await conn.execute(
                        self._append_all, given_back, *_columns(keys, 2), *_columns(events, 4)
                    )
                elif given_back:
                    await conn.execute(self._give_back, given_back)
                await conn.execute("COMMIT")
            except BaseException:
                if not conn.is_closed():
                    with contextlib.suppress(*UNAVAILABLE):
                        await conn.execute("ROLLBACK")
                raise
        # Only once committed: a retried transaction decides afresh.
        for position, index in enumerate(group):
            outcomes[index] = decided[position]


def _columns(rows: list[tuple[Any, ...]], width: int) -> list[list[Any]]:
    """Rows as one list per column, for unnest()."""
    return [[row[column] for row in rows] for column in range(width)]


def _row(stored: StoredEvent) -> tuple[Any, ...]:
    return (stored.originator_id, stored.originator_version, stored.topic, stored.state)
