"""What an operator runs: projections status and rebuild, dead-letters list/show/retry/discard."""

from __future__ import annotations

import dataclasses
from typing import Any

from litestar.testing import AsyncTestClient

from infrastructure.settings import Settings
from tests.factories import make_cpf, valid_form
from tests.read_models import Poison, all_have_status, eventually, running_worker, status_of
from tests.servers import run_signup as signup

Client = AsyncTestClient  # type: ignore[type-arg]


def _person(n: int, email: str | None = None) -> dict[str, Any]:
    address = email or f"operator{n}@example.com"
    return valid_form(cpf=make_cpf(60_000 + n), email=address, email_confirmation=address)


async def test_an_operator_sees_a_dead_letter_and_replays_it_once_the_fault_is_fixed(
    client: Client, settings: Settings
) -> None:
    response = await client.post("/registrations", json=_person(1, "broken@example.com"))
    registration_id = response.json()["registration_id"]
    async with running_worker(settings, Poison("broken@example.com")):
        await eventually(lambda: all_have_status(client, [registration_id], "failed"))

    listed = await signup(settings, "dead-letters", "list")
    assert listed.returncode == 0, listed.stderr
    assert registration_id in listed.stdout
    letter_id = listed.stdout.splitlines()[1].split()[0]
    shown = await signup(settings, "dead-letters", "show", letter_id)
    assert "poisoned by the test" in shown.stdout

    # The fault is fixed: this process's projection is the real one.
    retried = await signup(settings, "dead-letters", "retry", letter_id)

    assert retried.returncode == 0, retried.stdout + retried.stderr
    assert (await status_of(client, registration_id))["status"] == "completed"
    assert (await signup(settings, "dead-letters", "list")).stdout.count("\n") == 1


async def test_discarding_a_dead_letter_removes_it_and_leaves_the_registration_failed(
    client: Client, settings: Settings
) -> None:
    response = await client.post("/registrations", json=_person(2, "gone@example.com"))
    registration_id = response.json()["registration_id"]
    async with running_worker(settings, Poison("gone@example.com")):
        await eventually(lambda: all_have_status(client, [registration_id], "failed"))
    letter_id = (await signup(settings, "dead-letters", "list")).stdout.splitlines()[1].split()[0]

    discarded = await signup(settings, "dead-letters", "discard", letter_id)

    assert discarded.returncode == 0
    assert registration_id not in (await signup(settings, "dead-letters", "list")).stdout
    assert (await status_of(client, registration_id))["status"] == "failed"


async def test_projection_status_shows_position_and_lag_and_rebuild_switches_tables(
    client: Client, settings: Settings
) -> None:
    ids = []
    for n in range(10, 20):
        ids.append((await client.post("/registrations", json=_person(n))).json()["registration_id"])

    behind = await signup(settings, "projections", "status")
    assert behind.returncode == 0
    lines = {line.split()[0]: line.split()[1:] for line in behind.stdout.splitlines()[1:]}
    assert set(lines) == {"email_lookup", "users_shard0", "users_shard1", "registration_status"}
    assert all(int(lag) > 0 for _, lag in lines.values())

    async with running_worker(settings):
        await eventually(lambda: all_have_status(client, ids, "completed"))
    caught_up = await signup(settings, "projections", "status")
    assert all(line.split()[2] == "0" for line in caught_up.stdout.splitlines()[1:])

    rebuilt = await signup(settings, "projections", "rebuild", "email_lookup")
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert "now reading email_lookup_v1_r" in rebuilt.stdout
    assert "100%" in rebuilt.stderr
    assert await all_have_status(client, ids, "completed")

    unknown = await signup(settings, "projections", "rebuild", "nothing")
    assert unknown.returncode == 2


async def test_erasing_without_redis_says_the_cache_and_idempotency_record_were_not_reached(
    client: Client, settings: Settings
) -> None:
    response = await client.post("/registrations", json=_person(7))
    registration_id = response.json()["registration_id"]
    # A production event store, no Redis configured for the command: nothing can clear a
    # cached status or a stored answer, and the operator must be told for how long they last.
    without_redis = dataclasses.replace(settings, redis_url=None)

    erased = await signup(without_redis, "erase", registration_id)

    assert erased.returncode == 0, erased.stderr
    assert "key shredded" in erased.stdout and "status_cache" not in erased.stdout
    assert "REDIS_URL is unset" in erased.stderr
    assert "were not reached" in erased.stderr
    assert "SIGNUP_STATUS_CACHE_SECONDS" in erased.stderr
    assert "SIGNUP_IDEMPOTENCY_TTL_SECONDS" in erased.stderr
