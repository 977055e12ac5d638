"""Idempotency-Key: a retry gets the first answer; misuse gets a precise error."""

from __future__ import annotations

import dataclasses
import hashlib
import json

import psycopg
from litestar.testing import AsyncTestClient
from redis.asyncio import Redis

from application.idempotency import StoredAnswer
from infrastructure.redis_store.idempotency import RedisIdempotencyStore
from infrastructure.settings import Settings
from interfaces.http.app import build_app
from tests.e2e.api_client import post_registration, problem
from tests.factories import make_cpf, valid_form
from tests.read_models import eventually

Client = AsyncTestClient  # type: ignore[type-arg]


def _person(n: int) -> dict[str, object]:
    email = f"idem{n}@example.com"
    return valid_form(cpf=make_cpf(500 + n), email=email, email_confirmation=email)


async def test_a_retry_with_the_same_key_and_body_replays_the_first_answer(client: Client) -> None:
    first = await post_registration(client, _person(1), key="retry-1")
    second = await post_registration(client, _person(1), key="retry-1")

    assert (first.status_code, second.status_code) == (202, 202)
    # Byte for byte, with the headers the first answer had, plus the replay marker.
    assert second.content == first.content
    for header in ("content-type", "location", "content-length"):
        assert second.headers[header] == first.headers[header], header
    assert second.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers


async def test_a_replayed_rejection_is_the_same_rejection(client: Client) -> None:
    bad = {**_person(2), "cpf": "111.111.111-11"}
    first = await post_registration(client, bad, key="retry-2")
    second = await post_registration(client, bad, key="retry-2")

    assert (first.status_code, second.status_code) == (422, 422)
    assert second.content == first.content
    assert second.headers["content-type"] == first.headers["content-type"]
    assert second.headers["idempotent-replayed"] == "true"


async def test_the_same_key_with_another_body_is_refused(client: Client) -> None:
    assert (await post_registration(client, _person(3), key="retry-3")).status_code == 202

    body = problem(await post_registration(client, _person(4), key="retry-3"), 422)

    assert body["code"] == "idempotency_key_reused"


async def test_a_retry_while_the_first_is_in_flight_is_told_so(
    client: Client, settings: Settings
) -> None:
    body = json.dumps(_person(5)).encode()
    assert settings.redis_url
    redis = Redis.from_url(settings.redis_url)
    # The first request with this key has claimed it and is still being processed.
    await RedisIdempotencyStore(redis, ttl_seconds=60).claim(
        "retry-5", hashlib.sha256(body).hexdigest()
    )
    await redis.aclose()

    response = await client.post(
        "/registrations",
        content=body,
        headers={"content-type": "application/json", "Idempotency-Key": "retry-5"},
    )

    assert problem(response, 409)["code"] == "idempotency_request_in_progress"


async def test_a_key_of_non_printable_characters_is_refused(client: Client) -> None:
    response = await post_registration(client, _person(6), key="bad\tkey")
    assert problem(response, 400)["code"] == "invalid_idempotency_key"


def _worst_body() -> bytes:
    """Every field wrong and a 16 KiB body's worth of unknown fields, long-named ones first."""
    address: dict[str, object] = {"l" * 200 + str(n): 1 for n in range(10)}
    address.update({f"k{n}": 1 for n in range(1_200)})
    body = {
        "person_type": "XX", "cpf": 1, "cnpj": [], "name": "\u202e" * 10,
        "mobile_phone": "1", "phone": "2", "email": "@", "email_confirmation": "x",
        "accepted_terms": "no", "address": address,
        **{"u" * 200 + str(n): 1 for n in range(10)},
    }  # fmt: skip
    encoded = json.dumps(body, separators=(",", ":")).encode()
    assert len(encoded) <= 16 * 1024, len(encoded)
    return encoded


async def test_the_largest_rejection_is_small_and_kept_for_retries_like_any_other(
    client: Client, settings: Settings
) -> None:
    body = _worst_body()
    headers = {"content-type": "application/json", "Idempotency-Key": "worst-1"}

    first = await client.post("/registrations", content=body, headers=headers)
    again = await client.post("/registrations", content=body, headers=headers)

    assert first.status_code == 422
    errors = first.json()["errors"]
    assert len(first.content) < 8 * 1024, len(first.content)  # ~5.5 KB
    assert ("address", "unknown_field") in {(e["field"], e["code"]) for e in errors}
    assert again.content == first.content and again.headers["idempotent-replayed"] == "true"
    assert settings.redis_url
    redis = Redis.from_url(settings.redis_url)
    stored = await redis.strlen("signup:idempotency:worst-1")
    await redis.aclose()
    assert 0 < stored < 8 * 1024, stored


async def test_an_answer_over_the_size_kept_frees_its_key_instead_of_being_stored(
    settings: Settings,
) -> None:
    assert settings.redis_url
    redis = Redis.from_url(settings.redis_url)
    store = RedisIdempotencyStore(redis, ttl_seconds=60, most_stored_bytes=10)
    await store.claim("big-1", "fingerprint")

    await store.complete("big-1", "fingerprint", StoredAnswer(422, b"x" * 11, {}))

    assert await redis.exists("signup:idempotency:big-1") == 0
    await redis.aclose()


async def test_a_signup_told_503_whose_batch_commits_after_all_is_replayed_to_its_retry(
    settings: Settings,
) -> None:
    patient = dataclasses.replace(settings, append_timeout_seconds=0.5)
    assert settings.database_url
    form = _person(20)
    headers = {"Idempotency-Key": "late-1"}
    async with AsyncTestClient(app=build_app(patient)) as client:
        # Another writer holds the events table's lock: the batch waits for it.
        with psycopg.connect(settings.database_url) as blocker:
            blocker.execute("LOCK TABLE signup_events IN EXCLUSIVE MODE")
            first = await client.post("/registrations", json=form, headers=headers)
            meanwhile = await client.post("/registrations", json=form, headers=headers)

        # The lock is gone: the batch commits after all.
        async def replayed() -> bool:
            again = await client.post("/registrations", json=form, headers=headers)
            return again.status_code != 409

        await eventually(replayed, timeout=10)
        retry = await client.post("/registrations", json=form, headers=headers)
        status = await client.get(retry.headers["location"])

    assert problem(first, 503)["code"] == "service_unavailable"
    assert problem(meanwhile, 409)["code"] == "idempotency_request_in_progress"
    assert retry.status_code == 202, retry.text
    assert retry.headers["idempotent-replayed"] == "true"
    assert status.status_code == 200 and status.json()["status"] == "pending"


async def test_by_default_a_keyed_answer_is_kept_in_redis_for_25_hours(
    client: Client, settings: Settings
) -> None:
    # The `client` fixture leaves SIGNUP_IDEMPOTENCY_TTL_SECONDS at its default, which the
    # README and docs/api.md promise is 25 h (90,000 s).
    response = await post_registration(client, _person(30), key="default-ttl-1")
    assert response.status_code == 202, response.text

    assert settings.redis_url
    redis = Redis.from_url(settings.redis_url)
    ttl = await redis.ttl("signup:idempotency:default-ttl-1")
    await redis.aclose()
    # Not the 30 s of an in-flight claim: the completed answer's own expiry, read moments
    # after it was set (the margin is for a slow machine, not a timing claim).
    assert 89_000 < ttl <= 90_000, ttl
