"""Rate limits: per client and per person, in Redis, across API processes; fail open."""

from __future__ import annotations

import asyncio
import dataclasses
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from litestar.testing import AsyncTestClient
from redis.asyncio import Redis
from structlog.testing import capture_logs

from infrastructure.settings import Settings
from interfaces.http.app import build_app
from tests.e2e.api_client import problem
from tests.factories import make_cpf, valid_form
from tests.servers import free_port, signup_process


def _person(n: int, email: str | None = None) -> dict[str, Any]:
    address = email or f"limited{n}@example.com"
    return valid_form(cpf=make_cpf(90_000 + n), email=address, email_confirmation=address)


@pytest.fixture(autouse=True)
async def fresh_limits(settings: Settings) -> None:
    """Every test here comes from the same test client address: start each from zero."""
    assert settings.redis_url
    redis = Redis.from_url(settings.redis_url)
    keys = [key async for key in redis.scan_iter("signup:limits*")]
    if keys:
        await redis.delete(*keys)
    await redis.aclose()


@asynccontextmanager
async def client_with(settings: Settings, **changes: Any) -> AsyncIterator[AsyncTestClient]:  # type: ignore[type-arg]
    async with AsyncTestClient(app=build_app(dataclasses.replace(settings, **changes))) as client:
        yield client


async def test_a_client_over_its_limit_gets_429_with_retry_after(settings: Settings) -> None:
    async with client_with(settings, rate_limit_per_client="3/minute") as client:
        answers = [await client.post("/registrations", json=_person(n)) for n in range(4)]

    assert [a.status_code for a in answers[:3]] == [202, 202, 202]
    body = problem(answers[3], 429)
    assert body["code"] == "rate_limited"
    assert 1 <= int(answers[3].headers["retry-after"]) <= 60


async def test_invalid_bodies_count_against_the_client_limit(settings: Settings) -> None:
    async with client_with(settings, rate_limit_per_client="2/minute") as client:
        answers = [await client.post("/registrations", json={"cpf": "x"}) for _ in range(3)]
    assert [a.status_code for a in answers] == [422, 422, 429]


async def test_one_email_is_limited_whatever_the_address(settings: Settings) -> None:
    async with client_with(settings, rate_limit_per_email="2/hour") as client:
        answers = [
            await client.post("/registrations", json=_person(10 + n, "same.person@example.com"))
            for n in range(3)
        ]
    assert [a.status_code for a in answers] == [202, 409, 429]
    assert answers[2].json()["limit"] == "email"


async def test_one_cpf_is_limited_whatever_the_email(settings: Settings) -> None:
    # Only the per-CPF limit is tight: a refusal can come from nothing else.
    async with client_with(
        settings,
        rate_limit_per_cpf="2/minute",
        rate_limit_per_email="100/minute",
        rate_limit_per_client="100/minute",
    ) as client:
        answers = []
        for n in range(3):
            email = f"same.cpf.{n}@example.com"
            form = valid_form(cpf=make_cpf(90_100), email=email, email_confirmation=email)
            answers.append(await client.post("/registrations", json=form))

    # The second is a duplicate CPF, still counted; the third is refused before any lookup.
    assert [a.status_code for a in answers[:2]] == [202, 409]
    body = problem(answers[2], 429)
    assert (body["code"], body["limit"]) == ("rate_limited", "cpf")
    assert 1 <= int(answers[2].headers["retry-after"]) <= 60


async def test_an_untrusted_forwarded_for_header_does_not_dodge_the_limit(
    settings: Settings,
) -> None:
    async with client_with(settings, rate_limit_per_client="2/minute") as client:
        answers = [
            await client.post(
                "/registrations",
                json=_person(20 + n),
                headers={"X-Forwarded-For": f"198.51.100.{n}"},
            )
            for n in range(3)
        ]
    assert [a.status_code for a in answers] == [202, 202, 429]


async def test_with_redis_down_signups_are_still_accepted_and_readiness_says_so(
    settings: Settings,
) -> None:
    dead_redis = f"redis://127.0.0.1:{free_port()}/0"
    async with client_with(
        settings, redis_url=dead_redis, rate_limit_per_client="1/minute"
    ) as client:
        first = await client.post(
            "/registrations", json=_person(30), headers={"Idempotency-Key": "k"}
        )
        second = await client.post("/registrations", json=_person(31))
        ready = await client.get("/health/ready")

    assert (first.status_code, second.status_code) == (202, 202)
    assert ready.status_code == 503
    assert ready.json()["checks"] == {"postgres": True, "redis": False, "projections": True}


async def test_with_redis_down_the_api_logs_that_the_rate_limiter_is_unavailable(
    settings: Settings,
) -> None:
    dead_redis = f"redis://127.0.0.1:{free_port()}/0"
    async with client_with(
        settings, redis_url=dead_redis, rate_limit_per_client="1/minute"
    ) as client:
        # Captured after the app has configured its logging, which would replace the capture.
        with capture_logs() as logged:
            answers = [await client.post("/registrations", json=_person(32 + n)) for n in range(2)]

    # Over the 1/minute limit and still accepted: the operator's only sign is the log line.
    assert [a.status_code for a in answers] == [202, 202]
    events = [entry for entry in logged if entry["event"] == "rate_limiter_unavailable"]
    assert events, [entry["event"] for entry in logged]
    assert events[0]["log_level"] == "warning"


async def test_the_client_limit_holds_across_two_api_processes(
    settings: Settings, tmp_path: Path
) -> None:
    env = {
        "DATABASE_URL": settings.database_url or "",
        "REDIS_URL": settings.redis_url or "",
        "SIGNUP_RATE_LIMIT_PER_CLIENT": "5/minute",
    }
    ports = [free_port(), free_port()]
    urls = [f"http://127.0.0.1:{port}" for port in ports]
    # One process each: two in all, whatever the machine's cores.
    a, b = (["api", "--port", str(port), "--workers", "1"] for port in ports)
    with (
        signup_process(a, env, urls[0], tmp_path / "a.log"),
        signup_process(b, env, urls[1], tmp_path / "b.log"),
    ):
        async with httpx.AsyncClient(timeout=30) as http:
            answers = await asyncio.gather(
                *(
                    http.post(f"{urls[n % 2]}/registrations", json=_person(40 + n))
                    for n in range(12)
                )
            )
    assert Counter(a.status_code for a in answers) == {202: 5, 429: 7}
