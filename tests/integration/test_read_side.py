"""The read side: projections turn accepted registrations into users, statuses and lookups."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import asyncpg
import psycopg
import pytest
from litestar.testing import AsyncTestClient
from prometheus_client import REGISTRY
from redis.asyncio import Redis
from sqlalchemy import text

from application.registering import RegisterUser, Submission
from domain.errors import EmailAlreadyRegistered
from domain.form import parse_registration_form
from domain.registration import verified
from infrastructure.composition.operations import migrate
from infrastructure.composition.read_side import open_read_side, run_projections
from infrastructure.event_store.store import open_event_store
from infrastructure.event_store.subject_keys import SubjectVault
from infrastructure.read_side.email_index import EmailIndex
from infrastructure.read_side.failures import WAITING
from infrastructure.read_side.parts import ReadSide
from infrastructure.read_side.projector import run_forever
from infrastructure.read_side.read_store import ProjectionStore, asyncpg_dsn, make_engine
from infrastructure.read_side.rebuild import RebuildInProgress, rebuild
from infrastructure.read_side.status_cache import STATUS_CACHE_PREFIX, is_settlement
from infrastructure.read_side.wakeups import Wakeups, wait_for_wake
from infrastructure.settings import Settings
from infrastructure.verification.challenges import EventStoreVerdicts
from interfaces.http.app import build_app
from projections.model import (
    EMAIL_VERIFIED,
    REGISTRATION_REQUESTED,
    Projection,
    RequestedRegistration,
    Row,
)
from tests.factories import make_cpf, valid_address, valid_form
from tests.read_models import (
    Poison,
    all_have_status,
    catch_up,
    eventually,
    replayed_rows,
    running_worker,
    status_of,
    table_rows,
)
from tests.servers import create_database, run_signup

Client = AsyncTestClient  # type: ignore[type-arg]


def _person(n: int, email: str | None = None) -> dict[str, Any]:
    address = email or f"reader{n}@example.com"
    return valid_form(cpf=make_cpf(2000 + n), email=address, email_confirmation=address)


async def _register(client: Client, count: int, start: int = 0) -> list[str]:
    ids = []
    for n in range(start, start + count):
        response = await client.post("/registrations", json=_person(n))
        assert response.status_code == 202, response.text
        ids.append(response.json()["registration_id"])
    return ids


async def test_a_registration_is_pending_until_the_read_models_have_the_user(
    client: Client, settings: Settings
) -> None:
    [registration_id] = await _register(client, 1)

    before = await status_of(client, registration_id)
    assert before["status"] == "pending"
    assert set(before) == {"registration_id", "status", "requested_at", "updated_at"}

    async with running_worker(settings):
        await eventually(lambda: all_have_status(client, [registration_id], "completed"))

    after = await status_of(client, registration_id)
    assert after["user_id"] and after["requested_at"] == before["requested_at"]
    assert "reader0@example.com" not in str(after)


async def test_a_pending_note_answers_until_the_status_row_is_written_and_not_a_moment_longer(
    settings: Settings,
) -> None:
    # A note that would answer for five minutes: only its settlement can end it in time.
    lasting = dataclasses.replace(settings, status_pending_seconds=300)
    async with AsyncTestClient(app=build_app(lasting)) as client:
        [registration_id] = await _register(client, 1, start=60)
        key = STATUS_CACHE_PREFIX + registration_id
        async with Redis.from_url(settings.redis_url or "") as redis:

            async def noted() -> bool:
                raw = await redis.get(key)
                return raw is not None and json.loads(raw)["status"] == "pending"

            await eventually(noted, timeout=10)
            assert (await status_of(client, registration_id))["status"] == "pending"

            async with running_worker(lasting):
                await eventually(lambda: _row_says(lasting, registration_id, "completed"))
                # The settlement follows the commit by a write to Redis: a moment, not 300 s.
                await eventually(
                    lambda: all_have_status(client, [registration_id], "completed"), timeout=5
                )
            # The poll that read the row cached it over the settlement it found (just after
            # its answer: nobody waits for the cache).

            async def cached_completed() -> bool:
                cached = await redis.get(key)
                return cached is not None and json.loads(cached)["status"] == "completed"

            await eventually(cached_completed, timeout=5)


async def test_a_registration_a_retry_completes_is_said_completed_though_its_pending_note_came_back(
    settings: Settings,
) -> None:
    """The status projection settles the pending note when it writes the row, by a write to
    Redis nobody waits for. If that write is lost, the process manager's retry that completes
    the registration settles it again: the note does not answer for its whole lifetime."""
    # A note that would answer for five minutes. The event is retried until the projection is
    # fixed, never dead-lettered.
    lasting = dataclasses.replace(settings, status_pending_seconds=300, retry_max_attempts=10_000)
    email = "retried@example.com"
    poison = Poison(email)
    retried_into_place = _retries_that_projected()
    async with AsyncTestClient(app=build_app(lasting)) as client:
        response = await client.post("/registrations", json=_person(70, email))
        assert response.status_code == 202, response.text
        registration_id = response.json()["registration_id"]
        key = STATUS_CACHE_PREFIX + registration_id
        async with Redis.from_url(settings.redis_url or "") as redis:
            note = b""

            async def noted() -> bool:
                nonlocal note
                note = await redis.get(key) or b""
                return bool(note) and json.loads(note)["status"] == "pending"

            await eventually(noted, timeout=10)

            async with running_worker(lasting, poison) as read_side:
                await eventually(lambda: _parked(read_side), timeout=10)
                await eventually(lambda: _row_says(lasting, registration_id, "pending"))
                await redis.set(key, note, ex=300)  # the status projection's settlement lost
                poison.active = False
                await eventually(lambda: _row_says(lasting, registration_id, "completed"))
                # Completed by the process manager's retry, not by the status projection.
                assert _retries_that_projected() == retried_into_place + 1
                await eventually(
                    lambda: all_have_status(client, [registration_id], "completed"), timeout=5
                )


async def _parked(read_side: ReadSide) -> bool:
    return bool(await read_side.failures.list(state=None))


async def _row_says(settings: Settings, registration_id: str, status: str) -> bool:
    engine = make_engine(settings.read_url, pool_size=1)
    try:
        async with engine.connect() as conn:
            found = await conn.scalar(
                text("SELECT status FROM registration_status WHERE registration_id = :id"),
                {"id": registration_id},
            )
        return found == status
    finally:
        await engine.dispose()


async def test_every_user_lands_in_exactly_one_shard_and_the_read_models_equal_a_replay(
    client: Client, settings: Settings
) -> None:
    ids = await _register(client, 40)
    async with running_worker(settings) as read_side:
        await eventually(lambda: all_have_status(client, ids, "completed"))
        rows = await table_rows(read_side)
        expected = await replayed_rows(read_side)

    assert rows == expected
    shard_rows = [rows[name] for name in rows if name.startswith("users_shard")]
    assert len(shard_rows) == 2 and all(shard_rows), "both shards hold some users"
    assert sum(len(r) for r in shard_rows) == 40
    assert len(rows["email_lookup"]) == 40


async def test_unknown_and_malformed_ids_are_not_found(client: Client) -> None:
    for registration_id in ["0b7a1c3e-0000-4000-8000-000000000000", "not-a-uuid", "1" * 300]:
        response = await client.get(f"/registrations/{registration_id}")
        assert response.status_code == 404
        assert response.json()["code"] == "registration_not_found"


async def test_a_poison_event_is_retried_then_dead_lettered_and_a_retry_after_the_fix_completes_it(
    client: Client, settings: Settings
) -> None:
    poison = Poison("poison@example.com")
    retried_into_place = _retries_that_projected()
    async with running_worker(settings, poison) as read_side:
        before = await _register(client, 5)
        response = await client.post("/registrations", json=_person(99, "poison@example.com"))
        poisoned = response.json()["registration_id"]
        after = await _register(client, 5, start=50)

        await eventually(lambda: all_have_status(client, before + after, "completed"))
        await eventually(lambda: all_have_status(client, [poisoned], "failed"))
        failed = await status_of(client, poisoned)
        assert failed["reason"] and "user_id" not in failed
        [dead] = await read_side.failures.list()
        assert dead.attempts == settings.retry_max_attempts
        assert str(dead.registration_id) == poisoned
        # Its batch's other events went straight in: none was parked behind it, and then
        # completed by a retry (their status would have said pending meanwhile).
        assert _retries_that_projected() == retried_into_place

        poison.active = False
        assert await read_side.process_manager.retry(dead)
        await eventually(lambda: all_have_status(client, [poisoned], "completed"))
        assert _retries_that_projected() == retried_into_place + 1
        assert await read_side.failures.list(state=None) == []
        rows = await table_rows(read_side)
        assert rows == await replayed_rows(read_side)


class _TwoEventsAndPoison:
    """The email lookup subscribed to verdicts too, and failing on one email's request until
    fixed. The shipped users and lookup projections read one event a registration; this one
    reads two, so that the second can be seen to wait behind the first."""

    def __init__(self, email: str) -> None:
        self.email = email
        self.active = True

    def __call__(self, projection: Projection) -> Projection:
        if projection.name != "email_lookup":
            return projection

        def reduce(registration: RequestedRegistration) -> Sequence[Row]:
            details = registration.details
            if self.active and details is not None and details.email == self.email:
                raise RuntimeError("poisoned by the test")
            return projection.reduce(registration)

        return dataclasses.replace(
            projection, topics=[*projection.topics, EMAIL_VERIFIED], reduce=reduce
        )


async def test_a_registrations_later_event_waits_behind_its_failed_one_and_follows_it_in_order(
    client: Client, settings: Settings
) -> None:
    # Retries far off: the failed request stays failed until this test retries it.
    patient = dataclasses.replace(settings, retry_base_seconds=3600, retry_max_seconds=3600)
    poison = _TwoEventsAndPoison("waiting@example.com")
    await _register(client, 1, start=90)  # an innocent, first
    response = await client.post("/registrations", json=_person(91, "waiting@example.com"))
    held = uuid.UUID(response.json()["registration_id"])
    async with running_worker(patient, poison) as read_side:

        async def parked(count: int) -> bool:
            mine = [
                f for f in await read_side.failures.list(state=None) if f.registration_id == held
            ]
            return len(mine) == count

        await eventually(lambda: parked(1))
        [request] = await read_side.failures.list(state=None)
        # Its verdict is recorded while the request is still failed.
        events = await asyncio.to_thread(
            open_event_store, patient.database_url or "", 1, cipher_key=patient.event_cipher_key
        )
        try:
            at = (await status_of(client, str(held)))["requested_at"]
            await EventStoreVerdicts(events).record(verified(held, datetime.fromisoformat(at)))
        finally:
            await asyncio.to_thread(events.close)

        await eventually(lambda: parked(2))
        request, verdict = await read_side.failures.list(state=None)
        assert (request.notification_id, request.attempts) < (verdict.notification_id, 1)
        assert verdict.attempts == 0 and verdict.error == WAITING
        assert request.error != WAITING
        # Both due now: the retries still take the request only, never its verdict first.
        async with read_side.read_engine.begin() as conn:
            await conn.execute(text("UPDATE projection_failures SET next_attempt_at = now()"))
        assert [f.id for f in await read_side.failures.due()] == [request.id]

        poison.active = False
        assert await read_side.process_manager.retry(request)
        assert [f.id for f in await read_side.failures.due()] == [verdict.id]
        assert await read_side.process_manager.retry(verdict)
        assert await read_side.failures.list(state=None) == []
    assert await _count(settings.read_url, "email_lookup", str(held)) == 1


def _retries_that_projected() -> float:
    """Parked events that a retry put into their projection, in this process so far."""
    sample = REGISTRY.get_sample_value("signup_projection_retries_total", {"outcome": "projected"})
    return sample or 0.0


async def test_completed_is_said_only_once_the_user_is_in_its_shard_and_the_email_lookup(
    client: Client, settings: Settings
) -> None:
    [registration_id] = await _register(client, 1, start=70)
    # A worker without the users projectors: the email lookup takes the registration in, the
    # status projector may not pass the users shards, which have not moved.
    read_side = open_read_side(settings)
    stop = asyncio.Event()
    partial = asyncio.create_task(
        run_projections(settings, read_side, stop, only=["email_lookup", "registration_status"])
    )
    try:
        await eventually(lambda: _count(settings.read_url, "email_lookup", registration_id))
        # Long enough for an ungated status projector to have written the row.
        await asyncio.sleep(1)
        assert (await status_of(client, registration_id))["status"] == "pending"
        assert not await _row_says(settings, registration_id, "completed")
    finally:
        stop.set()
        await partial
        await read_side.close()

    async with running_worker(settings):
        await eventually(lambda: all_have_status(client, [registration_id], "completed"))
    in_shards = [await _count(url, "users", registration_id) for url in settings.shard_urls]
    assert sorted(in_shards) == [0, 1]


async def test_a_users_row_holds_the_address_as_parsed_accents_and_all(
    client: Client, settings: Settings
) -> None:
    address = valid_address(street="Rua João Pessoa", neighborhood="Coração de Jesus")
    form = valid_form(
        cpf=make_cpf(2990), email="endereco@example.com", email_confirmation="endereco@example.com"
    )
    form["address"] = address
    response = await client.post("/registrations", json=form)
    assert response.status_code == 202, response.text
    registration_id = response.json()["registration_id"]

    async with running_worker(settings):
        await eventually(lambda: all_have_status(client, [registration_id], "completed"))
    stored = []
    for url in settings.shard_urls:
        engine = make_engine(url, pool_size=1)
        try:
            async with engine.connect() as conn:
                stored += (
                    await conn.execute(
                        text("SELECT address FROM users WHERE registration_id = :id"),
                        {"id": registration_id},
                    )
                ).scalars()
        finally:
            await engine.dispose()

    assert stored == [parse_registration_form(form).address.to_dict()]
    assert stored[0]["street"] == "Rua João Pessoa"


async def _count(url: str, view: str, registration_id: str) -> int:
    engine = make_engine(url, pool_size=1)
    try:
        async with engine.connect() as conn:
            found = await conn.scalar(
                text(f"SELECT count(*) FROM {view} WHERE registration_id = :id"),
                {"id": registration_id},
            )
        return int(found or 0)
    finally:
        await engine.dispose()


async def test_rebuilding_each_projection_gives_the_same_rows_while_status_queries_keep_answering(
    client: Client, settings: Settings
) -> None:
    ids = await _register(client, 60)
    async with running_worker(settings) as read_side:
        await eventually(lambda: all_have_status(client, ids, "completed"))
        live = await table_rows(read_side)
        answers: list[tuple[int, str]] = []
        assert settings.redis_url
        cache = Redis.from_url(settings.redis_url)
        tables = {}
        for projector in read_side.all_projectors:
            before = await projector.store.active_table()
            # As an operator runs it, in a process of its own: the test client blocks this
            # loop while it waits for an answer, so a rebuild here could not go on meanwhile.
            rebuilding = asyncio.create_task(
                run_signup(settings, "projections", "rebuild", projector.name)
            )
            while not rebuilding.done():
                for rid in ids[:5]:
                    # Uncached, so that the answer comes from the read model being rebuilt.
                    await cache.delete(f"{STATUS_CACHE_PREFIX}{rid}")
                    answer = await client.get(f"/registrations/{rid}")
                    answers.append((answer.status_code, answer.json().get("status", "")))
                await asyncio.sleep(0.01)
            assert (await rebuilding).returncode == 0, rebuilding.result().stderr
            tables[projector.name] = await projector.store.active_table()
            assert tables[projector.name] != before
        await cache.aclose()
        # New registrations keep flowing into the rebuilt tables.
        more = await _register(client, 5, start=60)
        await eventually(lambda: all_have_status(client, more, "completed"))
        rebuilt = await table_rows(read_side)
        replayed = await replayed_rows(read_side)
        active = {p.name: await p.store.active_table() for p in read_side.all_projectors}

    assert active == tables
    assert answers and set(answers) == {(200, "completed")}
    assert all(live[name] <= rebuilt[name] for name in live)
    assert len(rebuilt["email_lookup"]) == len(live["email_lookup"]) + 5
    assert rebuilt == replayed


async def test_a_known_email_is_rejected_from_the_read_model_before_the_event_store(
    client: Client, settings: Settings
) -> None:
    [first] = await _register(client, 1, start=700)
    async with running_worker(settings):
        await eventually(lambda: all_have_status(client, [first], "completed"))
        appended: list[Submission] = []

        class EventStore:
            async def append(self, submission: Submission) -> None:
                appended.append(submission)

        register = RegisterUser(EventStore(), b"key", SubjectVault(), EmailIndex(settings.read_url))
        with pytest.raises(EmailAlreadyRegistered):
            await register(_person(701, "  Reader700@Example.com"))
        await register(_person(702))

    assert len(appended) == 1  # only the new email reached the event store


async def test_a_rebuild_first_drops_the_table_a_killed_rebuild_left_behind(
    client: Client, settings: Settings
) -> None:
    ids = await _register(client, 3, start=800)
    read_side = open_read_side(settings)
    try:
        store = read_side.projector("email_lookup").store
        async with store.engine.begin() as conn:
            await store.create_table(conn, "email_lookup_v1_r1")  # as a killed rebuild would

        _, new_table = await rebuild(read_side.projector("email_lookup"))

        async with store.engine.connect() as conn:
            assert await store.tables(conn) == [new_table]
            left = await conn.execute(text("SELECT to_regclass('email_lookup_v1_r1')"))
            assert left.scalar_one() is None
        assert len((await table_rows(read_side))["email_lookup"]) == len(ids)
    finally:
        await read_side.close()


async def test_a_replaced_table_is_dropped_after_an_erasure_holding_it_not_in_deadlock_with_it(
    settings: Settings,
) -> None:
    """An erasure (or an expiry) holds a projection's tracking rows, then deletes from each of
    its tables; a rebuild drops the table it replaced. The drop used to lock the table first
    and wait for its tracking row second, so each waited for the other and PostgreSQL killed
    one (seen under a parallel test run). Both now take the tracking row first."""
    read_side = open_read_side(settings)
    try:
        store = read_side.projector("email_lookup").store
        async with store.engine.begin() as conn:
            await store.create_table(conn, "email_lookup_v1_r2")  # as a switch leaves it
        async with store.engine.connect() as erasing:
            async with erasing.begin():
                assert "email_lookup_v1_r2" in await store.tables(erasing, lock=True)
                dropping = asyncio.create_task(store.drop("email_lookup_v1_r2"))
                await asyncio.sleep(0.3)  # the drop goes as far as it can meanwhile
                # Past PostgreSQL's deadlock_timeout (1 s): a deadlock would be found.
                await asyncio.wait_for(
                    erasing.execute(
                        text(
                            'DELETE FROM "email_lookup_v1_r2"'
                            " WHERE registration_id = ANY(CAST(:ids AS uuid[]))"
                        ),
                        {"ids": [uuid.uuid4()]},
                    ),
                    timeout=3,
                )
                await asyncio.sleep(1.2)
                assert not dropping.done()
            await dropping
        async with store.engine.connect() as conn:
            assert "email_lookup_v1_r2" not in await store.tables(conn)
            left = await conn.execute(text("SELECT to_regclass('email_lookup_v1_r2')"))
            assert left.scalar_one() is None
    finally:
        await read_side.close()


async def test_a_projection_is_rebuilt_by_one_process_at_a_time(settings: Settings) -> None:
    read_side = open_read_side(settings)
    try:
        store = read_side.projector("users_shard0").store
        # Another process's rebuild holds the projection's rebuild lock.
        async with store.engine.connect() as other:
            key = {"key": "signup_rebuild:users_shard0"}
            await other.execute(text("SELECT pg_advisory_lock(hashtext(:key))"), key)
            with pytest.raises(RebuildInProgress):
                await rebuild(read_side.projector("users_shard0"))
            before = await store.active_table()
            await other.execute(text("SELECT pg_advisory_unlock(hashtext(:key))"), key)

        _, new_table = await rebuild(read_side.projector("users_shard0"))
        assert new_table != before == "users_shard0_v1"
    finally:
        await read_side.close()


async def test_an_idle_projector_is_woken_by_an_append_instead_of_its_next_poll(
    client: Client, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert settings.database_url
    read_side = open_read_side(settings)
    projector = read_side.projector("email_lookup")
    steps: list[int] = []
    step = projector.step

    async def counted_step() -> int:
        steps.append(await step())
        return steps[-1]

    monkeypatch.setattr(projector, "step", counted_step)
    wakeups = Wakeups(settings.database_url)
    stop = asyncio.Event()
    # Polls only every 5 minutes: only the append's NOTIFY can wake it within the test.
    running = [
        asyncio.create_task(wakeups.listen(stop)),
        asyncio.create_task(
            run_forever(projector, stop, idle=(300, 300), wake=wakeups.subscribe())
        ),
    ]
    try:
        # Asleep for 300 s with the listener connected: its connection woke the projector
        # once (a second empty step, before or after the first), and, when the projector began
        # to wait while the listener rested, its listening again once more; nothing else can.
        async def asleep() -> bool:
            before = len(steps)
            await asyncio.sleep(1.0)
            return 2 <= len(steps) == before <= 3 and not any(steps)

        await eventually(asleep, timeout=20)
        await _register(client, 1, start=900)

        async def projected() -> bool:
            return len((await table_rows(read_side))["email_lookup"]) == 1

        await eventually(projected, timeout=20)
    finally:
        stop.set()
        await asyncio.gather(*running)
        await read_side.close()


async def test_a_rebuild_switches_only_with_every_event_the_live_table_had(
    client: Client, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = await _register(client, 3, start=300)
    async with running_worker(settings):
        await eventually(lambda: all_have_status(client, first, "completed"))
    read_side = open_read_side(settings)
    late: list[str] = []
    lock_catalog = ProjectionStore.lock_catalog

    async def more_arrive_first(store: ProjectionStore, conn: Any) -> None:
        # Between the rebuild's last step and its switch, more signups arrive and the live
        # projectors take them in: the rebuilt table must have them before queries move to it.
        if store.projection.name == "registration_status" and not late:
            late.extend(await _register(client, 2, start=310))
            for projector in read_side.all_projectors:  # the status projector last
                await catch_up(projector)
        await lock_catalog(store, conn)

    monkeypatch.setattr(ProjectionStore, "lock_catalog", more_arrive_first)
    try:
        await rebuild(read_side.projector("registration_status"))
        async with read_side.read_engine.connect() as conn:
            rows = await conn.execute(
                text("SELECT registration_id, status FROM registration_status")
            )
            statuses = {str(rid): status for rid, status in rows}
    finally:
        await read_side.close()
    assert len(late) == 2
    assert {rid: statuses.get(rid) for rid in [*first, *late]} == dict.fromkeys(
        [*first, *late], "completed"
    )


async def test_a_dead_letter_after_completed_is_answered_failed_though_completed_was_cached(
    client: Client, settings: Settings
) -> None:
    # One attempt: the failure below is a dead letter at once.
    once = dataclasses.replace(settings, retry_max_attempts=1)
    [registration_id] = await _register(client, 1, start=80)
    async with running_worker(once) as read_side:
        await eventually(lambda: all_have_status(client, [registration_id], "completed"))
        await status_of(client, registration_id)  # read from the row, and cached for an hour
        async with Redis.from_url(settings.redis_url or "") as redis:

            async def cached_completed() -> bool:
                cached = await redis.get(STATUS_CACHE_PREFIX + registration_id)
                return cached is not None and json.loads(cached)["status"] == "completed"

            await eventually(cached_completed, timeout=5)

        # A projection fails on its event afterwards (a replay, a later fix gone wrong).
        [note] = [
            n
            for n in (await read_side.source.read(0, 100, [REGISTRATION_REQUESTED]))[0]
            if str(n.registration_id) == registration_id
        ]
        await read_side.failures.park("users_shard0", note, "broken", first_attempt=True)

        await eventually(lambda: all_have_status(client, [registration_id], "failed"), timeout=5)


async def test_a_registration_the_replica_has_not_seen_is_answered_pending_from_the_event_store(
    settings: Settings, postgres_url: str, migrated_templates: tuple[str, str, str]
) -> None:
    """README, READ_REPLICA_URL: status queries read the replica, and a registration it has
    not seen yet is answered pending from the event store, never an error nor unknown."""
    # A stand-in replica lagging forever: migrated as the read database is, written by nobody.
    replica = create_database(postgres_url, template=migrated_templates[0])
    lagging = dataclasses.replace(settings, read_replica_url=replica)
    async with AsyncTestClient(app=build_app(lagging)) as client:
        [registration_id] = await _register(client, 1, start=950)
        key = STATUS_CACHE_PREFIX + registration_id
        async with running_worker(lagging):
            # The worker writes the read database itself: the registration is complete there.
            await eventually(lambda: _row_says(lagging, registration_id, "completed"))
        async with Redis.from_url(settings.redis_url or "") as redis:

            async def settled() -> bool:
                raw = await redis.get(key)
                return raw is not None and is_settlement(raw)

            # The worker replaced the pending note with its settlement ("ask the read model"):
            # the poll goes to the replica, which has no row.
            await eventually(settled)
            assert (await status_of(client, registration_id))["status"] == "pending"
            # Nothing cached either (no pending note): only the databases answer now.
            await redis.delete(key)
            pending = await status_of(client, registration_id)
            assert pending["status"] == "pending"
            assert pending["registration_id"] == registration_id

            # The replica catches up: the primary's row arrives as streaming would bring it.
            _copy_status_row(settings.read_url, replica, registration_id)
            await redis.delete(key)
            completed = await status_of(client, registration_id)
    assert completed["status"] == "completed"
    assert completed["requested_at"] == pending["requested_at"]
    assert completed["user_id"]


def _copy_status_row(primary: str, replica: str, registration_id: str) -> None:
    with psycopg.connect(primary) as source:
        cursor = source.execute(
            "SELECT * FROM registration_status WHERE registration_id = %s", (registration_id,)
        )
        [row] = cursor.fetchall()
        columns = [column.name for column in cursor.description or ()]
    with psycopg.connect(replica) as target:
        target.execute(
            f"INSERT INTO registration_status ({', '.join(columns)})"
            f" VALUES ({', '.join(['%s'] * len(columns))})",
            row,
        )


async def test_a_batch_that_holds_a_registration_and_its_verdict_writes_them_as_one_by_one(
    settings: Settings,
) -> None:
    """A batch is one statement; a rebuild's batch can hold a registration's request and its
    verdict, and the verdict replaces the request's row as it would in a batch of its own
    (a row that is no verdict never replaces one)."""
    read_side = open_read_side(settings)
    try:
        store = read_side.status.store
        table = await store.active_table()
        at = datetime.now(UTC)
        verified_later, verified_first, plain = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
        batch = [
            _status_row(verified_later, "completed", at),
            _status_row(verified_first, "verified", at),
            _status_row(plain, "completed", at),
            _status_row(verified_later, "verified", at),
            _status_row(verified_first, "completed", at),
        ]
        async with store.writing(table) as conn:
            await store.write(table, batch, None, conn)
            found = await conn.execute(
                text(
                    f'SELECT registration_id, status FROM "{table}"'
                    " WHERE registration_id = ANY(:ids)"
                ),
                {"ids": [verified_later, verified_first, plain]},
            )
            statuses: dict[uuid.UUID, str] = dict(found.all())
    finally:
        await read_side.close()
    assert statuses == {verified_later: "verified", verified_first: "verified", plain: "completed"}


async def _caught_up(
    read_side: ReadSide,
) -> tuple[dict[str, set[tuple[Any, ...]]], dict[str, set[tuple[Any, ...]]]]:
    """Every projector caught up, then the projections' rows and the rows a replay gives."""
    await _catch_up_all(read_side)
    return await table_rows(read_side), await replayed_rows(read_side)


