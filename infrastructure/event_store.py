"""The event store: eventsourcing on PostgreSQL, written to in group commits.

One transaction per request caps near 1,000 appends/s because the recorder locks the events
table for each insert, so concurrent submissions are gathered into one ``save()``. A conflict
must not reject its neighbours: duplicates inside a batch and values already reserved are
found before the save, and a conflict that still slips in (another process won the race
between the check and the save) is isolated by splitting the batch.
"""

from __future__ import annotations

import asyncio
import base64
import time
import uuid
from collections import deque
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import structlog
from eventsourcing.application import Application
from eventsourcing.persistence import (
    IntegrityError,
    InterfaceError,
    JSONTranscoder,
    OperationalError,
    Transcoding,
)
from eventsourcing.postgres import PostgresApplicationRecorder
from eventsourcing.utils import get_topic
from psycopg.sql import SQL, Identifier

from application.registering import StoreUnavailable, Submission
from domain.errors import AlreadyRegistered
from domain.reservations import Reservation, holder, reclaim
from infrastructure import metrics

log = structlog.get_logger(__name__)


class BytesAsBase64(Transcoding):
    """Sealed personal data is bytes; JSON has no bytes."""

    type = bytes
    name = "bytes_b64"

    def encode(self, obj: bytes) -> str:
        return base64.b64encode(obj).decode()

    def decode(self, data: str) -> bytes:
        return base64.b64decode(data)


class SignupEvents(Application[uuid.UUID]):
    """The application whose recorder holds every registration and reservation event."""

    name = "signup"

    def register_transcodings(self, transcoder: JSONTranscoder) -> None:
        super().register_transcodings(transcoder)
        transcoder.register(BytesAsBase64())

    def holding(self, reservation_id: uuid.UUID) -> tuple[int, uuid.UUID | None] | None:
        """A reservation's latest version and who holds its value then (None once released);
        None when the value was never claimed."""
        stored = self.recorder.select_events(reservation_id, desc=True, limit=1)
        if not stored:
            return None
        return stored[0].originator_version, holder(self.mapper.to_domain_event(stored[0]))


CIPHER_TOPIC = "eventsourcing.cryptography:AESCipher"


def cipher_env(cipher_key: str | None) -> dict[str, str]:
    """AES-GCM over each stored event's state: names, documents and emails are never on
    disk in the clear (the reservation ids are HMACs, see domain/reservations.py)."""
    return {"CIPHER_TOPIC": CIPHER_TOPIC, "CIPHER_KEY": cipher_key} if cipher_key else {}


def postgres_env(
    database_url: str, pool_size: int, *, create_table: bool, cipher_key: str | None = None
) -> dict[str, str]:
    """eventsourcing is configured by environment-style keys, not by a DSN."""
    parts = urlsplit(database_url)
    query = parse_qs(parts.query)
    host = query.get("host", [parts.hostname or "localhost"])[0]
    return {
        "PERSISTENCE_MODULE": "eventsourcing.postgres",
        "POSTGRES_DBNAME": unquote(parts.path.lstrip("/")) or "postgres",
        "POSTGRES_HOST": host,
        "POSTGRES_PORT": str(parts.port or 5432),
        "POSTGRES_USER": unquote(parts.username or "postgres"),
        "POSTGRES_PASSWORD": unquote(parts.password or ""),
        "POSTGRES_POOL_SIZE": str(pool_size),
        "POSTGRES_MAX_OVERFLOW": str(pool_size),
        # A round trip per batch (not per request), so that after a database restart the
        # first appends do not meet the pool's dead connections.
        "POSTGRES_PRE_PING": "y",
        # Also how long a request waits for a pooled connection: when the database is down,
        # the client hears 503 within seconds instead of half a minute.
        "POSTGRES_CONNECT_TIMEOUT": "2",
        "CREATE_TABLE": "y" if create_table else "n",
        # Writes each registration's subject key in the transaction of its events.
        "APPLICATION_RECORDER_TOPIC": "infrastructure.subject_keys:SignupRecorder",
        **cipher_env(cipher_key),
    }


