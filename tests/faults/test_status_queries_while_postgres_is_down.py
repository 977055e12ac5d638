"""GET /registrations/{id} while PostgreSQL is down: a precise answer, never a 500."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from litestar.testing import AsyncTestClient
from redis.asyncio import Redis

from infrastructure.composition.operations import migrate
from infrastructure.embedded import ensure_database
from infrastructure.read_side.status_cache import STATUS_CACHE_PREFIX, is_settlement
from infrastructure.settings import Settings
from interfaces.http.app import build_app
from tests.faults.harness import person, start_postgres, stop_postgres_immediately
from tests.read_models import eventually, running_worker
from tests.servers import TEST_RESERVATION_KEY


@asynccontextmanager
async def _api(
    postgres: Any, redis_url: str, *, worker: bool = True
) -> AsyncIterator[AsyncTestClient]:  # type: ignore[type-arg]
    settings = Settings(
        reservation_key=TEST_RESERVATION_KEY,
        database_url=ensure_database(postgres.get_uri(), "signup"),
        redis_url=redis_url,
        retry_base_seconds=0.05,
    )
    await asyncio.to_thread(migrate, settings)
    async with AsyncTestClient(app=build_app(settings), timeout=60) as client:
        if not worker:
            yield client
            return
        async with running_worker(settings):
            yield client


async def test_a_completed_status_is_still_answered_from_the_cache_while_postgres_is_down(
    breakable_postgres: Any, redis_url: str
) -> None:
    async with _api(breakable_postgres, redis_url) as client:
        accepted = await client.post("/registrations", json=person(1, uuid.uuid4().hex))
        rid = accepted.json()["registration_id"]

        async def completed() -> bool:
            answer = await client.get(f"/registrations/{rid}")
            return bool(answer.json()["status"] == "completed")

        await eventually(completed, timeout=30)
        # The poll that read completed caches it just after its answer.
        async with Redis.from_url(redis_url) as redis:
            await eventually(lambda: _cached_as(redis, rid, "completed"), timeout=10)
        during = await _polled_while_down(breakable_postgres, client, rid)

    assert during.status_code == 200, during.text
    assert during.json()["status"] == "completed"


async def test_a_status_not_in_the_cache_gets_503_with_retry_after_while_postgres_is_down(
    breakable_postgres: Any, redis_url: str
) -> None:
    async with _api(breakable_postgres, redis_url) as client:
        accepted = await client.post("/registrations", json=person(2, uuid.uuid4().hex))
        rid = accepted.json()["registration_id"]
        # Not in the cache: neither its pending note nor, if the worker was quick, its
        # settlement (either would answer, or send the poll to the read model).
        async with Redis.from_url(redis_url) as redis:
            await eventually(lambda: _key_written(redis, rid), timeout=10)
            await redis.delete(STATUS_CACHE_PREFIX + rid)
        await asyncio.to_thread(stop_postgres_immediately, breakable_postgres)
        try:
            # Neither a registration the cache may not hold, nor an unknown one, can be
            # answered without the database: both must say so, as POST does.
            answers = [
                await client.get(f"/registrations/{rid}"),
                await client.get(f"/registrations/{uuid.uuid4()}"),
            ]
        finally:
            await asyncio.to_thread(start_postgres, breakable_postgres)

    for answer in answers:
        assert answer.status_code == 503, answer.text
        assert answer.json()["code"] == "service_unavailable"
        assert int(answer.headers["retry-after"]) > 0


async def test_a_registration_accepted_just_before_postgres_went_down_is_still_answered_pending(
    breakable_postgres: Any, redis_url: str
) -> None:
    # No worker: the registration stays pending, and its note is what answers.
    async with _api(breakable_postgres, redis_url, worker=False) as client:
        accepted = await client.post("/registrations", json=person(3, uuid.uuid4().hex))
        assert accepted.status_code == 202, accepted.text
        rid = accepted.json()["registration_id"]
        before = await client.get(f"/registrations/{rid}")
        async with Redis.from_url(redis_url) as redis:
            await eventually(lambda: _key_written(redis, rid), timeout=10)
        during = await _polled_while_down(breakable_postgres, client, rid)
    assert during.status_code == 200, during.text
    # The same answer the event store gave before the outage, to the microsecond.
    assert during.json() == before.json()
    assert during.json()["status"] == "pending"


async def _key_written(redis: Redis, registration_id: str) -> bool:
    return bool(await redis.exists(STATUS_CACHE_PREFIX + registration_id))


async def _cached_as(redis: Redis, registration_id: str, status: str) -> bool:
    raw = await redis.get(STATUS_CACHE_PREFIX + registration_id)
    return raw is not None and not is_settlement(raw) and json.loads(raw)["status"] == status


async def _polled_while_down(postgres: Any, client: Any, registration_id: str) -> Any:
    """The answer to a poll made while PostgreSQL is stopped (started again after)."""
    await asyncio.to_thread(stop_postgres_immediately, postgres)
    try:
        return await client.get(f"/registrations/{registration_id}")
    finally:
        await asyncio.to_thread(start_postgres, postgres)
