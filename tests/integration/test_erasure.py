"""LGPD erasure: `signup erase` shreds a person's key and removes them from every read model;
a rebuild afterwards still succeeds, without them."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterable, Sequence
from pathlib import Path
from typing import Any

import psycopg
import pytest
from eventsourcing.cryptography import AESCipher
from litestar.testing import AsyncTestClient
from redis.asyncio import Redis

from infrastructure.composition.read_side import open_read_side
from infrastructure.read_side.failures import FailureLog
from infrastructure.read_side.read_store import ProjectionStore
from infrastructure.read_side.rebuild import rebuild
from infrastructure.read_side.status_cache import PENDING_SECONDS, is_settlement
from infrastructure.settings import Settings
from infrastructure.verification.mail_sink import MailSink
from interfaces.http.app import build_app
from projections.model import REGISTRATION_REQUESTED, Row
from tests import clients
from tests.databases import with_cipher_key
from tests.factories import make_cnpj, make_cpf, mask_cnpj, valid_form, valid_pj_form
from tests.mail import wait_for_messages
from tests.read_models import (
    Poison,
    all_have_status,
    eventually,
    replayed_rows,
    running_worker,
    status_of,
    table_rows,
)
from tests.servers import free_port, run_signup, signup_process

Client = AsyncTestClient  # type: ignore[type-arg]


@pytest.fixture
def encrypted(settings: Settings) -> Settings:
    """With an event cipher key, so the subject keys are stored wrapped, as in production."""
    return with_cipher_key(settings, AESCipher.create_key(32))


@pytest.fixture
async def api(encrypted: Settings) -> AsyncIterator[Client]:
    async with AsyncTestClient(app=build_app(encrypted)) as client:
        yield client


def _person(n: int) -> dict[str, Any]:
    email = f"titular{n}@example.com"
    return valid_form(cpf=make_cpf(77_000 + n), email=email, email_confirmation=email)


async def _register(client: Client, form: dict[str, Any]) -> str:
    response = await client.post("/registrations", json=form)
    assert response.status_code == 202, response.text
    registration_id: str = response.json()["registration_id"]
    return registration_id


def _everything_readable(settings: Settings) -> str:
    """Every row of every read model, as text: what a query or a dump could show."""
    text = []
    for url in (settings.read_url, *settings.shard_urls):
        with psycopg.connect(url) as conn:
            for view in ("email_lookup", "registration_status", "users", "projection_failures"):
                exists = conn.execute("SELECT to_regclass(%s)", (view,)).fetchone()
                if exists and exists[0]:
                    text.extend(str(row) for row in conn.execute(f'SELECT * FROM "{view}"'))
    return "\n".join(text)


async def test_an_erased_person_leaves_every_read_model_and_a_rebuild_does_not_bring_them_back(
    api: Client, encrypted: Settings
) -> None:
    company = make_cnpj(77_100)
    erased_form = valid_pj_form(
        cpf=make_cpf(77_101),
        cnpj=mask_cnpj(company),
        email="apagar@example.com",
        email_confirmation="apagar@example.com",
        name="Empresa Esquecida",
    )
    erased = await _register(api, erased_form)
    kept = [await _register(api, _person(n)) for n in range(3)]
    async with running_worker(encrypted):
        await eventually(lambda: all_have_status(api, [erased, *kept], "completed"))
    user_id = (await status_of(api, erased))["user_id"]  # also caches the completed status
    before = _everything_readable(encrypted)
    # What is searched for afterwards was there to be found.
    assert "apagar@example.com" in before and erased_form["cpf"] in before and company in before
    read_side = open_read_side(encrypted)
    # Read (and so decoded and remembered) once before the erasure, by the reader used after.
    notes, _ = await read_side.source.read(0, 100, [REGISTRATION_REQUESTED])
    assert len([n for n in notes if n.registration.details is not None]) == 4

    result = await run_signup(encrypted, "erase", user_id)

    assert result.returncode == 0, result.stderr
    assert f"erased registration {erased}: key shredded" in result.stdout
    assert "released 2 of its values" in result.stdout  # the email and the CNPJ
    for name in ("email_lookup", "users_shard", "registration_status"):
        assert name in result.stdout
    assert (await api.get(f"/registrations/{erased}")).status_code == 404
    readable = _everything_readable(encrypted)
    responsible = erased_form["cpf"]
    for trace in ("apagar@example.com", company, responsible, "Empresa Esquecida", erased, user_id):
        assert trace not in readable, f"{trace!r} is still in a read model"
    assert await all_have_status(api, kept, "completed")

    try:
        notes, _ = await read_side.source.read(0, 100, [REGISTRATION_REQUESTED])
        opened = {str(n.registration_id): n.registration.details for n in notes}
        assert set(opened) == {erased, *kept}  # the event stays in the append-only store...
        assert opened[erased] is None  # ...and nobody can open it
        assert all(opened[rid] is not None for rid in kept)

        for projector in read_side.all_projectors:
            await rebuild(projector)
        assert await table_rows(read_side) == await replayed_rows(read_side)
    finally:
        await read_side.close()
    assert "apagar@example.com" not in _everything_readable(encrypted)
    assert (await api.get(f"/registrations/{erased}")).status_code == 404
    assert await all_have_status(api, kept, "completed")

    # The email and the CNPJ were released: the same company may sign up again, once.
    again = await _register(api, {**erased_form, "cpf": make_cpf(77_102)})
    assert (await api.post("/registrations", json=erased_form)).status_code == 409
    async with running_worker(encrypted):
        await eventually(lambda: all_have_status(api, [again], "completed"))
    assert (await api.get(f"/registrations/{erased}")).status_code == 404
    with psycopg.connect(encrypted.read_url) as conn:
        owner = conn.execute(
            "SELECT registration_id FROM email_lookup WHERE email = 'apagar@example.com'"
        ).fetchone()
    assert owner is not None and str(owner[0]) == again


async def test_a_person_is_found_by_the_email_they_signed_up_with_and_erasing_twice_says_so(
    api: Client, encrypted: Settings
) -> None:
    registration_id = await _register(api, _person(10))

    by_email = await run_signup(encrypted, "erase", " Titular10@Example.COM")
    again = await run_signup(encrypted, "erase", registration_id)
    unknown = await run_signup(encrypted, "erase", str(uuid.uuid4()))
    unknown_email = await run_signup(encrypted, "erase", "ninguem@example.com")
    malformed = await run_signup(encrypted, "erase", "not-an-id")

    assert by_email.returncode == 0, by_email.stderr
    assert f"erased registration {registration_id}: key shredded" in by_email.stdout
    assert again.returncode == 0 and "key already shredded" in again.stdout
    assert "released 0 of its values" in again.stdout
    for refused in (unknown, unknown_email, malformed):
        assert refused.returncode == 1
        assert "no user, registration or email" in refused.stderr


async def test_a_registration_erased_before_the_projectors_saw_it_never_appears(
    api: Client, encrypted: Settings
) -> None:
    erased = await _register(api, _person(20))
    kept = await _register(api, _person(21))
    assert (await status_of(api, erased))["status"] == "pending"

    result = await run_signup(encrypted, "erase", erased)
    assert result.returncode == 0, result.stderr
    # No read model held it: only the status cache, its pending note.
    assert "removed from: status_cache;" in result.stdout, result.stdout

    async with running_worker(encrypted):
        # Kept was appended after the erased one: once it is completed, the status projector
        # (which runs behind the others) has passed the erased registration too.
        await eventually(lambda: all_have_status(api, [kept], "completed"))
    assert (await api.get(f"/registrations/{erased}")).status_code == 404
    assert "titular20@example.com" not in _everything_readable(encrypted)


async def test_erasing_a_person_removes_their_cached_status_idempotency_record_and_notices(
    encrypted: Settings,
) -> None:
    resistant = dataclasses.replace(encrypted, enumeration_resistant=True)
    form = _person(30)
    key = f"erase-{uuid.uuid4()}"
    redis = Redis.from_url(encrypted.redis_url or "")
    async with AsyncTestClient(app=build_app(resistant)) as api:
        first = await api.post("/registrations", json=form, headers={"Idempotency-Key": key})
        assert first.status_code == 202, first.text
        erased = first.json()["registration_id"]
        async with running_worker(encrypted):
            await eventually(lambda: all_have_status(api, [erased], "completed"))
        await status_of(api, erased)  # cached
        # Someone else tries the same email: in this mode the holder is sent a notice.
        other = {**_person(31), "email": form["email"], "email_confirmation": form["email"]}
        assert (await api.post("/registrations", json=other)).status_code == 202
        with psycopg.connect(encrypted.database_url or "") as conn:
            notices = "SELECT count(*) FROM signup_owner_notifications WHERE registration_id = %s"
            assert conn.execute(notices, (erased,)).fetchone() == (1,)
        assert await redis.exists(f"signup:status:{erased}", f"signup:idempotency:{key}") == 2

        result = await run_signup(encrypted, "erase", erased)

        assert result.returncode == 0, result.stderr
        for place in ("owner_notifications", "status_cache", "idempotency_record"):
            assert place in result.stdout, result.stdout
        assert await redis.exists(f"signup:idempotency:{key}") == 0
        # Left for a few seconds: a settlement (no status, nothing of the person), which a
        # pending note still on its way from the API cannot replace (status_cache).
        assert [k async for k in redis.scan_iter(f"*{erased}*")] == [
            f"signup:status:{erased}".encode()
        ]
        settled = await redis.get(f"signup:status:{erased}")
        assert settled is not None and is_settlement(settled), settled
        assert 0 < await redis.ttl(f"signup:status:{erased}") <= PENDING_SECONDS
        with psycopg.connect(encrypted.database_url or "") as conn:
            assert conn.execute(notices, (erased,)).fetchone() == (0,)
        assert (await api.get(f"/registrations/{erased}")).status_code == 404
        # The retry with the key is not told of the erased registration: it is a new signup.
        retry = await api.post("/registrations", json=form, headers={"Idempotency-Key": key})
        assert retry.status_code == 202, retry.text
        assert retry.json()["registration_id"] != erased
        assert "Idempotent-Replayed" not in retry.headers
    await redis.aclose()


def test_signup_erase_beside_signup_up_clears_its_embedded_cache_at_once(
    data_dir: Path, tmp_path: Path
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    embedded = {"DATABASE_URL": "", "REDIS_URL": ""}
    args = ["up", "--port", str(port), "--data-dir", str(data_dir)]
    with signup_process(args, embedded, url, tmp_path / "up.log"):
        accepted = clients.post(f"{url}/registrations", json=_person(40), timeout=30)
        assert accepted.status_code == 202, accepted.text
        location = f"{url}{accepted.headers['location']}"
        deadline = time.monotonic() + 60
        while clients.get(location).json()["status"] != "completed":  # and now cached
            assert time.monotonic() < deadline, "not completed in 60 s"
            time.sleep(0.2)

        erased = accepted.json()["registration_id"]
        erase = subprocess.run(
            [sys.executable, "-m", "interfaces.cli", "erase", erased, "--data-dir", str(data_dir)],
            env={**os.environ, **embedded},
            capture_output=True,
            text=True,
            timeout=120,
        )

        assert erase.returncode == 0, erase.stderr
        assert "status_cache" in erase.stdout, erase.stdout
        assert clients.get(location).status_code == 404


async def test_erasing_a_person_with_a_dead_letter_removes_it_and_leaves_no_trace_of_their_cpf(
    api: Client, encrypted: Settings
) -> None:
    cpf = make_cpf(77_060)
    form = valid_form(cpf=cpf, email="morta@example.com", email_confirmation="morta@example.com")
    erased = await _register(api, form)
    kept = await _register(api, _person(61))
    # Their users shard fails for them until they are dead-lettered.
    async with running_worker(encrypted, Poison("morta@example.com")):
        await eventually(lambda: all_have_status(api, [erased], "failed"))
        await eventually(lambda: all_have_status(api, [kept], "completed"))
    read_side = open_read_side(encrypted)
    try:
        dead = await read_side.failures.list(state=None)
        assert [str(f.registration_id) for f in dead] == [erased]
        assert "morta@example.com" in _everything_readable(encrypted)  # the email lookup

        result = await run_signup(encrypted, "erase", erased)

        assert result.returncode == 0, result.stderr
        assert await read_side.failures.list(state=None) == []
    finally:
        await read_side.close()
    readable = _everything_readable(encrypted)
    for trace in (cpf, "morta@example.com", erased):
        assert trace not in readable, f"{trace!r} is still in a read model or dead letter"
    assert (await api.get(f"/registrations/{erased}")).status_code == 404
    assert await all_have_status(api, [kept], "completed")


# What an erasure's statement waiting for a batch's tracking row looks like.
_ERASURE_AT_A_TRACKING_ROW = "%projection_tracking%FOR UPDATE%"


def _waiting_on_a_lock(url: str, like: str) -> bool:
    """Whether a statement like ``like`` waits for a lock in that database."""
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
            " AND query LIKE %s",
            (like,),
        ).fetchone()
    return bool(row and row[0])


async def _erasure_done_or_waiting(settings: Settings, erasure: asyncio.Task[Any]) -> None:
    """Until ``signup erase`` has ended, or one of its statements waits for a lock (a batch
    holding its table's tracking row, as it should)."""
    assert settings.read_url
    while not erasure.done():
        if _waiting_on_a_lock(settings.read_url, _ERASURE_AT_A_TRACKING_ROW):
            return
        await asyncio.sleep(0.05)


@pytest.mark.parametrize("stage", ["before_its_transaction", "between_its_rows_and_its_commit"])
async def test_a_person_erased_while_a_batch_that_read_them_waits_does_not_come_back(
    api: Client, encrypted: Settings, monkeypatch: pytest.MonkeyPatch, stage: str
) -> None:
    victim = await _register(api, _person(32))
    kept = await _register(api, _person(33))
    erasures: list[asyncio.Task[subprocess.CompletedProcess[str]]] = []

    async def erase_meanwhile() -> None:
        # The batch waits (a slow query, a pool at its limit) while the erasure runs: to its
        # end, or until it waits for this batch's lock.
        if not erasures:
            erasures.append(asyncio.create_task(run_signup(encrypted, "erase", victim)))
        await _erasure_done_or_waiting(encrypted, erasures[0])

    held, write = FailureLog.held, ProjectionStore.write

    async def slow_to_begin(
        log: FailureLog, projection: str, registration_ids: Iterable[uuid.UUID]
    ) -> set[uuid.UUID]:
        ids = list(registration_ids)  # the batch has opened these registrations' events
        if projection.startswith("users_shard") and uuid.UUID(victim) in ids:
            await erase_meanwhile()
        return await held(log, projection, ids)

    async def slow_to_commit(
        store: ProjectionStore, table: str, rows: Sequence[Row], position: int | None, conn: Any
    ) -> None:
        await write(store, table, rows, position, conn)
        if any(str(row["registration_id"]) == victim for row in rows):
            await erase_meanwhile()

    if stage == "before_its_transaction":
        monkeypatch.setattr(FailureLog, "held", slow_to_begin)
    else:
        monkeypatch.setattr(ProjectionStore, "write", slow_to_commit)
    async with running_worker(encrypted):
        await eventually(lambda: all_have_status(api, [kept], "completed"))
        [erasure] = erasures
        result = await erasure
        assert result.returncode == 0, result.stderr

    assert (await api.get(f"/registrations/{victim}")).status_code == 404
    readable = _everything_readable(encrypted)
    assert "titular32@example.com" not in readable
    assert victim not in readable
    assert "titular33@example.com" in readable


async def test_a_person_erased_while_a_live_batch_writes_them_in_one_call_does_not_come_back(
    api: Client, encrypted: Settings
) -> None:
    """A live batch goes in one statement (the table's write function): the erasure that
    comes while it writes waits for it, and then deletes what it wrote."""
    victim = await _register(api, _person(36))
    kept = await _register(api, _person(37))
    # The users tables held against inserts, so each shard's batch stops inside its write.
    holders = [psycopg.connect(url) for url in encrypted.shard_urls]
    for holder in holders:
        tables = holder.execute(
            "SELECT string_agg(format('%I', table_name), ', ') FROM projection_tracking"
            " WHERE table_name LIKE 'users%'"
        ).fetchone()
        assert tables and tables[0]
        holder.execute(f"LOCK TABLE {tables[0]} IN SHARE MODE")

    async def every_users_batch_waits() -> bool:
        return all(_waiting_on_a_lock(u, "%signup_write_users%") for u in encrypted.shard_urls)

    async def the_erasure_waits_at_a_tracking_row() -> bool:
        return any(_waiting_on_a_lock(u, _ERASURE_AT_A_TRACKING_ROW) for u in encrypted.shard_urls)

    async with running_worker(encrypted):
        erasure = None
        try:
            await eventually(every_users_batch_waits)
            erasure = asyncio.create_task(run_signup(encrypted, "erase", victim))
            # It must wait for the batch's tracking row, not pass it and wait at the table: a
            # batch that took its lock only after its rows would let the erasure delete first.
            await eventually(the_erasure_waits_at_a_tracking_row, timeout=15)
        finally:
            for holder in holders:
                holder.close()  # the batches go on, and the erasure after them
            if erasure is not None:
                result = await erasure
        assert result.returncode == 0, result.stderr
        await eventually(lambda: all_have_status(api, [kept], "completed"))

    assert (await api.get(f"/registrations/{victim}")).status_code == 404
    readable = _everything_readable(encrypted)
    assert "titular36@example.com" not in readable
    assert victim not in readable
    assert "titular37@example.com" in readable


async def test_a_person_erased_during_a_rebuild_is_in_neither_the_old_nor_the_rebuilt_tables(
    api: Client, encrypted: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    victim = await _register(api, _person(34))
    kept = await _register(api, _person(35))
    async with running_worker(encrypted):
        await eventually(lambda: all_have_status(api, [victim, kept], "completed"))
    erasures: list[asyncio.Task[subprocess.CompletedProcess[str]]] = []
    write = ProjectionStore.write

    async def rebuild_slow_to_commit(
        store: ProjectionStore, table: str, rows: Sequence[Row], position: int | None, conn: Any
    ) -> None:
        await write(store, table, rows, position, conn)
        rebuilding = "_r" in table  # a rebuild fills a table beside the live one
        if rebuilding and any(str(row["registration_id"]) == victim for row in rows):
            # The rebuild has written the victim's row (their key was still there when it read
            # the event) and not committed yet: the erasure runs whole meanwhile.
            if not erasures:
                erasures.append(asyncio.create_task(run_signup(encrypted, "erase", victim)))
            await _erasure_done_or_waiting(encrypted, erasures[0])

    monkeypatch.setattr(ProjectionStore, "write", rebuild_slow_to_commit)
    read_side = open_read_side(encrypted)
    try:
        for projector in read_side.all_projectors:
            await rebuild(projector)
        [erasure] = erasures
        result = await erasure
        assert result.returncode == 0, result.stderr
        assert await table_rows(read_side) == await replayed_rows(read_side)
    finally:
        await read_side.close()

    assert (await api.get(f"/registrations/{victim}")).status_code == 404
    readable = _everything_readable(encrypted)
    assert "titular34@example.com" not in readable
    assert victim not in readable
    assert "titular35@example.com" in readable


def _verification_and_mail(settings: Settings, registration_id: str) -> tuple[int, int, int]:
    """A registration's challenges, sent messages and unsent ones."""
    with psycopg.connect(settings.read_url) as conn:
        challenges = conn.execute(
            "SELECT count(*) FROM email_verifications WHERE registration_id = %s",
            (registration_id,),
        ).fetchone()
        mail = conn.execute(
            "SELECT count(*) FILTER (WHERE sent_at IS NOT NULL),"
            " count(*) FILTER (WHERE sent_at IS NULL) FROM mail_outbox WHERE registration_id = %s",
            (registration_id,),
        ).fetchone()
    assert challenges is not None and mail is not None
    return challenges[0], mail[0], mail[1]


async def _all_have_mail(
    settings: Settings, ids: Sequence[str], expected: tuple[int, int, int]
) -> bool:
    return all(_verification_and_mail(settings, rid) == expected for rid in ids)


async def test_erasing_a_person_removes_their_verification_and_the_messages_to_them(
    encrypted: Settings, tmp_path: Path
) -> None:
    with MailSink(tmp_path / "mail") as sink:
        mailing = dataclasses.replace(encrypted, smtp_url=sink.url, verification_resend_seconds=0)
        async with AsyncTestClient(app=build_app(mailing)) as api:
            erased = await _register(api, _person(50))
            kept = await _register(api, _person(51))
            async with running_worker(mailing):
                await wait_for_messages(sink.directory, erased)
                # Marked sent only after the relay took it: waited for, so that a row is sent.
                await eventually(lambda: _all_have_mail(mailing, [erased, kept], (1, 1, 0)))
            # A new code asked for while no worker runs: a second message, still queued.
            resent = await api.post(f"/registrations/{erased}/verification/resend")
            assert resent.status_code == 202, resent.text
            assert _verification_and_mail(mailing, erased) == (1, 1, 1)

            result = await run_signup(mailing, "erase", erased)

            assert result.returncode == 0, result.stderr
            assert "email_verifications" in result.stdout, result.stdout
            assert _verification_and_mail(mailing, erased) == (0, 0, 0)
            # Only theirs: the other person's challenge and message stay.
            assert _verification_and_mail(mailing, kept) == (1, 1, 0)
