"""The enumeration-resistant mode: a duplicate is answered as a new signup, its holder is told.

Off by default (the contract's 409 is tested in tests/e2e); these tests turn it on.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import AsyncIterator
from typing import Any

import psycopg
import pytest
from litestar.testing import AsyncTestClient

from application.outages import StoreUnavailable
from application.registering import DuplicateAttempt
from infrastructure.event_store.owner_notifications import OwnerNotifications
from infrastructure.event_store.store import open_event_store
from infrastructure.read_side.rebuild import rebuild
from infrastructure.settings import Settings
from interfaces.http.app import build_app
from tests.factories import make_cnpj, make_cpf, mask_cnpj, valid_form, valid_pj_form
from tests.read_models import all_have_status, eventually, running_worker, status_of

Client = AsyncTestClient  # type: ignore[type-arg]


@pytest.fixture
def resistant(settings: Settings) -> Settings:
    return dataclasses.replace(settings, enumeration_resistant=True)


@pytest.fixture
async def api(resistant: Settings) -> AsyncIterator[Client]:
    async with AsyncTestClient(app=build_app(resistant)) as client:
        yield client


def _person(n: int, email: str) -> dict[str, Any]:
    return valid_form(cpf=make_cpf(99_000 + n), email=email, email_confirmation=email)


def _outbox(settings: Settings) -> list[dict[str, Any]]:
    assert settings.database_url
    with psycopg.connect(settings.database_url, row_factory=psycopg.rows.dict_row) as conn:
        return conn.execute(
            "SELECT * FROM signup_owner_notifications ORDER BY created_at"
        ).fetchall()


def _registrations_stored(settings: Settings) -> int:
    assert settings.database_url
    with psycopg.connect(settings.database_url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM signup_events WHERE topic LIKE '%UserRegistrationRequested'"
        ).fetchone()
    assert row is not None
    return int(row[0])


async def test_a_duplicate_email_gets_the_answer_of_a_new_signup_and_its_holder_is_notified(
    api: Client, resistant: Settings
) -> None:
    owner = await api.post("/registrations", json=_person(1, "dona@example.com"))
    duplicate = await api.post("/registrations", json=_person(2, "  Dona@Example.com"))

    assert owner.status_code == duplicate.status_code == 202
    assert duplicate.json().keys() == owner.json().keys()
    assert duplicate.json()["status"] == "pending"
    attempt_id = duplicate.json()["registration_id"]
    assert duplicate.headers["location"] == f"/registrations/{attempt_id}"
    assert attempt_id != owner.json()["registration_id"]
    [notice] = _outbox(resistant)
    assert notice["registration_id"] == uuid.UUID(owner.json()["registration_id"])
    assert notice["attempt_id"] == uuid.UUID(attempt_id)
    assert (notice["reason"], notice["kind"], notice["sent_at"]) == (
        "duplicate_signup",
        "email",
        None,
    )
    # Nothing of the duplicate's personal data is kept: only the holder is recorded.
    assert _registrations_stored(resistant) == 1
    assert "dona" not in str(notice).lower()


async def test_a_duplicate_attempt_goes_pending_then_completed_as_a_real_registration_does(
    api: Client, resistant: Settings
) -> None:
    owner = (await api.post("/registrations", json=_person(3, "titular@example.com"))).json()
    attempt = (await api.post("/registrations", json=_person(4, "titular@example.com"))).json()

    # Before the projections run, both are pending, each updated when requested.
    real, decoy = [await status_of(api, r["registration_id"]) for r in (owner, attempt)]
    assert decoy.keys() == real.keys()
    assert decoy["status"] == real["status"] == "pending"
    assert decoy["updated_at"] == decoy["requested_at"]
    assert real["updated_at"] == real["requested_at"]

    async with running_worker(resistant) as read_side:
        ids = [owner["registration_id"], attempt["registration_id"]]
        await eventually(lambda: all_have_status(api, ids, "completed"))
        real, decoy = [await status_of(api, rid) for rid in ids]
        # Completed by the same projection: updated when it got there, not when requested.
        assert decoy.keys() == real.keys()
        assert decoy["updated_at"] > decoy["requested_at"]
        assert real["updated_at"] > real["requested_at"]
        assert decoy["user_id"] != real["user_id"]

        # The attempt is an event: a rebuild of the status read model brings it back.
        await rebuild(read_side.projector("registration_status"))
    assert _status_rows(resistant, attempt["registration_id"]) == ["completed"]
    # Still nothing of the duplicate's personal data: one registration event for two signups.
    assert _registrations_stored(resistant) == 1


def _status_rows(settings: Settings, registration_id: str) -> list[str]:
    assert settings.read_url
    with psycopg.connect(settings.read_url) as conn:
        rows = conn.execute(
            "SELECT status FROM registration_status WHERE registration_id = %s",
            (registration_id,),
        ).fetchall()
    return [row[0] for row in rows]


async def test_a_duplicate_cpf_and_a_duplicate_cnpj_notify_their_holders_too(
    api: Client, resistant: Settings
) -> None:
    cpf_owner = await api.post("/registrations", json=_person(5, "a@example.com"))
    cpf_again = valid_form(cpf=make_cpf(99_005), email="b@example.com")
    cpf_again["email_confirmation"] = "b@example.com"
    cnpj = mask_cnpj(make_cnpj(99_006))
    company = valid_pj_form(cnpj=cnpj, email="c@example.com", email_confirmation="c@example.com")
    company_again = valid_pj_form(
        cnpj=cnpj, email="d@example.com", email_confirmation="d@example.com"
    )

    answers = [
        await api.post("/registrations", json=body) for body in (cpf_again, company, company_again)
    ]

    assert [a.status_code for a in answers] == [202, 202, 202]
    notices = _outbox(resistant)
    assert [(n["kind"], str(n["registration_id"])) for n in notices] == [
        ("cpf", cpf_owner.json()["registration_id"]),
        ("cnpj", answers[1].json()["registration_id"]),
    ]


async def test_a_retried_duplicate_with_its_idempotency_key_gets_the_same_answer_and_one_notice(
    api: Client, resistant: Settings
) -> None:
    await api.post("/registrations", json=_person(7, "retry@example.com"))
    headers = {"Idempotency-Key": "duplicate-attempt-1"}
    body = _person(8, "retry@example.com")

    first = await api.post("/registrations", json=body, headers=headers)
    again = await api.post("/registrations", json=body, headers=headers)

    assert first.status_code == again.status_code == 202
    assert again.json() == first.json()
    assert again.headers["idempotent-replayed"] == "true"
    assert len(_outbox(resistant)) == 1


async def test_bad_input_is_still_rejected_field_by_field_in_this_mode(api: Client) -> None:
    response = await api.post("/registrations", json=_person(9, "not-an-email"))
    assert response.status_code == 422
    assert [e["field"] for e in response.json()["errors"]] == ["email"]


async def test_a_clash_with_a_value_nobody_ended_up_holding_asks_the_client_to_retry(
    resistant: Settings,
) -> None:
    """Two signups with one email in a batch: the second is refused inside the batch, then the
    first fails on its own (its CPF was taken). Nobody holds the email: no notice, a 503."""
    assert resistant.database_url
    events = open_event_store(resistant.database_url)
    try:
        attempt = DuplicateAttempt(uuid.uuid4(), uuid.uuid4(), "email")
        with pytest.raises(StoreUnavailable):
            await OwnerNotifications(events).notify(attempt)
    finally:
        events.close()
    assert _outbox(resistant) == []
