"""Email verification end to end: a real SMTP sink (aiosmtpd, on loopback) receives what the
worker's mailer sends; the code it carries verifies the registration through the API."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from litestar.testing import AsyncTestClient

from domain.verification import code_for, verification_key
from infrastructure.read_side.read_store import asyncpg_dsn
from infrastructure.settings import Settings
from infrastructure.verification.mail_sink import MailSink
from interfaces.http.app import build_app
from tests.e2e.api_client import problem
from tests.factories import make_cpf, valid_form
from tests.mail import wait_for_messages
from tests.read_models import eventually, running_worker, status_of

Client = AsyncTestClient  # type: ignore[type-arg]


@pytest.fixture
def mailbox(tmp_path: Path) -> Iterator[MailSink]:
    with MailSink(tmp_path / "mail") as sink:
        yield sink


@pytest.fixture
def mailing(settings: Settings, mailbox: MailSink) -> Settings:
    return dataclasses.replace(settings, smtp_url=mailbox.url, public_url="http://signup.test")


@pytest.fixture
async def api(mailing: Settings) -> AsyncIterator[Client]:
    async with AsyncTestClient(app=build_app(mailing)) as client:
        yield client


def _person(n: int) -> dict[str, Any]:
    email = f"verifica{n}@example.com"
    return valid_form(cpf=make_cpf(55_000 + n), email=email, email_confirmation=email)


async def _signed_up(api: Client, n: int) -> str:
    response = await api.post("/registrations", json=_person(n))
    assert response.status_code == 202, response.text
    registration_id: str = response.json()["registration_id"]
    return registration_id


async def test_a_person_signs_up_gets_a_code_by_mail_and_verifies_with_it(
    api: Client, mailing: Settings, mailbox: MailSink
) -> None:
    registration_id = await _signed_up(api, 1)
    async with running_worker(mailing):
        [message] = await wait_for_messages(mailbox.directory, registration_id)
        assert message.to == "verifica1@example.com"
        assert message.subject == "Confirme seu e-mail"
        # The link carries the id and a token, in the fragment; nothing the person typed.
        assert message.link.startswith(f"http://signup.test/#verificar={registration_id}.")
        assert "verifica1" not in message.link and "Maria" not in message.text
        assert (await status_of(api, registration_id))["status"] == "completed"

        answer = await api.post(
            f"/registrations/{registration_id}/verification", json={"code": message.code}
        )

        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["status"] == "verified"
        assert body["registration_id"] == registration_id
        assert set(body) == {"registration_id", "status", "requested_at", "updated_at", "user_id"}
        assert (await status_of(api, registration_id))["status"] == "verified"
        # Used again (a second tab): the same answer, nothing new recorded.
        again = await api.post(
            f"/registrations/{registration_id}/verification", json={"code": message.code}
        )
        assert again.status_code == 200 and again.json()["status"] == "verified"


async def test_a_wrong_code_gets_422_until_the_attempts_are_spent_then_429(
    api: Client, mailing: Settings, mailbox: MailSink
) -> None:
    registration_id = await _signed_up(api, 2)
    async with running_worker(mailing):
        [message] = await wait_for_messages(mailbox.directory, registration_id)
        wrong = f"{(int(message.code) + 1) % 1_000_000:06d}"
        url = f"/registrations/{registration_id}/verification"
        lefts = []
        for _ in range(mailing.verification_max_attempts):
            body = problem(await api.post(url, json={"code": wrong}), 422)
            assert body["code"] == "verification_code_invalid"
            lefts.append(body["attempts_left"])
        assert lefts == [4, 3, 2, 1, 0]

        # Even the right code now: the attempts are spent.
        spent = await api.post(url, json={"code": message.code})
        assert problem(spent, 429)["code"] == "verification_attempts_exceeded"
        assert int(spent.headers["retry-after"]) >= 1
        assert (await status_of(api, registration_id))["status"] == "completed"


async def test_an_expired_code_gets_410_and_a_resent_code_verifies(
    mailing: Settings, mailbox: MailSink
) -> None:
    # Codes that expire as they are made: the first one is expired by the time it is read.
    expiring = dataclasses.replace(mailing, verification_code_ttl_seconds=0)
    async with AsyncTestClient(app=build_app(expiring)) as api:
        registration_id = await _signed_up(api, 3)
        async with running_worker(expiring):
            [first] = await wait_for_messages(mailbox.directory, registration_id)
            url = f"/registrations/{registration_id}/verification"
            expired = problem(await api.post(url, json={"code": first.code}), 410)
            assert expired["code"] == "verification_code_expired"
            assert "resend" in expired["detail"]

    # The same registration, with codes that last: ask for a new one (at once: no wait
    # between messages here).
    lasting = dataclasses.replace(mailing, verification_resend_seconds=0)
    async with AsyncTestClient(app=build_app(lasting)) as api:
        resent = await api.post(f"{url}/resend")
        assert resent.status_code == 202, resent.text
        assert resent.json() == {"registration_id": registration_id}
        async with running_worker(lasting):
            first_again, second = await wait_for_messages(mailbox.directory, registration_id, 2)
        assert first_again.message_id != second.message_id and second.code
        # The old code stopped working when the new one was made.
        if first.code != second.code:
            old = problem(await api.post(url, json={"code": first.code}), 422)
            assert old["code"] == "verification_code_invalid"
        # So did the old link's token; the new one works.
        assert (await api.post(url, json={"code": first.token})).status_code == 422
        verified = await api.post(url, json={"code": second.token})
        assert verified.status_code == 200 and verified.json()["status"] == "verified"
        # Nothing more to send to a verified registration.
        done = problem(await api.post(f"{url}/resend"), 409)
        assert done["code"] == "registration_already_verified"


async def test_no_code_outlives_its_registrations_deadline_not_even_a_resent_one(
    mailing: Settings, mailbox: MailSink
) -> None:
    # An hour to verify, codes of a day, a new message whenever asked.
    short = dataclasses.replace(
        mailing, verification_ttl_seconds=3600, verification_resend_seconds=0
    )
    async with AsyncTestClient(app=build_app(short)) as api:
        registration_id = await _signed_up(api, 12)
        async with running_worker(short):
            await wait_for_messages(mailbox.directory, registration_id)
            first = await _code_and_registration_ends(short, registration_id)
            resent = await api.post(f"/registrations/{registration_id}/verification/resend")
            assert resent.status_code == 202, resent.text
            await wait_for_messages(mailbox.directory, registration_id, 2)
            second = await _code_and_registration_ends(short, registration_id)
    for code_ends, registration_ends, requested in (first, second):
        assert code_ends == registration_ends  # not now + 24 h
        assert registration_ends - requested == timedelta(hours=1)


async def _code_and_registration_ends(
    settings: Settings, registration_id: str
) -> tuple[datetime, datetime, datetime]:
    """When the challenge's code and its registration end, and when it was requested."""
    conn = await asyncpg.connect(asyncpg_dsn(settings.read_url))
    try:
        row = await conn.fetchrow(
            "SELECT code_expires_at, expires_at, requested_at FROM email_verifications"
            " WHERE registration_id = $1",
            uuid.UUID(registration_id),
        )
    finally:
        await conn.close()
    assert row is not None
    return row["code_expires_at"], row["expires_at"], row["requested_at"]


