"""The operator commands' composition: ``signup migrate`` and ``signup erase``."""

from __future__ import annotations

import asyncio
import functools

import structlog
from eventsourcing.postgres import PostgresApplicationRecorder
from redis.asyncio import Redis

from application.erasure import Erased, EraseUser
from infrastructure.composition.read_side import open_read_side
from infrastructure.erasure import EventStoreSubjects, ReadModelsAndCache
from infrastructure.event_store import claims, key_checks
from infrastructure.event_store.owner_notifications import OwnerNotifications
from infrastructure.event_store.store import open_event_store
from infrastructure.read_side.read_store import (
    main_catalog,
)
from infrastructure.redis_store.idempotency import RedisIdempotencyStore
from infrastructure.settings import Settings
from infrastructure.verification.challenges import (
    start_epoch,
)

log = structlog.get_logger(__name__)


def migrate(settings: Settings) -> None:
    """Create or upgrade every schema this service owns: event store, read models, shards."""
    assert settings.database_url, "DATABASE_URL is required to migrate"
    events = open_event_store(
        settings.database_url, pool_size=1, create_table=True, cipher_key=settings.event_cipher_key
    )
    try:
        OwnerNotifications(events).migrate()
        recorder = events.recorder
        assert isinstance(recorder, PostgresApplicationRecorder)
        # Stores from before claims were rows: their reservation events become rows, once.
        backfilled = claims.backfill(recorder, events.mapper.to_domain_event)
        if backfilled:
            log.info("claims_backfilled", held=backfilled)
        # Which keys this store is written with, so that a process given others refuses to
        # start (``key_checks``); a store holding data is checked against them first.
        recorded = key_checks.record(events, settings.reservation_key, settings.event_cipher_key)
        if recorded:
            log.info("key_checks_recorded", keys=recorded)
    finally:
        events.close()

    async def read_models() -> None:
        read_side = open_read_side(settings)
        try:
            async with read_side.read_engine.begin() as conn:
                await conn.run_sync(main_catalog.create_all)
            await start_epoch(read_side.read_engine)
            for projector in read_side.all_projectors:
                await projector.store.ensure()
        finally:
            await read_side.close()

    asyncio.run(read_models())
    log.info("migrated", shards=len(settings.shard_urls))


async def erase(settings: Settings, subject: str) -> Erased:
    """``signup erase``: the use case wired to the event store, read models and cache."""
    assert settings.database_url, "DATABASE_URL is required to erase"
    events = await asyncio.to_thread(
        functools.partial(
            open_event_store, settings.database_url, 1, cipher_key=settings.event_cipher_key
        )
    )
    # With another reservation key a person is looked up by another claim id, and an erasure
    # by email would answer "no user" for someone the store holds.
    await key_checks.verify_or_close(events, settings.reservation_key, settings.event_cipher_key)
    read_side = open_read_side(settings)
    redis = Redis.from_url(settings.redis_url) if settings.redis_url else None
    try:
        use_case = EraseUser(
            EventStoreSubjects(read_side, events, settings.reservation_key.encode()),
            ReadModelsAndCache(
                read_side,
                OwnerNotifications(events),
                redis,
                RedisIdempotencyStore(redis, settings.idempotency_ttl_seconds)
                if redis is not None
                else None,
                settings.status_pending_seconds,
            ),
        )
        return await use_case(subject)
    finally:
        if redis is not None:
            await redis.aclose()
        await read_side.close()
        await asyncio.to_thread(events.close)