def open_event_store(
    database_url: str,
    pool_size: int = 8,
    *,
    create_table: bool = False,
    cipher_key: str | None = None,
) -> SignupEvents:
    return SignupEvents(
        env=postgres_env(database_url, pool_size, create_table=create_table, cipher_key=cipher_key)
    )


@dataclass(slots=True)
class BatchRecorder:
    """Synchronous: appends a batch of submissions, reporting each one's fate."""

    app: SignupEvents

    def record(self, batch: Sequence[Submission]) -> list[AlreadyRegistered | None]:
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
        latest = self._latest(set(claimed))
        taken = {rid for rid, (_, topic) in latest.items() if topic != _RELEASED}
        # Values whose holder was erased: claimed again at the version after the release.
        free_again = {
            rid: version for rid, (version, topic) in latest.items() if topic == _RELEASED
        }
        ready: list[int] = []
        for index in candidates:
            conflict = self._conflict(batch[index], taken)
            if conflict is None:
                ready.append(index)
            else:
                outcomes[index] = conflict
        self._save_isolating(batch, ready, outcomes, free_again)
        # A submission refused for a neighbour that was then refused itself clashed with a
        # value nobody holds: it gets its own try (a smaller batch, so this ends).
        again = [index for index, neighbour in beaten if outcomes[neighbour] is not None]
        if again:
            retried = self.record([batch[index] for index in again])
            for index, outcome in zip(again, retried, strict=True):
                outcomes[index] = outcome
        return outcomes

    def reserved(self, reservation_ids: set[uuid.UUID]) -> set[uuid.UUID]:
        """Which of these aggregates are held: a reservation not released, or a registration
        that exists. One indexed query for the whole batch."""
        latest = self._latest(reservation_ids)
        return {rid for rid, (_, topic) in latest.items() if topic != _RELEASED}

    def _latest(self, ids: set[uuid.UUID]) -> dict[uuid.UUID, tuple[int, str]]:
        """Each existing aggregate's latest version and topic."""
        if not ids:
            return {}
        recorder = self.app.recorder
        assert isinstance(recorder, PostgresApplicationRecorder)
        statement = SQL(
            "SELECT DISTINCT ON (originator_id) originator_id, originator_version, topic"
            " FROM {}.{} WHERE originator_id = ANY(%s)"
            " ORDER BY originator_id, originator_version DESC"
        ).format(Identifier(recorder.datastore.schema), Identifier(recorder.events_table_name))
        with recorder.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(statement, (list(ids),))
            return {
                row["originator_id"]: (row["originator_version"], row["topic"])
                for row in curs.fetchall()
            }

    @staticmethod
    def _conflict(submission: Submission, taken: set[uuid.UUID]) -> AlreadyRegistered | None:
        for reservation_id, claim in submission.claims.items():
            if reservation_id in taken:
                return claim.conflict()
        return None

    def _save_isolating(
        self,
        batch: Sequence[Submission],
        group: list[int],
        outcomes: list[AlreadyRegistered | None],
        free_again: dict[uuid.UUID, int],
    ) -> None:
        if not group:
            return
        try:
            self.app.save(
                *[
                    _reclaiming(event, free_again)
                    for index in group
                    for event in batch[index].events
                ],
                subject_keys=[
                    (batch[index].registration_id, batch[index].subject_key) for index in group
                ],
            )
        except IntegrityError:
            if len(group) == 1:
                submission = batch[group[0]]
                if self.reserved({submission.registration_id}):
                    # Its own events are there: an earlier attempt committed but its
                    # acknowledgement was lost and the recorder tried again. Recorded.
                    outcomes[group[0]] = None
                    return
                outcomes[group[0]] = self._conflict(
                    submission, self.reserved(set(submission.claims))
                )
                if outcomes[group[0]] is None:
                    raise  # not a reservation clash: a real fault, not the client's
                return
            middle = len(group) // 2
            self._save_isolating(batch, group[:middle], outcomes, free_again)
            self._save_isolating(batch, group[middle:], outcomes, free_again)


_RELEASED = get_topic(Reservation.Released)


def _reclaiming(event: Any, free_again: dict[uuid.UUID, int]) -> Any:
    """A new reservation of a released value becomes a reclaim at the version after."""
    if isinstance(event, Reservation.Reserved) and event.originator_id in free_again:
        return reclaim(event.originator_id, free_again[event.originator_id], event.registration_id)
    return event


