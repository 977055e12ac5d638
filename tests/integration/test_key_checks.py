"""A process given other keys than the event store was written with refuses to start.

With another SIGNUP_RESERVATION_KEY the same email or CPF could register twice (its claims
would be other HMACs); with another SIGNUP_EVENT_CIPHER_KEY an API writes events no worker
can open, and every projection stops at the first of them. `signup migrate` records which
keys a store is written with (checking a store that already holds data against its data);
the API and the worker compare theirs when they reach the store.
"""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

import psycopg
import pytest
from eventsourcing.cryptography import AESCipher
from litestar.testing import AsyncTestClient

from infrastructure.composition.operations import migrate
from infrastructure.event_store import key_checks
from infrastructure.event_store.key_checks import (
    EVENT_CIPHER_KEY,
    RESERVATION_KEY,
    KeysDoNotMatch,
)
from infrastructure.settings import Settings
from interfaces.http.app import build_app
from tests.databases import with_cipher_key
from tests.factories import make_cpf, valid_form
from tests.servers import free_port, run_signup

OTHER_RESERVATION_KEY = "another-reservation-key-" + "y" * 24


def _forget_checks(settings: Settings) -> None:
    """As a store migrated before the checks existed has them: none."""
    assert settings.database_url
    with psycopg.connect(settings.database_url) as conn:
        conn.execute(f'DELETE FROM "{key_checks.key_checks_table("signup_events")}"')


def _checks(settings: Settings) -> dict[str, bytes]:
    assert settings.database_url
    with psycopg.connect(settings.database_url) as conn:
        table = key_checks.key_checks_table("signup_events")
        rows = conn.execute(f'SELECT name, digest FROM "{table}"').fetchall()
    return {name: bytes(digest) for name, digest in rows}


async def _start_api(settings: Settings) -> None:
    async with AsyncTestClient(app=build_app(settings)) as client:
        response = await client.get("/health/live")
        assert response.status_code == 200


async def _refusal(settings: Settings) -> KeysDoNotMatch:
    """Why an API with these settings does not start (the app's start-up wraps the error in a
    group)."""
    try:
        await _start_api(settings)
    except BaseException as error:  # unwrapped below; anything else is raised again
        found = _find(error)
        if found is None:
            raise
        return found
    raise AssertionError("the API started")


def _find(error: BaseException) -> KeysDoNotMatch | None:
    if isinstance(error, KeysDoNotMatch):
        return error
    for inner in getattr(error, "exceptions", ()):
        found = _find(inner)
        if found is not None:
            return found
    return None


async def _sign_up(settings: Settings, n: int) -> None:
    email = f"chave{n}@example.com"
    form = valid_form(cpf=make_cpf(66_000 + n), email=email, email_confirmation=email)
    async with AsyncTestClient(app=build_app(settings)) as client:
        response = await client.post("/registrations", json=form)
        assert response.status_code == 202, response.text


def test_a_migrated_store_records_a_check_of_each_key_that_does_not_contain_the_key(
    settings: Settings,
) -> None:
    checks = _checks(settings)
    assert set(checks) == {RESERVATION_KEY, EVENT_CIPHER_KEY}
    assert checks == key_checks.expected(settings.reservation_key, settings.event_cipher_key)
    assert settings.reservation_key.encode() not in checks[RESERVATION_KEY]


async def test_an_api_given_another_reservation_key_than_its_store_refuses_to_start(
    settings: Settings,
) -> None:
    other = dataclasses.replace(settings, reservation_key=OTHER_RESERVATION_KEY)
    refused = await _refusal(other)
    assert refused.variables == [RESERVATION_KEY]
    assert "register twice" in str(refused)
    assert OTHER_RESERVATION_KEY not in str(refused)
    await _start_api(settings)  # its own key: it starts


async def test_an_api_given_a_cipher_key_its_store_was_not_written_with_refuses_to_start(
    settings: Settings,
) -> None:
    cipher_key = AESCipher.create_key(32)
    refused = await _refusal(dataclasses.replace(settings, event_cipher_key=cipher_key))
    assert refused.variables == [EVENT_CIPHER_KEY]
    assert cipher_key not in str(refused)
    # And the other way round: a store written with a cipher, an API without one.
    encrypted = with_cipher_key(settings, cipher_key)
    await _start_api(encrypted)
    refused = await _refusal(dataclasses.replace(encrypted, event_cipher_key=None))
    assert refused.variables == [EVENT_CIPHER_KEY]