async def test_a_new_code_is_refused_too_soon_after_the_last_and_once_every_message_is_spent(
    mailing: Settings, mailbox: MailSink
) -> None:
    limited = dataclasses.replace(mailing, verification_resend_seconds=3600)
    async with AsyncTestClient(app=build_app(limited)) as api:
        registration_id = await _signed_up(api, 4)
        async with running_worker(limited):
            await wait_for_messages(mailbox.directory, registration_id)
        url = f"/registrations/{registration_id}/verification/resend"
        too_soon = await api.post(url)
        assert problem(too_soon, 429)["code"] == "verification_resend_limited"
        assert 3500 < int(too_soon.headers["retry-after"]) <= 3600

    # No wait between messages, two in all: the first and one resend.
    few = dataclasses.replace(mailing, verification_resend_seconds=0, verification_max_sends=2)
    async with AsyncTestClient(app=build_app(few)) as api:
        assert (await api.post(url)).status_code == 202
        spent = await api.post(url)
        assert problem(spent, 429)["code"] == "verification_resend_limited"
        # Until the registration's own end: nothing more will be sent.
        assert int(spent.headers["retry-after"]) > 40 * 3600
        async with running_worker(few):
            await wait_for_messages(mailbox.directory, registration_id, 2)


@pytest.mark.parametrize(
    "path",
    ["verification", "verification/resend"],
)
@pytest.mark.parametrize(
    "registration_id",
    ["6f1c2a52-3d4e-4f60-8a71-92b3c4d5e6f7", "not-a-uuid"],
    ids=["unknown", "malformed"],
)
async def test_an_unknown_or_malformed_id_gets_404(
    api: Client, path: str, registration_id: str
) -> None:
    answer = await api.post(f"/registrations/{registration_id}/{path}", json={"code": "123456"})
    assert problem(answer, 404)["code"] == "registration_not_found"