async def _users_once_caught_up(settings: Settings) -> int:
    """Every projector caught up: how many users the shards hold, once the projections' rows
    are found to be those a replay gives."""
    read_side = open_read_side(settings)
    try:
        rows, expected = await _caught_up(read_side)
    finally:
        await read_side.close()
    assert rows == expected
    return sum(len(rows[name]) for name in rows if name.startswith("users_shard"))


async def _catch_up_all(read_side: ReadSide) -> None:
    """The projectors together, then the status projector, which follows them."""
    others = [p for p in read_side.all_projectors if p is not read_side.status]
    await asyncio.gather(*(catch_up(p) for p in others))
    await catch_up(read_side.status)


def _recorded_reads(read_side: ReadSide) -> list[tuple[str, list[Any]]]:
    """Every statement the read side's event source sends from now on, with its rows."""
    reads: list[tuple[str, list[Any]]] = []
    source = read_side.source
    records = source._records

    async def recording(statement: str, *arguments: Any) -> list[Any]:
        rows = await records(statement, *arguments)
        reads.append((statement, rows))
        return rows

    source._records = recording  # type: ignore[method-assign]
    return reads


async def test_the_projectors_of_one_worker_fetch_each_events_payload_once_between_them(
    client: Client, settings: Settings
) -> None:
    """They read the same events at about the same time: one fetches the payloads and the
    others wait for it, instead of each bringing every payload over the wire again."""
    await _register(client, 30)
    read_side = open_read_side(settings)
    reads = _recorded_reads(read_side)
    try:
        await _catch_up_all(read_side)
    finally:
        await read_side.close()
    fetched = [
        row["notification_id"] for statement, rows in reads if "state," in statement for row in rows
    ]
    assert len(fetched) == 30 and len(set(fetched)) == 30


