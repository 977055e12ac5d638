"""A flood of GET /registrations/{random id} cannot starve signups."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections import Counter

import asyncpg
from litestar.testing import AsyncTestClient
from redis.asyncio import Redis

from infrastructure.event_store.store import open_event_store
from infrastructure.read_side.read_store import asyncpg_dsn
from infrastructure.read_side.status_cache import PollCaches
from infrastructure.read_side.status_queries import StatusQueries
from infrastructure.redis_store.rate_limits import RedisRateLimiter
from infrastructure.settings import Settings
from interfaces.http.app import build_app
from tests.factories import make_cpf, valid_form


def _person(n: int) -> dict[str, object]:
    email = f"flooded{n}@example.com"
    return valid_form(cpf=make_cpf(61_000 + n), email=email, email_confirmation=email)


async def test_a_flood_of_random_status_ids_is_refused_early_and_signups_are_still_accepted(
    settings: Settings,
) -> None:
    flooded = dataclasses.replace(
        settings, rate_limit_status_per_client="100/minute", db_pool_size=2
    )
    async with AsyncTestClient(app=build_app(flooded), timeout=60) as client:

        async def poll() -> int:
            return (await client.get(f"/registrations/{uuid.uuid4()}")).status_code

        async def sign_up(n: int) -> int:
            return (await client.post("/registrations", json=_person(n))).status_code

        polls = [asyncio.ensure_future(poll()) for _ in range(600)]
        signups = await asyncio.gather(*(sign_up(n) for n in range(30)))
        answered = Counter(await asyncio.gather(*polls))

    assert signups == [202] * 30
    assert set(answered) <= {404, 429}, answered
    # The sliding window lets 100 through in the minute; the rest never reach a database.
    assert answered[404] <= 100 and answered[429] >= 500, answered


async def test_a_wrong_id_polled_again_within_seconds_is_answered_without_the_databases(
    settings: Settings,
) -> None:
    assert settings.database_url and settings.redis_url
    events = open_event_store(settings.database_url, 1)
    read_pool = await asyncpg.create_pool(asyncpg_dsn(settings.read_url), min_size=0, max_size=1)
    events_pool = await asyncpg.create_pool(
        asyncpg_dsn(settings.database_url), min_size=0, max_size=1
    )
    redis = Redis.from_url(settings.redis_url)
    queries = StatusQueries(
        read_pool,
        events_pool,
        events.mapper,
        PollCaches.to(redis, seconds=60),
        reader=RedisRateLimiter(redis, {}).read,
    )
    wrong = uuid.uuid4()
    try:
        assert await queries.find(wrong) is None
        # Both databases out of reach now: a lookup would raise StoreUnavailable.
        await read_pool.close()
        await events_pool.close()
        assert await queries.find(wrong) is None
    finally:
        await redis.aclose()
        events.close()
