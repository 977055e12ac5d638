"""Redis flushed, then killed, under a load of people who retry with their Idempotency-Key.

Redis holds the idempotency records, the rate-limit counters and the status cache; it holds
nothing that uniqueness depends on. Two ``signup api`` processes and a ``signup worker`` run
against a Valkey server of the test's own. Each person is submitted three times with one
Idempotency-Key and one body, at moments that straddle a FLUSHALL, a SIGKILL of the server
and its restart (empty). What each person was told is then compared with what is stored:
one registration per person, every email and CPF once, never a 5xx; and, as the README says,
with Redis down the API fails open (no 429, no 500) and, once Redis is back, idempotency
replays and rate limits work again without restarting anything.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections import Counter
from pathlib import Path

import httpx
from redis.asyncio import Redis
from sqlalchemy import text

from infrastructure.composition.read_side import open_read_side
from infrastructure.settings import Settings
from tests.clients import KEEPALIVE_SECONDS
from tests.faults.harness import (
    Processes,
    Told,
    Valkey,
    person,
    server_env,
    told,
)
from tests.read_models import eventually

ATTEMPTS = 3  # per person, all with the same Idempotency-Key and body (see schedule)
# The run's timeline, in seconds from the start of the load.
FLUSH_AT, KILL_AT, RESTART_AT, LAST_FIRST_ATTEMPT_AT = 3.0, 5.0, 9.0, 11.0
RETRY_WITHIN = 2.0  # a person's later attempts come at most this long after the first
ALLOWED_409 = {"email_already_registered", "cpf_already_registered"}
IN_PROGRESS = "idempotency_request_in_progress"


async def test_a_redis_flush_and_crash_under_retrying_clients_creates_no_duplicate_and_fails_open(
    settings: Settings, breakable_valkey: Valkey, tmp_path: Path, scale: int
) -> None:
    people = 300 * scale
    tag = f"redis{random.randrange(1 << 30)}"
    rng = random.Random(tag)
    env = {
        **server_env(settings),
        "REDIS_URL": breakable_valkey.url,
        # Limits on, but above what this load reaches: it shows they fail open, not that
        # they throttle (the probe at the end shows that).
        "SIGNUP_RATE_LIMIT_PER_CLIENT": "1000000/minute",
        "SIGNUP_RATE_LIMIT_PER_EMAIL": f"{ATTEMPTS + 2}/hour",
        "SIGNUP_RATE_LIMIT_PER_CPF": f"{ATTEMPTS + 2}/hour",
    }
    keys = {n: f"{tag}-{n}-{uuid.uuid4()}" for n in range(people)}
    # A person's first attempt, a double click right behind it, and a later retry.
    schedule = sorted(
        (first + delay, n)
        for n in range(people)
        for first in [rng.uniform(0, LAST_FIRST_ATTEMPT_AT)]
        for delay in (0.0, rng.uniform(0, 0.02), rng.uniform(0.02, RETRY_WITHIN))
    )
    answers: dict[int, list[Told]] = {n: [] for n in range(people)}
    moments: dict[str, float] = {}

    with Processes(tmp_path / "logs", env) as processes:
        urls = [url for url, _ in processes.apis("api-a", "api-b")]
        processes.worker()
        limits = httpx.Limits(max_connections=64, keepalive_expiry=KEEPALIVE_SECONDS)
        async with httpx.AsyncClient(timeout=60, limits=limits) as http:

            async def attempt(at: float, n: int, start: float) -> None:
                await asyncio.sleep(max(0.0, start + at - time.monotonic()))
                sent = time.monotonic()
                response = await http.post(
                    f"{rng.choice(urls)}/registrations",
                    json=person(n, tag),
                    headers={"Idempotency-Key": keys[n]},
                )
                answers[n].append(told(sent, response))

            async def chaos(start: float) -> httpx.Response:
                redis = Redis.from_url(breakable_valkey.url)
                try:
                    await asyncio.sleep(max(0.0, start + FLUSH_AT - time.monotonic()))
                    await redis.flushall()
                    moments["flushed"] = time.monotonic()
                finally:
                    await redis.aclose()
                await asyncio.sleep(max(0.0, start + KILL_AT - time.monotonic()))
                await asyncio.to_thread(breakable_valkey.kill)
                moments["killed"] = time.monotonic()
                # Until readiness says so (asserted below), at most until the restart: it was
                # read once after sleeping a second.
                readiness = await http.get(f"{urls[0]}/health/ready")
                while readiness.status_code == 200 and time.monotonic() < start + RESTART_AT:
                    await asyncio.sleep(0.1)
                    readiness = await http.get(f"{urls[0]}/health/ready")
                await asyncio.sleep(max(0.0, start + RESTART_AT - time.monotonic()))
                moments["restarting"] = time.monotonic()
                await asyncio.to_thread(breakable_valkey.start)
                moments["restarted"] = time.monotonic()
                return readiness

            start = time.monotonic()
            chaos_task = asyncio.create_task(chaos(start))
            await asyncio.gather(*(attempt(at, n, start) for at, n in schedule))
            readiness_while_down = await chaos_task
            moments["load_done"] = time.monotonic()

            # Back by itself: both API processes ready again, idempotency replays again, and
            # the per-email limit throttles again.
            async def ready_again() -> bool:
                answers_ = [await http.get(f"{url}/health/ready") for url in urls]
                return all(a.status_code == 200 for a in answers_)

            await eventually(ready_again, timeout=30)
            replay_key = f"{tag}-replay"
            fresh = person(people, tag)
            replays = [
                await http.post(
                    f"{url}/registrations", json=fresh, headers={"Idempotency-Key": replay_key}
                )
                for url in urls
            ]
            probe_email = f"{tag}.probe@example.com"
            probes = [
                await http.post(
                    f"{urls[k % 2]}/registrations",
                    json={
                        **person(people + 1 + k, tag),
                        "email": probe_email,
                        "email_confirmation": probe_email,
                    },
                )
                for k in range(ATTEMPTS + 3)
            ]

            registration_ids = {
                t.registration_id for told_list in answers.values() for t in told_list
            } | {r.json().get("registration_id") for r in [*replays, *probes]}
            registration_ids -= {None}
            read_side = open_read_side(settings)
            try:

                async def all_completed() -> bool:
                    async with read_side.read_engine.connect() as conn:
                        result = await conn.execute(
                            text(
                                "SELECT count(*) FROM registration_status WHERE status ="
                                " 'completed' AND registration_id = ANY(CAST(:ids AS uuid[]))"
                            ),
                            {"ids": sorted(registration_ids)},  # type: ignore[type-var]
                        )
                        return int(result.scalar_one()) == len(registration_ids)

                await eventually(all_completed, timeout=120)
                emails: Counter[str] = Counter()
                cpfs: Counter[str] = Counter()
                for engine in read_side.shard_engines:
                    async with engine.connect() as conn:
                        for email, cpf in await conn.execute(text("SELECT email, cpf FROM users")):
                            emails[email] += 1
                            cpfs[cpf] += 1
                async with read_side.events_engine.connect() as conn:
                    recorded = (
                        await conn.execute(
                            text(
                                "SELECT count(*) FROM signup_events"
                                " WHERE topic LIKE '%UserRegistrationRequested'"
                            )
                        )
                    ).scalar_one()
            finally:
                await read_side.close()

    everything = [t for told_list in answers.values() for t in told_list]
    codes = Counter(t.status for t in everything)
    conflict_codes = Counter(t.body.get("code") for t in everything if t.status == 409)
    replayed = sum(1 for t in everything if t.headers.get("idempotent-replayed") == "true")
    while_down = [t for t in everything if moments["killed"] <= t.sent < moments["restarting"]]
    after_flush = [t for t in everything if moments["flushed"] <= t.sent < moments["killed"]]
    ids_per_person = {
        n: {t.registration_id for t in told_list if t.status == 202}
        for n, told_list in answers.items()
    }
    slowest_while_down = max((t.seconds for t in while_down), default=0.0)
    figures = {
        "people": people,
        "requests": len(everything),
        "codes": dict(codes),
        "409_codes": dict(conflict_codes),
        "replayed_202s": replayed,
        "sent_after_flush": len(after_flush),
        "sent_while_down": len(while_down),
        "while_down_codes": dict(Counter(t.status for t in while_down)),
        "slowest_while_down_s": round(slowest_while_down, 3),
        "slowest_s": round(max(t.seconds for t in everything), 3),
        "probe_codes": [p.status_code for p in probes],
        "load_s": round(moments["load_done"] - start, 1),
    }
    print(f"\nredis flushed and killed under load: {figures}")

    assert set(codes) <= {202, 409}, figures
    assert set(conflict_codes) <= {*ALLOWED_409, IN_PROGRESS}, figures
    assert len(while_down) >= people // 10, f"too few requests while Redis was down: {figures}"
    assert len(after_flush) >= people // 10, f"too few requests after the flush: {figures}"
    lost = [n for n, ids in ids_per_person.items() if not ids]
    doubled = [n for n, ids in ids_per_person.items() if len(ids) > 1]
    assert not lost, f"people who never got their 202: {lost[:10]}"
    assert not doubled, f"people with two registrations: {doubled[:10]}"
    assert readiness_while_down.status_code == 503
    assert readiness_while_down.json()["checks"] == {
        "postgres": True,
        "redis": False,
        "projections": True,
    }
    # After the restart: the second submission with the key is the first answer, replayed.
    assert [r.status_code for r in replays] == [202, 202], [r.text for r in replays]
    assert replays[1].headers.get("idempotent-replayed") == "true"
    assert replays[0].json()["registration_id"] == replays[1].json()["registration_id"]
    assert [p.status_code for p in probes] == [202] + [409] * (ATTEMPTS + 1) + [429], figures
    assert int(probes[-1].headers["retry-after"]) > 0
    # What is stored: one user per person, every email and CPF once.
    expected = {person(n, tag)["email"] for n in range(people + 1)} | {probe_email}
    assert set(emails) == expected
    assert max(emails.values()) == 1
    assert max(cpfs.values()) == 1
    assert recorded == people + 2