async def test_the_status_projector_asks_the_event_store_nothing_until_the_others_move(
    client: Client, settings: Settings
) -> None:
    """Every append's NOTIFY wakes it, but it may not pass the slowest of the others: until
    they move it has nothing to read, and then it reads what they passed."""
    await _register(client, 5)
    read_side = open_read_side(settings)
    reads = _recorded_reads(read_side)
    try:
        for _ in range(3):
            assert await read_side.status.step() == 0
        assert reads == []
        others = [p for p in read_side.all_projectors if p is not read_side.status]
        await asyncio.gather(*(catch_up(p) for p in others))
        assert await read_side.status.step() > 0
    finally:
        await read_side.close()


async def test_the_projectors_of_one_worker_scan_each_notifications_header_once_between_them(
    client: Client, settings: Settings
) -> None:
    """They walk the same stretch of the log a few batches apart: the first to reach a
    notification reads its header (its topic, whether its key is there) for the others."""
    await _register(client, 30)
    # A store that has shredded keys before: its count stands still while they read.
    with psycopg.connect(settings.database_url) as conn:
        conn.execute("UPDATE signup_shreds SET shredded = 5")
    read_side = open_read_side(settings)
    # Long enough that a slow machine does not age the stretch between two projectors.
    read_side.source.headers_seconds = 60
    reads = _recorded_reads(read_side)
    try:
        await _catch_up_all(read_side)
        scanned = [
            row["notification_id"]
            for statement, found in reads
            if statement.startswith("SELECT notification_id") and "state," not in statement
            for row in found
        ]
        rows, expected = await table_rows(read_side), await replayed_rows(read_side)
    finally:
        await read_side.close()
    assert len(scanned) == 30 and len(set(scanned)) == 30
    assert rows == expected
    assert sum(len(rows[name]) for name in rows if name.startswith("users_shard")) == 30


