"""The batched rate limiter against a real Valkey: the library's counters, one call a turn."""

from __future__ import annotations

import asyncio
import math
import time
import uuid
from collections.abc import AsyncIterator

import pytest
from limits import parse
from limits.aio.storage import RedisStorage
from limits.aio.strategies import SlidingWindowCounterRateLimiter
from redis.asyncio import Redis

from application.rate_limits import Refused
from infrastructure.rate_limits import KEY_PREFIX, RedisRateLimiter


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url)
    yield client
    await client.aclose()


def _limiter(redis: Redis, redis_url: str, **limits: str) -> RedisRateLimiter:
    return RedisRateLimiter(redis, limits)


async def test_hits_made_at_once_are_counted_exactly_as_the_limit_allows(
    redis: Redis, redis_url: str
) -> None:
    limiter = _limiter(redis, redis_url, client="5/minute")
    client = uuid.uuid4().hex
    await limiter.hit([("client", uuid.uuid4().hex)])  # loads the script into the server
    calls_before = (await redis.info("commandstats")).get("cmdstat_evalsha", {}).get("calls", 0)

    answers = await asyncio.gather(*(limiter.hit([("client", client)]) for _ in range(20)))

    assert answers.count(None) == 5
    refused = [a for a in answers if a is not None]
    assert all(isinstance(a, Refused) and a.limit == "client" for a in refused)
    assert all(1 <= a.retry_after <= 60 for a in refused)  # type: ignore[union-attr]
    calls = (await redis.info("commandstats")).get("cmdstat_evalsha", {}).get("calls", 0)
    # One script call counted all twenty and read the windows of those refused.
    assert calls - calls_before == 1


async def test_the_library_reads_the_same_counters_the_batch_wrote(
    redis: Redis, redis_url: str
) -> None:
    limiter = _limiter(redis, redis_url, email="10/hour")
    person = uuid.uuid4().hex
    for _ in range(3):
        assert await limiter.hit([("email", person)]) is None

    storage = RedisStorage("async+" + redis_url, implementation="redispy", key_prefix=KEY_PREFIX)
    stats = await SlidingWindowCounterRateLimiter(storage).get_window_stats(
        parse("10/hour"), "email", person
    )
    assert stats.remaining == 7


async def test_the_wait_told_to_a_refused_client_is_the_one_the_library_works_out(
    redis: Redis, redis_url: str
) -> None:
    limiter = _limiter(redis, redis_url, cpf="2/minute")
    storage = RedisStorage("async+" + redis_url, implementation="redispy", key_prefix=KEY_PREFIX)
    while True:
        person = uuid.uuid4().hex
        minute = time.time() // 60
        answers = [await limiter.hit([("cpf", person)]) for _ in range(3)]
        stats = await SlidingWindowCounterRateLimiter(storage).get_window_stats(
            parse("2/minute"), "cpf", person
        )
        # A sliding window's wait jumps when a new minute starts: both readings in one.
        if time.time() // 60 == minute:
            break
    refused = answers[2]
    assert answers[:2] == [None, None] and refused is not None
    # Whole seconds, rounded up, from a moment a few milliseconds apart.
    assert abs(refused.retry_after - math.ceil(stats.reset_time - time.time())) <= 1


async def test_a_request_refused_by_its_first_limit_spends_none_of_the_others(
    redis: Redis, redis_url: str
) -> None:
    limiter = _limiter(redis, redis_url, client="1/minute", email="2/hour")
    client, victim = uuid.uuid4().hex, uuid.uuid4().hex

    first = await limiter.hit([("client", client), ("email", victim)])
    flood = [await limiter.hit([("client", client), ("email", victim)]) for _ in range(5)]
    # Someone else, within their own limit, still has the victim's second attempt.
    other = await limiter.hit([("client", uuid.uuid4().hex), ("email", victim)])

    assert first is None
    assert {r.limit for r in flood if r is not None} == {"client"} and None not in flood
    assert other is None


async def test_each_limit_of_a_request_is_counted_and_the_first_refusal_named(
    redis: Redis, redis_url: str
) -> None:
    limiter = _limiter(redis, redis_url, email="1/hour", cpf="1/hour")
    email, cpf = uuid.uuid4().hex, uuid.uuid4().hex
    assert await limiter.hit([("email", email), ("cpf", cpf)]) is None

    again = await limiter.hit([("email", email), ("cpf", uuid.uuid4().hex)])
    other_email = await limiter.hit([("email", uuid.uuid4().hex), ("cpf", cpf)])

    assert again is not None and again.limit == "email"
    assert other_email is not None and other_email.limit == "cpf"


async def test_with_redis_unreachable_every_request_passes(redis_url: str) -> None:
    dead = "redis://127.0.0.1:1/0"
    client = Redis.from_url(dead)
    limiter = _limiter(client, dead, client="1/minute")
    try:
        answers = await asyncio.gather(*(limiter.hit([("client", "a")]) for _ in range(3)))
    finally:
        await client.aclose()
    assert answers == [None, None, None]