@pytest.mark.parametrize("command", [["worker"], ["mailer", "--shard", "0"]])
async def test_a_worker_or_mailer_given_another_key_than_its_store_exits_naming_the_variable(
    settings: Settings, command: list[str]
) -> None:
    other = dataclasses.replace(settings, reservation_key=OTHER_RESERVATION_KEY)
    finished = await run_signup(other, *command)
    assert finished.returncode != 0
    assert "refusing to start" in finished.stderr and RESERVATION_KEY in finished.stderr
    assert OTHER_RESERVATION_KEY not in finished.stderr + finished.stdout


async def test_signup_api_on_two_processes_given_another_key_exits_non_zero_without_serving(
    settings: Settings,
) -> None:
    """uvicorn's several-process run returned status 0 when its processes failed to start."""
    other = dataclasses.replace(settings, reservation_key=OTHER_RESERVATION_KEY)
    port = str(free_port())
    finished = await run_signup(other, "api", "--port", port, "--workers", "2")
    assert finished.returncode == 3, finished.stderr[-2000:]
    assert "keys_do_not_match_store" in finished.stderr and RESERVATION_KEY in finished.stderr
    assert OTHER_RESERVATION_KEY not in finished.stdout + finished.stderr


async def test_signup_erase_with_another_reservation_key_refuses_instead_of_finding_no_one(
    settings: Settings, tmp_path: Path
) -> None:
    """With another key the person's email is another claim id: the erasure answered "no
    user" for someone the store holds, and they stayed."""
    await _sign_up(settings, 3)
    other = dataclasses.replace(settings, reservation_key=OTHER_RESERVATION_KEY)
    finished = await run_signup(other, "erase", "chave3@example.com", "--data-dir", str(tmp_path))
    assert finished.returncode != 0
    said = finished.stderr.strip().splitlines()[-1]
    assert said.startswith("signup: refusing to erase:"), finished.stderr
    assert RESERVATION_KEY in finished.stderr and "no user" not in finished.stderr
    erased = await run_signup(settings, "erase", "chave3@example.com", "--data-dir", str(tmp_path))
    assert erased.returncode == 0, erased.stderr
    assert erased.stdout.startswith("erased registration")


async def test_migrate_checks_a_store_without_checks_against_its_data_before_recording_them(
    settings: Settings,
) -> None:
    cipher_key = AESCipher.create_key(32)
    encrypted = with_cipher_key(settings, cipher_key)
    await _sign_up(encrypted, 1)
    _forget_checks(settings)
    # A store migrated before the checks: processes start, and migrate records them once
    # the store's data agree with the keys it is given.
    await _start_api(dataclasses.replace(encrypted, reservation_key=OTHER_RESERVATION_KEY))
    with pytest.raises(KeysDoNotMatch) as refused:
        # In a thread: migrate runs an event loop of its own.
        await asyncio.to_thread(
            migrate, dataclasses.replace(encrypted, reservation_key=OTHER_RESERVATION_KEY)
        )
    assert refused.value.variables == [RESERVATION_KEY]
    with pytest.raises(KeysDoNotMatch) as refused:
        await asyncio.to_thread(
            migrate, dataclasses.replace(encrypted, event_cipher_key=AESCipher.create_key(32))
        )
    assert refused.value.variables == [EVENT_CIPHER_KEY]
    assert _checks(settings) == {}
    await asyncio.to_thread(migrate, encrypted)
    assert _checks(settings) == key_checks.expected(encrypted.reservation_key, cipher_key)
    await _sign_up(encrypted, 2)


async def test_signup_migrate_refuses_other_keys_in_one_line_naming_the_variable(
    settings: Settings, tmp_path: Path
) -> None:
    other = dataclasses.replace(settings, reservation_key=OTHER_RESERVATION_KEY)
    finished = await run_signup(other, "migrate", "--data-dir", str(tmp_path))
    assert finished.returncode != 0
    assert finished.stderr.strip().startswith("signup: refusing to migrate:")
    assert RESERVATION_KEY in finished.stderr and "Traceback" not in finished.stderr
