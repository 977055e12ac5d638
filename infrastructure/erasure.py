"""Erasure's parts: who a subject id is, shredding their key, clearing read models and cache;
and an expired registration's personal rows dropped from the read models."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from redis.asyncio import Redis
from sqlalchemy import text

from domain.reservations import Claim
from infrastructure.event_store.owner_notifications import OwnerNotifications
from infrastructure.event_store.store import SignupEvents
from infrastructure.event_store.subject_keys import SignupRecorder
from infrastructure.read_side.parts import ReadSide
from infrastructure.read_side.status_cache import PENDING_SECONDS, settle_now
from infrastructure.redis_store.idempotency import RedisIdempotencyStore
from projections import users
from projections.model import REGISTRATION_REQUESTED
from projections.shards import logical_shard


@dataclass
class EventStoreSubjects:
    read_side: ReadSide
    events: SignupEvents
    reservation_key: bytes

    async def registration_of(self, subject_id: uuid.UUID) -> uuid.UUID | None:
        shard_map = self.read_side.shard_map
        # A user id: the shard its hash names holds it.
        physical = shard_map.physical_index(logical_shard(subject_id, shard_map.logical_shards))
        engine = self.read_side.shard_engines[physical]
        async with engine.connect() as conn:
            found = (
                await conn.execute(
                    text(f'SELECT registration_id FROM "{users.VIEW}" WHERE user_id = :id'),
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

    async def shred_all(self, registration_ids: Sequence[uuid.UUID]) -> int:
        return await asyncio.to_thread(self._recorder.erase_all, registration_ids)

    async def release_all(self, registration_ids: Sequence[uuid.UUID]) -> Mapping[uuid.UUID, int]:
        return await asyncio.to_thread(self._recorder.release_all, registration_ids)

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
    # SIGNUP_STATUS_PENDING_SECONDS: the erasure's settlement outlives any pending note.
    pending_seconds: int = PENDING_SECONDS

    async def forget(self, registration_id: uuid.UUID) -> Sequence[str]:
        removed = [*await forget(self.read_side, registration_id)]
        if await self.read_side.verifications.forget(registration_id):
            removed.append("email_verifications")
        if await asyncio.to_thread(self.notifications.forget, registration_id):
            removed.append("owner_notifications")
        # Settled rather than deleted: a pending note still on its way from the API that
        # accepted the registration is then dropped (status_cache).
        if self.redis is not None and await settle_now(
            self.redis, registration_id, self.pending_seconds
        ):
            removed.append("status_cache")
        if self.idempotency is not None and await self.idempotency.forget(str(registration_id)):
            removed.append("idempotency_record")
        return removed


async def forget(read_side: ReadSide, registration_id: uuid.UUID) -> list[str]:
    """Delete a registration's rows from every table of every projection (a rebuild's too)
    and keep them out from now on, and its failures; the projections it was in.

    Call it once its key is shredded. A batch that opened the event before may still be
    writing it: each projection's deletion holds its tables' tracking rows, which every
    write holds too, so that batch either committed before (its rows are deleted here) or
    writes after, and then skips the registration (``erased_registrations``), however
    long it was held in between. Nothing waits for the projectors.
    """
    removed = set()
    for projector in read_side.all_projectors:
        async with projector.store.engine.begin() as conn:
            if await projector.store.erase(conn, registration_id):
                removed.add(projector.name)
    await read_side.failures.forget([registration_id])
    return sorted(removed)


async def drop_personal(read_side: ReadSide, registration_ids: Sequence[uuid.UUID]) -> list[str]:
    """Expired registrations: their rows deleted from every read model that holds personal
    data, and kept out of them (a rebuild that opened their events before their keys were
    shredded skips them, as it skips the erased); their failures (their texts may quote
    them) and their unsent mail. The status read model keeps them, as ``expired``. One
    transaction a projection for them all, as ``forget`` takes for one erased person."""
    removed = set()
    if not registration_ids:
        return []
    for projector in read_side.all_projectors:
        if not projector.projection.layout.personal:
            continue
        async with projector.store.engine.begin() as conn:
            if await projector.store.expire(conn, registration_ids):
                removed.add(projector.name)
    await read_side.failures.forget(registration_ids)
    if await read_side.verifications.drop_mail(registration_ids, "recipient_expired"):
        removed.add("mail_outbox")
    return sorted(removed)


@dataclass
class ExpiredCopies:
    """``application.verification.PersonalCopies``: what expiry drops (``drop_personal``)."""

    read_side: ReadSide

    async def drop(self, registration_ids: Sequence[uuid.UUID]) -> list[str]:
        return await drop_personal(self.read_side, registration_ids)
