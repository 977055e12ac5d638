"""What verification does beside the HTTP answers: the owner notices go to verified holders
only, a message the relay keeps refusing becomes a dead letter, an expired registration leaves
its personal data nowhere and a rebuild does not bring it back."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import functools
import re
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
from aiosmtpd.controller import Controller
from litestar.testing import AsyncTestClient
from structlog.testing import capture_logs

from domain.registration import expired, verified
from infrastructure.composition.read_side import open_read_side
from infrastructure.event_store.store import open_event_store
from infrastructure.read_side.rebuild import rebuild
from infrastructure.settings import Settings
from infrastructure.verification.challenges import EventStoreVerdicts
from infrastructure.verification.mail_sink import MailSink
from interfaces.http.app import build_app
from tests.factories import make_cpf, valid_form
from tests.mail import messages_for, received, wait_for_messages
from tests.read_models import (
    catch_up,
    eventually,
    replayed_rows,
    running_worker,
    status_of,
    table_rows,
)
from tests.servers import free_port, run_signup

Client = AsyncTestClient  # type: ignore[type-arg]


@pytest.fixture
def mailbox(tmp_path: Path) -> Iterator[MailSink]:
    with MailSink(tmp_path / "mail") as sink:
        yield sink


def _person(n: int, email: str | None = None) -> dict[str, Any]:
    email = email or f"efeito{n}@example.com"
    return valid_form(cpf=make_cpf(88_000 + n), email=email, email_confirmation=email)


async def _signed_up(api: Client, form: dict[str, Any]) -> str:
    response = await api.post("/registrations", json=form)
    assert response.status_code == 202, response.text
    registration_id: str = response.json()["registration_id"]
    return registration_id


def _query(url: str, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(sql, args).fetchall()


async def test_an_owner_notice_waits_for_its_holder_to_verify_and_goes_to_verified_holders_only(
    settings: Settings, mailbox: MailSink
) -> None:
    resistant = dataclasses.replace(
        settings, enumeration_resistant=True, smtp_url=mailbox.url, verification_resend_seconds=0
    )
    async with AsyncTestClient(app=build_app(resistant)) as api:
        holder = await _signed_up(api, _person(1, "titular@example.com"))
        async with running_worker(resistant):
            [verification] = await wait_for_messages(mailbox.directory, holder)
            # Someone else tries the holder's email: the same 202, a notice queued...
            await _signed_up(api, _person(2, "titular@example.com"))
            await eventually(lambda: _notices_queued(resistant, 1))
            # ...that is not sent while the holder has not proved the address.
            assert [m.kind for m in messages_for(mailbox.directory, holder)] == ["verification"]

            answer = await api.post(
                f"/registrations/{holder}/verification", json={"code": verification.code}
            )
            assert answer.status_code == 200

            notice = (await wait_for_messages(mailbox.directory, holder, 2))[1]
            assert notice.kind == "owner_notice"
            assert notice.to == "titular@example.com"
            assert notice.subject == "Tentativa de cadastro com os seus dados"
            assert "o seu e-mail" in notice.text
    # Nothing went to the person trying: one address only ever received mail.
    assert {m.to for m in received(mailbox.directory)} == {"titular@example.com"}


async def _notices_queued(settings: Settings, count: int) -> bool:
    assert settings.database_url
    rows = _query(
        settings.database_url,
        "SELECT count(*) FROM signup_owner_notifications WHERE queued_at IS NOT NULL",
    )
    return bool(rows[0][0] == count)


async def test_a_notice_to_a_holder_that_expired_is_dropped_unsent(
    settings: Settings, mailbox: MailSink
) -> None:
    # Completed, then expired at once: the notice will never have a verified holder.
    resistant = dataclasses.replace(
        settings, enumeration_resistant=True, smtp_url=mailbox.url, verification_ttl_seconds=0
    )
    async with AsyncTestClient(app=build_app(resistant)) as api:
        holder = await _signed_up(api, _person(3))
        await _signed_up(api, _person(4, "efeito3@example.com"))  # a duplicate, before expiry
        async with running_worker(resistant):
            await eventually(lambda: _status_is(api, holder, "expired"))
            await eventually(lambda: _dropped(resistant, holder))
    assert all(m.kind == "verification" for m in received(mailbox.directory))


async def test_a_notice_to_a_holder_from_before_verification_is_dropped_unsent(
    settings: Settings, mailbox: MailSink
) -> None:
    """A holder who registered before verification existed is never asked to verify, so
    never becomes a verified holder: their notice would wait forever, or go to an address
    nobody proved."""
    resistant = dataclasses.replace(settings, enumeration_resistant=True, smtp_url=mailbox.url)
    async with AsyncTestClient(app=build_app(resistant)) as api:
        holder = await _signed_up(api, _person(11, "antigo@example.com"))
        # Verification "began" just after the holder signed up (as the epoch test does).
        with psycopg.connect(settings.read_url) as conn:
            conn.execute("UPDATE verification_epoch SET since = now()")
        newer = await _signed_up(api, _person(12))
        async with running_worker(resistant):
            # The relay takes messages: the newer registration's verification goes.
            await wait_for_messages(mailbox.directory, newer)
            await eventually(lambda: _status_is(api, holder, "completed"))
            # Someone else tries the holder's email: the same 202, a notice for the holder.
            await _signed_up(api, _person(13, "antigo@example.com"))
            await eventually(lambda: _dropped(resistant, holder))
        notices = _query(
            settings.read_url,
            "SELECT dropped, sent_at FROM mail_outbox"
            " WHERE registration_id = %s AND kind = 'owner_notice'",
            holder,
        )
        assert notices == [("holder_not_verified", None)]
    assert messages_for(mailbox.directory, holder) == []
    assert {m.to for m in received(mailbox.directory)} == {"efeito12@example.com"}


async def _status_is(api: Client, registration_id: str, status: str) -> bool:
    return bool((await status_of(api, registration_id))["status"] == status)


async def _dropped(settings: Settings, holder: str) -> bool:
    rows = _query(
        settings.read_url,
        "SELECT dropped FROM mail_outbox WHERE registration_id = %s AND kind = 'owner_notice'",
        holder,
    )
    return rows != [] and all(reason is not None for (reason,) in rows)


async def test_a_message_the_relay_keeps_refusing_becomes_a_dead_letter_an_operator_retries(
    settings: Settings, tmp_path: Path
) -> None:
    refusing = True

    def refuse(_: bytes) -> None:
        if refusing:
            raise RuntimeError("mailbox unavailable")  # the relay answers 500

    with MailSink(tmp_path / "mail", before_store=refuse) as sink:
        mailing = dataclasses.replace(settings, smtp_url=sink.url)
        async with AsyncTestClient(app=build_app(mailing)) as api:
            registration_id = await _signed_up(api, _person(5))
            async with running_worker(mailing):
                await eventually(lambda: _dead_letters(mailing, 1))
                # A message that could not go does not fail its registration.
                assert (await status_of(api, registration_id))["status"] == "completed"

            listed = await run_signup(mailing, "dead-letters", "list")
            assert listed.returncode == 0, listed.stderr
            [line] = [row for row in listed.stdout.splitlines() if "mailer" in row]
            assert registration_id in line and "dead" in line
            assert received(sink.directory) == []

            refusing = False
            retried = await run_signup(mailing, "dead-letters", "retry", "--all")
            assert retried.returncode == 0, retried.stderr + retried.stdout
            assert "projected" in retried.stdout
            [message] = messages_for(sink.directory, registration_id)
            assert message.kind == "verification"
            assert not await _dead_letters(mailing, 1)


async def _dead_letters(settings: Settings, count: int) -> bool:
    rows = _query(
        settings.read_url,
        "SELECT count(*) FROM projection_failures WHERE projection = 'mailer' AND state = 'dead'",
    )
    return bool(rows[0][0] == count)


async def test_expired_registrations_leave_no_personal_data_and_a_rebuild_keeps_them_expired(
    settings: Settings, mailbox: MailSink
) -> None:
    hurried = dataclasses.replace(settings, smtp_url=mailbox.url, verification_ttl_seconds=0)
    # Two, signed up before the worker starts: one sweep takes both (it expires a batch).
    forms = [_person(6), _person(7)]
    async with AsyncTestClient(app=build_app(hurried)) as api:
        expired = [await _signed_up(api, form) for form in forms]
        async with running_worker(hurried) as read_side:
            for registration_id in expired:
                await eventually(functools.partial(_status_is, api, registration_id, "expired"))
            assert settings.database_url
            for registration_id, form in zip(expired, forms, strict=True):
                [(key,)] = _query(
                    settings.database_url,
                    "SELECT key FROM signup_subject_keys WHERE registration_id = %s",
                    registration_id,
                )
                assert key is None  # shredded
                claims = _query(
                    settings.database_url,
                    "SELECT count(*) FROM signup_claims WHERE registration_id = %s",
                    registration_id,
                )
                assert claims == [(0,)]  # released
                for url in (settings.read_url, *settings.shard_urls):
                    for view in ("email_lookup", "users"):
                        if _query(url, "SELECT to_regclass(%s)", view)[0][0]:
                            text = str(_query(url, f"SELECT * FROM {view}"))
                            assert form["email"] not in text and registration_id not in text
                topics = _query(
                    settings.database_url,
                    "SELECT topic FROM signup_events WHERE originator_id = %s ORDER BY 1",
                    registration_id,
                )
                assert [t.rsplit(".", 1)[-1] for (t,) in topics] == [
                    "RegistrationExpired",
                    "UserRegistrationRequested",
                ]

            for projector in read_side.all_projectors:
                await rebuild(projector)
            assert await table_rows(read_side) == await replayed_rows(read_side)
            for registration_id in expired:
                assert (await status_of(api, registration_id))["status"] == "expired"
    lookup = str(_query(settings.read_url, "SELECT * FROM email_lookup"))
    assert all(form["email"] not in lookup for form in forms)


async def test_an_expiry_verdict_alone_does_not_say_expired_until_its_values_are_free(
    settings: Settings,
) -> None:
    """``expired`` tells the person their email and CPF/CNPJ are free again. The verdict is
    the sweep's first step and the release comes after, so the live status projection leaves
    ``expired`` to the sweep; on a loaded machine a poll read ``expired`` from the verdict and
    the same person's signup right after was told 409. A rebuild still writes it from the
    event."""
    async with AsyncTestClient(app=build_app(settings)) as api:
        first = await _signed_up(api, _person(11))
        async with running_worker(settings) as read_side:
            await eventually(lambda: _status_is(api, first, "completed"))
            # The verdict recorded as a sweep would begin, and the sweep stopped right there.
            events = await asyncio.to_thread(
                functools.partial(open_event_store, settings.database_url or "", 2)
            )
            try:
                requested_at = datetime.fromisoformat((await status_of(api, first))["requested_at"])
                verdict = expired(uuid.UUID(first), requested_at)
                assert await EventStoreVerdicts(events).record(verdict) is None
            finally:
                await asyncio.to_thread(events.close)
            # A later registration completed: the status projection has passed the verdict.
            later = await _signed_up(api, _person(12))
            await eventually(lambda: _status_is(api, later, "completed"))

            # Read from the table: a poll may be answered by the status cache.
            assert _status_row(settings, first) == "completed"
            # Its values are still held: a new signup with them is refused, as it should be.
            again = await api.post("/registrations", json=_person(11))
            assert again.status_code == 409, again.text

            [status] = [p for p in read_side.all_projectors if p.name == "registration_status"]
            await rebuild(status)
            assert _status_row(settings, first) == "expired"


def _status_row(settings: Settings, registration_id: str) -> str:
    [(status,)] = _query(
        settings.read_url,
        "SELECT status FROM registration_status WHERE registration_id = %s",
        registration_id,
    )
    return str(status)


async def test_a_duplicate_attempts_id_expires_as_a_real_unverified_registration_does(
    settings: Settings, mailbox: MailSink
) -> None:
    """The enumeration-resistant mode: a decoy still `completed` after the deadline, beside
    real registrations going `expired`, would tell whoever waits that the email is taken."""
    hurried = dataclasses.replace(
        settings, enumeration_resistant=True, smtp_url=mailbox.url, verification_ttl_seconds=0
    )
    async with AsyncTestClient(app=build_app(hurried)) as api:
        holder = await _signed_up(api, _person(7, "dono@example.com"))
        async with running_worker(hurried):
            await eventually(lambda: _status_is(api, holder, "expired"))
            real = await _signed_up(api, _person(8, "novo@example.com"))
            decoy = await _signed_up(api, _person(9, "novo@example.com"))
            await eventually(lambda: _status_is(api, real, "expired"))
            await eventually(lambda: _status_is(api, decoy, "expired"))
            answers = [await status_of(api, rid) for rid in (real, decoy)]
            assert answers[0].keys() == answers[1].keys()
        # A message went to the real one's address; none anywhere for the decoy.
        assert messages_for(mailbox.directory, decoy) == []


async def test_a_verification_and_an_expiry_racing_record_one_verdict_only(
    settings: Settings,
) -> None:
    """Each verdict is the registration's second event: PostgreSQL keeps the first appended,
    and the other learns which one won, however many race."""
    async with AsyncTestClient(app=build_app(settings)) as api:
        registration_id = await _signed_up(api, _person(10))
    assert settings.database_url
    events = await asyncio.to_thread(functools.partial(open_event_store, settings.database_url, 8))
    try:
        verdicts = EventStoreVerdicts(events)
        rid = uuid.UUID(registration_id)
        [at] = [
            row[0]
            for row in _query(
                settings.database_url,
                "SELECT now() FROM signup_events WHERE originator_id = %s",
                registration_id,
            )
        ]
        contenders = [verified(rid, at) if n % 2 else expired(rid, at) for n in range(8)]
        answers = await asyncio.gather(*(verdicts.record(event) for event in contenders))
    finally:
        await asyncio.to_thread(events.close)

    assert answers.count(None) == 1  # one recorded
    winner = contenders[answers.index(None)]
    expected = "verified" if type(winner).__name__ == "EmailVerified" else "expired"
    assert all(answer == expected for answer in answers if answer is not None)
    versions = _query(
        settings.database_url,
        "SELECT originator_version FROM signup_events WHERE originator_id = %s ORDER BY 1",
        registration_id,
    )
    assert versions == [(1,), (2,)]


async def test_a_sweeps_verdicts_go_in_one_append_and_one_verified_meanwhile_keeps_its_verdict(
    settings: Settings,
) -> None:
    """A sweep appends its expiry verdicts together; one that meets a verification recorded
    meanwhile sends them one at a time, so that registration is told it was verified and the
    others still expire."""
    async with AsyncTestClient(app=build_app(settings)) as api:
        ids = [uuid.UUID(await _signed_up(api, _person(40 + n))) for n in range(3)]
    assert settings.database_url
    events = await asyncio.to_thread(functools.partial(open_event_store, settings.database_url, 2))
    try:
        verdicts = EventStoreVerdicts(events)
        [(at,)] = _query(settings.database_url, "SELECT now()")
        assert await verdicts.record(verified(ids[1], at)) is None
        answers = await verdicts.record_all([expired(rid, at) for rid in ids])
    finally:
        await asyncio.to_thread(events.close)

    assert answers == [None, "verified", None]
    topics = _query(
        settings.database_url,
        "SELECT originator_id, topic FROM signup_events WHERE originator_version = 2",
    )
    assert {(rid, topic.rsplit(".", 1)[-1]) for rid, topic in topics} == {
        (ids[0], "RegistrationExpired"),
        (ids[1], "EmailVerified"),
        (ids[2], "RegistrationExpired"),
    }


async def test_two_mailers_share_the_outbox_and_every_message_goes_once(
    settings: Settings, mailbox: MailSink
) -> None:
    sharded = dataclasses.replace(settings, smtp_url=mailbox.url, mail_shards=2)
    async with AsyncTestClient(app=build_app(sharded)) as api:
        ids = [await _signed_up(api, _person(20 + n)) for n in range(6)]
    async with running_worker(sharded):  # it sends shard 0, the even outbox ids
        await eventually(lambda: _sent_by_parity(sharded, {0: 3, 1: 0}))
        other = open_read_side(sharded)
        other.mailer.shard = 1
        stop = asyncio.Event()
        sending = asyncio.create_task(other.mailer.run(stop))
        try:
            await eventually(lambda: _sent_by_parity(sharded, {0: 3, 1: 3}))
        finally:
            stop.set()
            await sending
            await other.close()
    assert sorted(m.registration_id for m in received(mailbox.directory)) == sorted(ids)


class _Room:
    """A machine whose cores stay saturated until ``freed`` is set."""

    def __init__(self) -> None:
        self.asked = 0
        self.freed = asyncio.Event()

    async def wait(self, stop: asyncio.Event) -> None:
        self.asked += 1
        await self.freed.wait()


async def test_a_mailer_in_the_background_sends_no_further_batch_until_the_machine_has_room(
    settings: Settings, mailbox: MailSink
) -> None:
    async with AsyncTestClient(app=build_app(settings)) as api:
        ids = [await _signed_up(api, _person(60 + n)) for n in range(5)]
    async with running_worker(settings):  # no SMTP_URL: it queues the messages, sends none

        async def queued() -> bool:
            return len(_query(settings.read_url or "", "SELECT id FROM mail_outbox")) == 5

        await eventually(queued)
    sender = open_read_side(dataclasses.replace(settings, smtp_url=mailbox.url))
    sender.mailer.batch = 2
    room = sender.mailer.room = _Room()
    stop = asyncio.Event()
    sending = asyncio.create_task(sender.mailer.run(stop))
    try:

        async def asked() -> bool:
            return room.asked == 1

        await eventually(asked)
        await asyncio.sleep(0.5)
        assert len(received(mailbox.directory)) == 2  # one full batch, then it waits

        room.freed.set()

        async def all_sent() -> bool:
            return len(received(mailbox.directory)) == 5

        await eventually(all_sent)
    finally:
        stop.set()
        room.freed.set()
        await sending
        await sender.close()
    assert sorted(m.registration_id for m in received(mailbox.directory)) == sorted(ids)


async def _sent_by_parity(settings: Settings, expected: dict[int, int]) -> bool:
    rows = _query(settings.read_url, "SELECT id, sent_at FROM mail_outbox")
    if len(rows) < sum(expected.values()) or len(rows) < 6:
        return False
    sent = {0: 0, 1: 0}
    for outbox_id, at in rows:
        sent[outbox_id % 2] += at is not None
    return sent == expected


async def test_a_registration_requested_before_verification_began_is_never_mailed_nor_expired(
    settings: Settings, mailbox: MailSink
) -> None:
    """The README: registrations requested before the first migration that knew verification
    are not asked to verify and never expire, and a rebuild of the status read model does not
    mail (and then expire) them. Verification "began" here just after the older signup."""
    hurried = dataclasses.replace(settings, smtp_url=mailbox.url, verification_ttl_seconds=0)
    assert settings.read_url
    async with AsyncTestClient(app=build_app(hurried)) as api:
        older = await _signed_up(api, _person(20))
        with psycopg.connect(settings.read_url) as conn:
            conn.execute("UPDATE verification_epoch SET since = now()")
        newer = await _signed_up(api, _person(21))
        async with running_worker(hurried) as read_side:
            # The sweep has passed both (TTL 0): the newer one, asked to verify, expired.
            await eventually(lambda: _status_is(api, newer, "expired"))
            assert (await status_of(api, older))["status"] == "completed"

            await rebuild(read_side.projector("registration_status"))
            await eventually(lambda: _status_is(api, newer, "expired"))
            assert (await status_of(api, older))["status"] == "completed"
    for table in ("email_verifications", "mail_outbox"):
        rows = _query(
            settings.read_url,
            f"SELECT registration_id::text FROM {table}",
        )
        assert (older,) not in rows, f"{table} holds the older registration"
        assert (newer,) in rows, f"{table} does not hold the newer one: the test proves nothing"
    assert messages_for(mailbox.directory, older) == []


async def test_expiry_drops_the_unsent_mail_and_leaves_a_status_row_of_ids_and_times_only(
    settings: Settings, tmp_path: Path
) -> None:
    # A relay nobody answers on yet: the verification message waits in the outbox, unsent,
    # when the registration expires (TTL 0).
    port = free_port()
    hurried = dataclasses.replace(
        settings, smtp_url=f"smtp://127.0.0.1:{port}", verification_ttl_seconds=0
    )
    form = _person(30)
    async with AsyncTestClient(app=build_app(hurried)) as api:
        expired = await _signed_up(api, form)
        async with running_worker(hurried) as read_side:
            await eventually(lambda: _status_is(api, expired, "expired"))
            outbox = _query(
                settings.read_url,
                "SELECT kind, sent_at, dropped FROM mail_outbox WHERE registration_id = %s",
                expired,
            )
            assert outbox == [("verification", None, "recipient_expired")]

            # The relay answers now: nothing of theirs is left to send, and nothing goes.
            with MailSink(tmp_path / "mail", port=port) as sink:
                assert await read_side.mailer.send_due() == 0
            assert received(sink.directory) == []

    with psycopg.connect(settings.read_url) as conn:
        cursor = conn.execute(
            "SELECT * FROM registration_status WHERE registration_id = %s", (expired,)
        )
        [row] = cursor.fetchall()
        columns = [column.name for column in cursor.description or ()]
    kept = dict(zip(columns, row, strict=True))
    assert kept.pop("status") == "expired"
    assert kept.pop("user_id") is None and kept.pop("reason") is None  # the user is gone
    assert str(kept.pop("registration_id")) == expired
    assert sorted(kept) == ["requested_at", "updated_at"]
    assert all(isinstance(at, datetime) for at in kept.values())


async def _sent(settings: Settings, registration_id: str) -> bool:
    rows = _query(
        settings.read_url,
        "SELECT sent_at FROM mail_outbox WHERE registration_id = %s",
        registration_id,
    )
    return rows != [] and all(at is not None for (at,) in rows)


def _where_stored(settings: Settings, pattern: str, raw: bytes = b"") -> set[str]:
    """Every column (table.column) of every table, in the event store's database,
    the read database and the shards, whose text matches ``pattern`` or whose bytes match
    it or contain ``raw``. Bytes are searched as they are, not as hex: a hex rendering would
    hold chance runs of digits."""
    in_text = re.compile(pattern)
    in_bytes = re.compile(pattern.encode() + (b"|" + re.escape(raw) if raw else b""))
    found = set()
    urls = {settings.database_url or settings.read_url, settings.read_url, *settings.shard_urls}
    for url in sorted(urls):
        with psycopg.connect(url) as conn:
            columns = conn.execute(
                "SELECT c.table_schema, c.table_name, c.column_name, c.data_type"
                " FROM information_schema.columns c JOIN information_schema.tables t"
                " USING (table_schema, table_name)"
                " WHERE t.table_type = 'BASE TABLE'"
                " AND c.table_schema NOT IN ('pg_catalog', 'information_schema')"
                " AND c.data_type IN ('text', 'character varying', 'character', 'json',"
                "  'jsonb', 'bytea', 'ARRAY')"
            ).fetchall()
            for schema, table, column, kind in columns:
                cast = "" if kind == "bytea" else "::text"
                values = conn.execute(
                    f'SELECT "{column}"{cast} FROM "{schema}"."{table}"'
                    f' WHERE "{column}" IS NOT NULL'
                ).fetchall()
                for (value,) in values:
                    hit = (
                        in_bytes.search(bytes(value))
                        if kind == "bytea"
                        else in_text.search(str(value))
                    )
                    if hit:
                        found.add(f"{table}.{column}")
    return found


async def test_neither_the_code_nor_the_token_of_a_verification_message_is_stored(
    settings: Settings, mailbox: MailSink
) -> None:
    mailing = dataclasses.replace(settings, smtp_url=mailbox.url)
    form = _person(31)
    async with AsyncTestClient(app=build_app(mailing)) as api:
        registration_id = await _signed_up(api, form)
        async with running_worker(mailing):
            [message] = await wait_for_messages(mailbox.directory, registration_id)
            code, token = message.code, message.token
            # Searched once the send is recorded: whatever the mailer writes after it, too.
            await eventually(lambda: _sent(mailing, registration_id))
            # A code is six digits: only a whole number counts (not digits inside others).
            code_pattern = rf"(?<!\d){code}(?!\d)"
            # The token's 32 bytes too, raw or in hex, besides its base64url text.
            token_bytes = base64.urlsafe_b64decode(token + "=")
            token_pattern = rf"{re.escape(token)}|{token_bytes.hex()}"
            # What is searched is searched where it could be: the email's text in the email
            # lookup, the challenge's nonce bytes in its row.
            [(nonce,)] = _query(
                settings.read_url,
                "SELECT nonce FROM email_verifications WHERE registration_id = %s",
                registration_id,
            )
            found = _where_stored(mailing, re.escape(form["email"]))
            assert any(place.startswith("email_lookup") for place in found), found
            assert _where_stored(mailing, "(?!)", bytes(nonce)) == {  # (?!): no text matches
                "email_verifications.nonce",
                "mail_outbox.nonce",
            }
            assert _where_stored(mailing, code_pattern) == set()
            assert _where_stored(mailing, token_pattern, token_bytes) == set()

            # Verifying with the code stores it nowhere either.
            answer = await api.post(
                f"/registrations/{registration_id}/verification", json={"code": code}
            )
            assert answer.status_code == 200, answer.text
            assert _where_stored(mailing, code_pattern) == set()
            assert _where_stored(mailing, token_pattern, token_bytes) == set()


async def test_a_relay_that_cannot_be_reached_is_waited_out_and_its_message_goes_once_it_listens(
    settings: Settings, tmp_path: Path
) -> None:
    """README: a relay that cannot be reached is an outage, waited out, not a failed send: no
    attempt is spent, nothing is parked or dead-lettered, and the message goes once it is up."""
    port = free_port()  # nothing listens there until the sink below takes it
    mailing = dataclasses.replace(settings, smtp_url=f"smtp://127.0.0.1:{port}")
    mail = tmp_path / "mail"
    # The relay, once up, outlives the worker: a second send would reach it and be counted.
    with capture_logs() as logged, contextlib.ExitStack() as relay:
        async with AsyncTestClient(app=build_app(mailing)) as api:
            registration_id = await _signed_up(api, _person(40))
            async with running_worker(mailing):
                await eventually(lambda: _status_is(api, registration_id, "completed"))
                # Until the mailer has met the refused connection twice (tried, backed off,
                # tried again), or has given up on the message, which the asserts refuse.
                await eventually(
                    lambda: _waited_or_parked(logged, settings, registration_id, tries=2)
                )
                outbox = _query(
                    settings.read_url,
                    "SELECT sent_at, dropped FROM mail_outbox WHERE registration_id = %s",
                    registration_id,
                )
                assert outbox == [(None, None)]  # still queued: neither sent nor dropped
                assert _mailer_failures(settings) == 0  # an outage is not the message's fault
                # What the operator reads meanwhile: the relay is unavailable, mail waits.
                assert sum(entry["event"] == "mailer_unavailable" for entry in logged) >= 2
                # The outage never reaches the registration either.
                assert (await status_of(api, registration_id))["status"] == "completed"

                # The relay comes up where SMTP_URL points: the mailer's next try finds it,
                # after a backoff of a few seconds at most (it doubles from 0.5 s).
                relay.enter_context(MailSink(mail, port=port))
                [message] = await wait_for_messages(mail, registration_id)
                assert message.kind == "verification"
                assert message.to == _person(40)["email"]
                await eventually(lambda: _sent(mailing, registration_id))
        # Counted with the worker stopped: whatever its mailer did after the send is in.
        assert len(messages_for(mail, registration_id)) == 1
    assert _mailer_failures(settings) == 0


async def _waited_or_parked(
    logged: list[dict[str, Any]], settings: Settings, registration_id: str, tries: int
) -> bool:
    waited = sum(entry["event"] == "mailer_unavailable" for entry in logged) >= tries
    settled = _query(
        settings.read_url,
        "SELECT count(*) FROM mail_outbox WHERE registration_id = %s"
        " AND (sent_at IS NOT NULL OR dropped IS NOT NULL)",
        registration_id,
    )
    return waited or _mailer_failures(settings) > 0 or settled != [(0,)]


def _mailer_failures(settings: Settings) -> int:
    [(count,)] = _query(
        settings.read_url, "SELECT count(*) FROM projection_failures WHERE projection = 'mailer'"
    )
    return int(count)


class _Gathering:
    """An SMTP handler (aiosmtpd) that holds each transaction at MAIL until ``wanted`` are open
    at once, or two seconds have passed; it remembers the most it saw open together."""

    def __init__(self, wanted: int) -> None:
        self.wanted = wanted
        self.open = 0
        self.most = 0
        self.received: list[bytes] = []
        self._all_here = asyncio.Event()

    async def handle_MAIL(
        self, server: Any, session: Any, envelope: Any, address: str, options: Any
    ) -> str:
        self.open += 1
        self.most = max(self.most, self.open)
        if self.open >= self.wanted:
            self._all_here.set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._all_here.wait(), 2)
        envelope.mail_from = address
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.received.append(envelope.content)
        self.open -= 1
        return "250 OK"


async def test_a_batch_of_mail_goes_over_several_connections_to_the_relay_at_once(
    settings: Settings,
) -> None:
    # A relay a few milliseconds away answers each of a message's four commands a round trip
    # later: one connection at a time would send ~90 messages a second whatever the CPU.
    relay = _Gathering(wanted=4)
    port = free_port()
    controller = Controller(relay, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        mailing = dataclasses.replace(settings, smtp_url=f"smtp://127.0.0.1:{port}")
        async with AsyncTestClient(app=build_app(mailing)) as api:
            ids = [await _signed_up(api, _person(60 + n)) for n in range(8)]
        read_side = open_read_side(mailing)
        try:
            for projector in read_side.all_projectors:
                await catch_up(projector)
            assert read_side.mailer.sessions == 4
            assert await read_side.mailer.send_due() == 8
            assert await read_side.mailer.send_due() == 0  # each marked sent, once
        finally:
            await read_side.close()
    finally:
        controller.stop()
    assert relay.most == 4, "the batch's messages went one connection at a time"
    assert sorted(_registration_of(content) for content in relay.received) == sorted(ids)


def _registration_of(content: bytes) -> str:
    found = re.search(rb"^X-Signup-Registration: ([0-9a-f-]+)", content, re.MULTILINE)
    assert found is not None
    return found.group(1).decode()
