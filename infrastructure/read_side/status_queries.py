"""Answers status queries: Redis cache, then the status read model, then the event store.

The event store is the last resort for the moments between the 202 and the projectors
catching up: a registration it holds is ``pending`` even before any read model knows it.
Both are asked with asyncpg on pools of their own, so a flood of status queries cannot take
the connections the group commit appends with, and no query waits for a thread.
"""

from __future__ import annotations

import time
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime

import asyncpg
from eventsourcing.persistence import Mapper, StoredEvent

from application.outages import StoreUnavailable
from application.status import RegistrationStatus
from domain.registration import SignupAttempted, UserRegistrationRequested
from domain.statuses import COMPLETED, EXPIRED, PENDING, VERIFIED
from infrastructure.event_store.owner_notifications import TABLE as ATTEMPTS_TABLE
from infrastructure.postgres_outages import UNAVAILABLE
from infrastructure.read_side.status_cache import PollCaches, decode_cached
from projections.registration_status import VIEW as STATUS_VIEW
from projections.shards import user_id_for

# What a poll may cache: completed, and the verdicts after it (a failed registration can
# still be retried to completed). Completed is not final any more: a verdict overwrites it
# (``cache_status``), and a poll caches only where nothing is or over the settlement it read
# (``PollCaches``), so a poll that read ``completed`` just before a verdict cannot put it back,
# however late its write arrives.
_CACHED = frozenset({COMPLETED, VERIFIED, EXPIRED})


_FROM_READ_MODEL = (
    "SELECT registration_id, status, requested_at, updated_at, user_id, reason"
    f" FROM {STATUS_VIEW} WHERE registration_id = $1"
)