@pytest.mark.parametrize(
    ("size", "seconds"), [(7, 60.0), (7, 0.0), (1000, 60.0)], ids=["trimmed", "aged", "kept"]
)
async def test_projectors_in_small_batches_over_a_trimmed_or_aged_stretch_equal_a_replay(
    client: Client, settings: Settings, size: int, seconds: float
) -> None:
    """Batches of four over a stretch of seven headers (or one that ages at once) still
    give every projection exactly the rows a replay gives, whatever order they step in."""
    await _register(client, 30)
    read_side = open_read_side(settings)
    read_side.source.headers_size, read_side.source.headers_seconds = size, seconds
    try:
        others = [p for p in read_side.all_projectors if p is not read_side.status]
        for projector in read_side.all_projectors:
            projector.batch_size = 4
        # One step each in turn, the first two projectors twice as often: they walk the
        # stretch apart, each at its front, inside it or behind it in turn.
        for _ in range(40):
            for projector in [*others[:2], *others]:
                await projector.step()
        rows, expected = await _caught_up(read_side)
    finally:
        await read_side.close()
    assert rows == expected
    assert sum(len(rows[name]) for name in rows if name.startswith("users_shard")) == 30


async def test_a_batchs_rows_are_rolled_back_with_its_transaction(settings: Settings) -> None:
    """The rows go in one statement past SQLAlchemy, yet inside the caller's transaction even
    when nothing was sent in it before: a batch that fails leaves none of its rows."""
    read_side = open_read_side(settings)
    try:
        store = read_side.status.store
        table = await store.active_table()
        rid = uuid.uuid4()
        with pytest.raises(ZeroDivisionError):
            async with store.engine.begin() as conn:
                await store.write(
                    table, [_status_row(rid, "completed", datetime.now(UTC))], None, conn
                )
                1 / 0  # noqa: B018
        async with store.engine.connect() as conn:
            found = await conn.execute(
                text(f'SELECT count(*) FROM "{table}" WHERE registration_id = :rid'), {"rid": rid}
            )
            assert found.scalar_one() == 0
    finally:
        await read_side.close()