async def test_a_code_before_the_registration_completed_is_wrong_and_costs_nothing(
    api: Client,
) -> None:
    registration_id = await _signed_up(api, 5)  # no worker: it stays pending, no code sent
    url = f"/registrations/{registration_id}/verification"
    for _ in range(8):
        body = problem(await api.post(url, json={"code": "123456"}), 422)
        assert body["code"] == "verification_code_invalid"
    # Its first message goes when it completes: a resend now queues nothing, and says so.
    assert (await api.post(f"{url}/resend")).status_code == 202


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (b"{}", 422, "validation_failed"),
        (b'{"code": 123456}', 422, "validation_failed"),
        (b'{"code": "123456", "extra": 1}', 422, "validation_failed"),
        (b"[]", 422, "validation_failed"),
        (b"{", 400, "malformed_json"),
        (b"x" * 2000, 413, "body_too_large"),
    ],
)
async def test_a_body_that_is_not_a_code_gets_a_problem_and_costs_no_attempt(
    api: Client, body: bytes, status: int, code: str
) -> None:
    registration_id = await _signed_up(api, 6)
    answer = await api.post(
        f"/registrations/{registration_id}/verification",
        content=body,
        headers={"content-type": "application/json"},
    )
    assert problem(answer, status)["code"] == code


async def test_a_code_sent_as_a_form_gets_415(api: Client) -> None:
    registration_id = await _signed_up(api, 7)
    answer = await api.post(
        f"/registrations/{registration_id}/verification", data={"code": "123456"}
    )
    assert problem(answer, 415)["code"] == "unsupported_media_type"


async def test_an_unverified_registration_expires_and_the_same_email_and_cpf_sign_up_again(
    mailing: Settings,
) -> None:
    # No time to verify: each registration is overdue as soon as it completes.
    hurried = dataclasses.replace(mailing, verification_ttl_seconds=0)
    async with AsyncTestClient(app=build_app(hurried)) as api:
        first = await _signed_up(api, 8)
        async with running_worker(hurried):
            await eventually(lambda: _has_status(api, first, "expired"))
            expired = await status_of(api, first)
            assert set(expired) == {"registration_id", "status", "requested_at", "updated_at"}

            # Its email and CPF are free again: the real owner signs up.
            second = await _signed_up(api, 8)
            assert second != first
            await eventually(lambda: _has_status(api, second, "expired"))
        # The expired one cannot be verified, nor sent a new code. Its code is the one its
        # message carried, or would have: with no time at all to verify, the expiry can drop
        # the message before the mailer's turn (it did on a loaded machine), so the code is
        # made from the challenge's nonce as the mailer makes it.
        late = problem(
            await api.post(
                f"/registrations/{first}/verification",
                json={"code": await _code_of(hurried, first)},
            ),
            410,
        )
        assert late["code"] == "verification_code_expired"
        gone = problem(await api.post(f"/registrations/{first}/verification/resend"), 410)
        assert gone["code"] == "registration_expired"


async def _code_of(settings: Settings, registration_id: str) -> str:
    """The code of the registration's first message, from its nonce in the outbox."""
    connection = await asyncpg.connect(settings.read_url)
    try:
        nonce = await connection.fetchval(
            "SELECT nonce FROM mail_outbox WHERE registration_id = $1 ORDER BY id LIMIT 1",
            uuid.UUID(registration_id),
        )
    finally:
        await connection.close()
    assert nonce is not None, "no message was ever queued"
    key = verification_key(settings.reservation_key.encode())
    return code_for(key, uuid.UUID(registration_id), bytes(nonce))


async def _has_status(api: Client, registration_id: str, status: str) -> bool:
    return bool((await status_of(api, registration_id))["status"] == status)
