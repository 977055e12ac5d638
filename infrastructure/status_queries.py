"""Answers status queries: Redis cache, then the status read model, then the event store.

The event store is the last resort for the moments between the 202 and the projectors
catching up: a registration it holds is ``pending`` even before any read model knows it.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass

import msgspec
import structlog
from eventsourcing.persistence import InterfaceError, OperationalError
from redis.asyncio import Redis
from redis.exceptions import RedisError
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from application.registering import StoreUnavailable
from application.status import RegistrationStatus
from domain.registration import UserRegistrationRequested
from infrastructure.event_store import SignupEvents
from infrastructure.owner_notifications import OwnerNotifications
from infrastructure.projector import is_unavailable
from infrastructure.subject_keys import SignupRecorder
from projections.registration_status import COMPLETED, PENDING
from projections.shards import user_id_for

log = structlog.get_logger(__name__)

STATUS_CACHE_PREFIX = "signup:status:"
_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder(RegistrationStatus).decode


@dataclass
class StatusQueries:
    read_engine: AsyncEngine
    events: SignupEvents
    redis: Redis
    cache_seconds: int
    # Ids given to duplicate attempts in the enumeration-resistant mode.
    attempts: OwnerNotifications | None = None
    prefix: str = STATUS_CACHE_PREFIX

    async def find(self, registration_id: uuid.UUID) -> RegistrationStatus | None:
        cached = await self._cached(registration_id)
        if cached is not None:
            return cached
        try:
            found = await self._from_read_model(registration_id)
            if found is None:
                return await asyncio.to_thread(self._from_event_store, registration_id)
        except (OperationalError, InterfaceError) as error:
            raise StoreUnavailable(str(error)) from error
        except Exception as error:
            if is_unavailable(error):
                # The client learns to retry (503), not that something broke (500).
                raise StoreUnavailable(repr(error)) from error
            raise
        if found.status == COMPLETED:
            # Only completed is final: a failed registration can still be retried to completed.
            await self._cache(found)
        return found

    async def _cached(self, registration_id: uuid.UUID) -> RegistrationStatus | None:
        try:
            raw = await self.redis.get(self.prefix + str(registration_id))
        except RedisError as error:
            log.warning("status_cache_unavailable", error=str(error))
            return None
        return _decode(raw) if raw else None

    async def _cache(self, status: RegistrationStatus) -> None:
        try:
            await self.redis.set(
                self.prefix + str(status.registration_id), _encode(status), ex=self.cache_seconds
            )
        except RedisError as error:
            log.warning("status_cache_unavailable", error=str(error))

    async def _from_read_model(self, registration_id: uuid.UUID) -> RegistrationStatus | None:
        async with self.read_engine.connect() as conn:
            row = (
                await conn.execute(
                    text(
                        "SELECT registration_id, status, requested_at, updated_at, user_id, reason"
                        " FROM registration_status WHERE registration_id = :id"
                    ),
                    {"id": registration_id},
                )
            ).first()
        return RegistrationStatus(**row._mapping) if row is not None else None

    def _from_event_store(self, registration_id: uuid.UUID) -> RegistrationStatus | None:
        stored = self.events.recorder.select_events(registration_id, limit=1)
        if not stored:
            return self._attempt(registration_id)
        event = self.events.mapper.to_domain_event(stored[0])
        if not isinstance(event, UserRegistrationRequested):
            return None  # a reservation's id is not a registration's
        recorder = self.events.recorder
        assert isinstance(recorder, SignupRecorder)
        if recorder.erased(registration_id):
            return None  # an erased person's registration is unknown from then on
        return RegistrationStatus(registration_id, PENDING, event.timestamp, event.timestamp)

    def _attempt(self, attempt_id: uuid.UUID) -> RegistrationStatus | None:
        """A duplicate attempt's id answers as a completed registration would: in the
        enumeration-resistant mode the status must not tell a duplicate from a new signup
        either (the user id is derived as for any registration, and exists nowhere)."""
        if self.attempts is None:
            return None
        at = self.attempts.attempted_at(attempt_id)
        if at is None:
            return None
        return RegistrationStatus(attempt_id, COMPLETED, at, at, user_id_for(attempt_id))