def _status_row(registration_id: uuid.UUID, status: str, requested_at: datetime) -> Row:
    """A row of the status read model, as its reducer writes one."""
    return {
        "registration_id": registration_id,
        "status": status,
        "user_id": None,
        "reason": None,
        "requested_at": requested_at,
    }


async def test_a_store_not_migrated_to_count_its_shreds_is_projected_and_erased_as_before(
    client: Client, settings: Settings
) -> None:
    """Before `signup migrate` has made the count: every projector reads its own headers,
    an erasure shreds without counting, and the migration then counts what was shredded."""
    assert settings.database_url
    ids = [uuid.UUID(i) for i in await _register(client, 6)]
    store = open_event_store(settings.database_url, cipher_key=settings.event_cipher_key)
    try:
        with store.recorder.datastore.transaction(commit=True) as curs:  # type: ignore[attr-defined]
            curs.execute("DROP TABLE signup_shreds")
        recorder = store.recorder
        assert recorder.erase(ids[0]) is True  # type: ignore[attr-defined]
        assert recorder.erase(ids[0]) is False  # type: ignore[attr-defined]
    finally:
        store.close()
    assert await _users_once_caught_up(settings) == 5

    await asyncio.to_thread(migrate, settings)
    store = open_event_store(settings.database_url, cipher_key=settings.event_cipher_key)
    try:
        assert store.recorder.erase(ids[1]) is True  # type: ignore[attr-defined]
        with store.recorder.datastore.transaction(commit=False) as curs:  # type: ignore[attr-defined]
            curs.execute("SELECT shredded FROM signup_shreds")
            assert curs.fetchone()["shredded"] == 2
    finally:
        store.close()


