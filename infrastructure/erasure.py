"""Erasure's parts: who a subject id is, shredding their key, clearing read models and cache."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from redis.asyncio import Redis
from sqlalchemy import text

from domain.reservations import Claim
from infrastructure.event_store import SignupEvents
from infrastructure.idempotency import RedisIdempotencyStore
from infrastructure.owner_notifications import OwnerNotifications
from infrastructure.read_side import ReadSide
from infrastructure.status_queries import STATUS_CACHE_PREFIX
from infrastructure.subject_keys import SignupRecorder
from projections.model import REGISTRATION_REQUESTED
from projections.shards import ShardMap, logical_shard


@dataclass
class EventStoreSubjects:
    read_side: ReadSide
    events: SignupEvents
    reservation_key: bytes

    async def registration_of(self, subject_id: uuid.UUID) -> uuid.UUID | None:
        settings = self.read_side.settings
        shard_map = ShardMap(settings.logical_shards, settings.shard_urls)
        # A user id: the shard its hash names holds it.
        physical = shard_map.physical_index(logical_shard(subject_id, shard_map.logical_shards))
        engine = self.read_side.shard_engines[physical]
        async with engine.connect() as conn:
            found = (
                await conn.execute(
                    text("SELECT registration_id FROM users WHERE user_id = :id"),
                    {"id": subject_id},
                )
            ).scalar_one_or_none()
        if found is not None:
            return uuid.UUID(str(found))
        # A registration id: a pending or failed registration has no user yet.
        async with self.read_side.events_engine.connect() as conn:
            is_registration = (
                await conn.execute(
                    text(
                        f'SELECT 1 FROM "{self.read_side.source.table}" WHERE originator_id = :id'
                        " AND originator_version = 1 AND topic = :topic"
                    ),
                    {"id": subject_id, "topic": REGISTRATION_REQUESTED},
                )
            ).first()
        return subject_id if is_registration else None

    async def registration_holding(self, claim: Claim) -> uuid.UUID | None:
        return await asyncio.to_thread(
            self._recorder.holder_of, claim.reservation_id(self.reservation_key)
        )

    async def shred(self, registration_id: uuid.UUID) -> bool:
        return await asyncio.to_thread(self._recorder.erase, registration_id)

    async def release(self, registration_id: uuid.UUID) -> int:
        return await asyncio.to_thread(self._recorder.release, registration_id)

    @property
    def _recorder(self) -> SignupRecorder:
        recorder = self.events.recorder
        assert isinstance(recorder, SignupRecorder)
        return recorder


@dataclass
class ReadModelsAndCache:
    """Every copy of a person outside the event store: the read models, the dead letters,
    the status cache, the Idempotency-Key record of their signup, the notices to them, their
    verification and the messages to them."""

    read_side: ReadSide
    notifications: OwnerNotifications
    # None when no Redis is configured: the cached status (ids, status, times) and the
    # idempotency record (the answer and a hash of the body) live out their TTLs.
    redis: Redis | None
    idempotency: RedisIdempotencyStore | None = None

    async def forget(self, registration_id: uuid.UUID) -> Sequence[str]:
        removed = [*await self.read_side.forget(registration_id)]
        if await self.read_side.verifications.forget(registration_id):
            removed.append("email_verifications")
        if await asyncio.to_thread(self.notifications.forget, registration_id):
            removed.append("owner_notifications")
        if self.redis is not None and await self.redis.delete(
            STATUS_CACHE_PREFIX + str(registration_id)
        ):
            removed.append("status_cache")
        if self.idempotency is not None and await self.idempotency.forget(str(registration_id)):
            removed.append("idempotency_record")
        return removed