@dataclass
class StatusQueries:
    read_pool: asyncpg.Pool  # the status read model (or its replica)
    events_pool: asyncpg.Pool  # the event store
    mapper: Mapper[uuid.UUID]
    caches: PollCaches  # the status cache's writes, after the answers
    # Reads the cache in the rate limiter's next call (``RedisRateLimiter.read``) instead of a
    # command of its own (a redis-py command cost the API ~70 us of CPU).
    reader: Callable[[str], Awaitable[bytes | None]]
    events_table: str = "signup_events"
    keys_table: str = "signup_subject_keys"
    # Ids found nowhere, remembered a few seconds in this process: a client polling a wrong
    # id in a loop costs no query. Safe, because an id is only ever told after its commit (a
    # miss cannot turn into a registration), and bounded, so random ids cannot grow it.
    miss_seconds: float = 5.0
    most_misses: int = 10_000
    _misses: OrderedDict[uuid.UUID, float] = field(init=False, default_factory=OrderedDict)

    def __post_init__(self) -> None:
        # The request, and whether its person's key is still there (erased: unknown).
        self._from_events = (
            f"SELECT e.originator_id, e.originator_version, e.topic, e.state, k.key IS NULL"
            f' AS erased FROM "{self.events_table}" e LEFT JOIN "{self.keys_table}" k'
            " ON k.registration_id = e.originator_id"
            " WHERE e.originator_id = $1 AND e.originator_version = 1"
        )
        self._attempt_at = f"SELECT created_at FROM {ATTEMPTS_TABLE} WHERE attempt_id = $1"
        # Both in one round trip when the read model and the event store share a database
        # (the default): a pending poll was three round trips (Redis, then each table), and
        # polls, a tenth of the requests, were a third of the API's round trips. One
        # statement, one snapshot: the status row, or else the request.
        self._from_either = (
            "SELECT registration_id, status, requested_at, updated_at, user_id, reason,"
            " NULL::text AS topic, NULL::bytea AS state, false AS erased"
            f" FROM {STATUS_VIEW} WHERE registration_id = $1"
            " UNION ALL SELECT e.originator_id, NULL, NULL, NULL, NULL, NULL, e.topic, e.state,"
            f' k.key IS NULL FROM "{self.events_table}" e LEFT JOIN "{self.keys_table}" k'
            " ON k.registration_id = e.originator_id"
            " WHERE e.originator_id = $1 AND e.originator_version = 1"
            f" AND NOT EXISTS (SELECT 1 FROM {STATUS_VIEW} WHERE registration_id = $1)"
        )

    async def find(self, registration_id: uuid.UUID) -> RegistrationStatus | None:
        if self._missed_lately(registration_id):
            return None
        raw = await self._cached(registration_id)
        if raw is not None and (cached := decode_cached(raw)) is not None:
            return cached
        try:
            found, projected = await self._lookup(registration_id)
        except UNAVAILABLE as error:
            # The client learns to retry (503), not that something broke (500).
            raise StoreUnavailable(type(error).__name__) from error
        if found is None:
            self._remember_miss(registration_id)
        elif projected and found.status in _CACHED:
            self.caches.cache(found, raw)
        return found

    async def _lookup(self, registration_id: uuid.UUID) -> tuple[RegistrationStatus | None, bool]:
        """The status, and whether the read model said it (else it is pending, or unknown)."""
        if self.read_pool is self.events_pool:
            row = await self.read_pool.fetchrow(self._from_either, registration_id)
            if row is not None and row["topic"] is None:
                return _status(row), True
            return await self._pending(registration_id, row), False
        found = await self._from_read_model(registration_id)
        if found is not None:
            return found, True
        row = await self.events_pool.fetchrow(self._from_events, registration_id)
        return await self._pending(registration_id, row), False

    def _missed_lately(self, registration_id: uuid.UUID) -> bool:
        missed_at = self._misses.get(registration_id)
        if missed_at is None:
            return False
        if time.monotonic() - missed_at < self.miss_seconds:
            return True
        del self._misses[registration_id]
        return False

    def _remember_miss(self, registration_id: uuid.UUID) -> None:
        self._misses[registration_id] = time.monotonic()
        self._misses.move_to_end(registration_id)
        while len(self._misses) > self.most_misses:
            self._misses.popitem(last=False)

    async def _cached(self, registration_id: uuid.UUID) -> bytes | None:
        """What the cache holds for it: a status (a pending note included), a settlement,
        or nothing."""
        return await self.reader(self.caches.key(registration_id)) or None

    async def _from_read_model(self, registration_id: uuid.UUID) -> RegistrationStatus | None:
        row = await self.read_pool.fetchrow(_FROM_READ_MODEL, registration_id)
        return _status(row) if row is not None else None

    async def _pending(
        self, registration_id: uuid.UUID, row: asyncpg.Record | None
    ) -> RegistrationStatus | None:
        """From the request in the event store (``row``), before the projections have it."""
        if row is None:
            return await self._attempt(registration_id)
        event = self.mapper.to_domain_event(
            StoredEvent(registration_id, 1, row["topic"], bytes(row["state"]))
        )
        if isinstance(event, UserRegistrationRequested):
            if row["erased"]:
                return None  # an erased person's registration is unknown from then on
        elif not isinstance(event, SignupAttempted):
            return None  # a reservation's id is not a registration's
        # A duplicate attempt's id is pending too, until the status projection passes it.
        return RegistrationStatus(registration_id, PENDING, event.timestamp, event.timestamp)

    async def _attempt(self, attempt_id: uuid.UUID) -> RegistrationStatus | None:
        """A duplicate attempt recorded before attempts were events (its notice alone)
        answers as a completed registration would. Since then an attempt is an event, and
        goes pending -> completed through the status projection as a registration does."""
        at: datetime | None = await self.events_pool.fetchval(self._attempt_at, attempt_id)
        if at is None:
            return None
        return RegistrationStatus(attempt_id, COMPLETED, at, at, user_id_for(attempt_id))


def _status(row: asyncpg.Record) -> RegistrationStatus:
    return RegistrationStatus(
        row["registration_id"],
        row["status"],
        row["requested_at"],
        row["updated_at"],
        row["user_id"],
        row["reason"],
    )