def _write_functions(settings: Settings) -> set[str]:
    found = set()
    for url in {settings.read_url, *settings.shard_urls}:
        with psycopg.connect(url) as conn:
            rows = conn.execute("SELECT proname FROM pg_proc WHERE proname LIKE 'signup_write_%'")
            found.update(row[0] for row in rows)
    return found


async def test_a_store_migrated_before_the_write_functions_is_projected_as_before_until_migrated(
    client: Client, settings: Settings
) -> None:
    """Live batches go through each table's write function, which `signup migrate` makes; a
    store migrated before it had none, and its projectors write as they did until then."""
    made = _write_functions(settings)
    # The tables whose rows never replace each other: the lookup and the users shards.
    assert {"signup_write_email_lookup_v1", "signup_write_users_shard0_v1"} <= made
    for url in {settings.read_url, *settings.shard_urls}:
        with psycopg.connect(url) as conn:
            for name in made:
                conn.execute(f'DROP FUNCTION IF EXISTS "{name}"')
    await _register(client, 4, start=880)
    assert await _users_once_caught_up(settings) == 4

    await asyncio.to_thread(migrate, settings)
    assert _write_functions(settings) == made
    await _register(client, 3, start=890)
    assert await _users_once_caught_up(settings) == 7


async def test_the_listener_rests_while_no_projector_waits_and_wakes_one_that_begins_to(
    settings: Settings,
) -> None:
    assert settings.database_url
    channel = f"wakeups_{uuid.uuid4().hex}"
    wakeups = Wakeups(settings.database_url, channel=channel, quiet_after=0.2)
    wake = wakeups.subscribe()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    listening = asyncio.create_task(wakeups.listen(stop))
    try:
        # Connected, the first wake-up given (whatever came before is read), and, as nobody
        # waits, no longer listening: under a steady load each append's NOTIFY woke the
        # worker for nothing.
        await asyncio.sleep(1.0)
        wake.clear()
        await _notify(settings.database_url, channel)
        await asyncio.sleep(0.5)
        assert not wake.is_set()

        # A projector that found nothing begins to wait: listening again, the listener wakes
        # it at once, so that it reads whatever was appended while nobody listened.
        started = loop.time()
        await wait_for_wake(stop, wake, 30)
        assert loop.time() - started < 5

        # While one waits, an append's NOTIFY wakes it.
        waiting = asyncio.create_task(wait_for_wake(stop, wake, 30))
        await asyncio.sleep(0.5)
        started = loop.time()
        await _notify(settings.database_url, channel)
        await asyncio.wait_for(waiting, 5)
        assert loop.time() - started < 5
    finally:
        stop.set()
        await listening


async def _notify(url: str, channel: str) -> None:
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        await conn.execute("SELECT pg_notify($1, '')", channel)
    finally:
        await conn.close()