@dataclass(slots=True)
class _Pending:
    submission: Submission
    future: asyncio.Future[None]


@dataclass
class GroupCommit:
    """Gathers concurrent submissions into batches, bounded by size and a few milliseconds.

    ``append`` resolves only after its batch is committed, so a 202 means durable.
    """

    recorder: BatchRecorder
    max_size: int = 500
    max_wait: float = 0.002
    concurrency: int = 2
    # A client hears 503 after this long even if its batch is still being retried; should
    # the batch commit after all, the retry finds the registration (409, or the replay).
    answer_within: float = 7.0
    # The most recent batch sizes, for the bench and metrics.
    batch_sizes: deque[int] = field(default_factory=lambda: deque(maxlen=10_000))
    _queue: asyncio.Queue[_Pending] = field(init=False)
    _slots: asyncio.Semaphore = field(init=False)
    _executor: ThreadPoolExecutor = field(init=False)
    _runner: asyncio.Task[None] | None = field(init=False, default=None)
    _in_flight: set[asyncio.Task[None]] = field(init=False, default_factory=set)

    def __post_init__(self) -> None:
        self._queue = asyncio.Queue()
        self._slots = asyncio.Semaphore(self.concurrency)
        self._executor = ThreadPoolExecutor(self.concurrency, thread_name_prefix="append")

    def start(self) -> None:
        self._runner = asyncio.get_running_loop().create_task(self._run(), name="group-commit")

    async def stop(self) -> None:
        """Commit what is queued, then stop."""
        while not self._queue.empty():
            await asyncio.sleep(0.005)
        if self._runner is not None:
            self._runner.cancel()
            await asyncio.gather(self._runner, return_exceptions=True)
        await asyncio.gather(*self._in_flight, return_exceptions=True)
        self._executor.shutdown(wait=True)

    async def append(self, submission: Submission) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        # Its outcome is read here, or dropped once nobody waits for it any more.
        future.add_done_callback(lambda done: done.cancelled() or done.exception())
        await self._queue.put(_Pending(submission, future))
        try:
            await asyncio.wait_for(asyncio.shield(future), self.answer_within)
        except TimeoutError:
            metrics.APPEND_TIMEOUTS.inc()
            raise StoreUnavailable("the event store did not confirm in time") from None

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self._queue.get()]
            deadline = loop.time() + self.max_wait
            while len(batch) < self.max_size:
                if not self._queue.empty():
                    batch.append(self._queue.get_nowait())
                    continue
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(self._queue.get(), remaining))
                except TimeoutError:
                    break
            await self._slots.acquire()
            task = loop.create_task(self._commit(batch))
            self._in_flight.add(task)
            task.add_done_callback(self._in_flight.discard)

    async def _commit(self, batch: list[_Pending]) -> None:
        try:
            loop = asyncio.get_running_loop()
            submissions = [pending.submission for pending in batch]
            started = time.perf_counter()
            try:
                outcomes: Sequence[Any] = await loop.run_in_executor(
                    self._executor, self.recorder.record, submissions
                )
                metrics.APPEND_SECONDS.observe(time.perf_counter() - started)
                recorded = [
                    s for s, outcome in zip(submissions, outcomes, strict=True) if outcome is None
                ]
                metrics.REGISTRATIONS_RECORDED.inc(len(recorded))
                metrics.EVENTS_APPENDED.inc(sum(len(s.events) for s in recorded))
            except (OperationalError, InterfaceError) as error:
                log.error("event_store_unavailable", error=str(error), batch_size=len(batch))
                failure = StoreUnavailable(str(error))
                outcomes = [failure] * len(batch)
            except Exception as error:  # a bug must fail its batch, never hang its clients
                log.exception("append_failed", batch_size=len(batch))
                outcomes = [error] * len(batch)
            self.batch_sizes.append(len(batch))
            metrics.BATCH_SIZE.observe(len(batch))
            for pending, outcome in zip(batch, outcomes, strict=True):
                if pending.future.done():
                    continue
                if outcome is None:
                    pending.future.set_result(None)
                else:
                    pending.future.set_exception(outcome)
        finally:
            self._slots.release()
