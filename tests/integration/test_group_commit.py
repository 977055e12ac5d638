"""Group commit: concurrent registrations share a transaction, and a conflict spares the rest."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import psycopg
import pytest
from structlog.testing import capture_logs

from application.outages import StoreUnavailable
from application.registering import RegisterUser, Submission
from domain.errors import AlreadyRegistered, CpfAlreadyRegistered, EmailAlreadyRegistered
from domain.registration import Registration
from infrastructure.event_store.append_function import take_append_lock
from infrastructure.event_store.batch_append import BatchAppender
from infrastructure.event_store.group_commit import GroupCommit
from infrastructure.event_store.store import SignupEvents, open_event_store
from infrastructure.event_store.subject_keys import SubjectVault
from infrastructure.settings import Settings
from tests.factories import make_cpf, valid_form

KEY = b"test-key"


class _Capture:
    """A RegistrationLog that keeps submissions instead of appending them."""

    def __init__(self) -> None:
        self.submissions: list[Submission] = []

    async def append(self, submission: Submission) -> None:
        self.submissions.append(submission)


async def _submissions(*forms: dict[str, object]) -> list[Submission]:
    capture = _Capture()
    register = RegisterUser(capture, KEY, SubjectVault())
    for form in forms:
        await register(form)
    return capture.submissions


def _store(settings: Settings) -> SignupEvents:
    assert settings.database_url
    return open_event_store(settings.database_url, cipher_key=settings.event_cipher_key)


@asynccontextmanager
async def _appender(
    settings: Settings, kind: type[BatchAppender] = BatchAppender
) -> AsyncIterator[BatchAppender]:
    """An appender of its own, as each API process has."""
    assert settings.database_url
    opened = await BatchAppender.open(settings.database_url, _store(settings), connections=2)
    appender = kind(
        opened.pool,
        opened.mapper,
        schema=opened.schema,
        events_table=opened.events_table,
        keys_table=opened.keys_table,
    )
    try:
        yield appender
    finally:
        await appender.close()


@asynccontextmanager
async def _group_commit(settings: Settings) -> AsyncIterator[GroupCommit]:
    async with _appender(settings) as appender:
        group = GroupCommit(appender, max_wait=0.005)
        group.start()
        try:
            yield group
        finally:
            await group.stop()


def _form(n: int, email: str | None = None) -> dict[str, object]:
    address = email or f"user{n}@example.com"
    return valid_form(cpf=make_cpf(n), email=address, email_confirmation=address)


def _stored_registrations(settings: Settings, submissions: list[Submission]) -> set[uuid.UUID]:
    store = _store(settings)
    found = set()
    for submission in submissions:
        if store.recorder.select_events(submission.registration_id):
            found.add(submission.registration_id)
    return found


async def test_a_batch_holding_one_conflict_still_commits_the_others(settings: Settings) -> None:
    async with _appender(settings) as appender:
        first = await _submissions(_form(1, "taken@example.com"))
        assert await appender.record(first) == [None]

        batch = await _submissions(
            _form(2), _form(3, "TAKEN@example.com"), _form(4), _form(1, "x@example.com")
        )
        outcomes = await appender.record(batch)

    assert outcomes[0] is None and outcomes[2] is None
    assert isinstance(outcomes[1], EmailAlreadyRegistered)
    assert isinstance(outcomes[3], CpfAlreadyRegistered)
    assert _stored_registrations(settings, batch) == {
        batch[0].registration_id,
        batch[2].registration_id,
    }


async def test_a_refused_registration_leaves_its_other_values_free_for_the_next_signup(
    settings: Settings,
) -> None:
    async with _appender(settings) as appender:
        assert await appender.record(await _submissions(_form(20, "held@example.com"))) == [None]
        # Refused for its email: its CPF must not stay claimed. And for its CPF: its email.
        refused = await _submissions(_form(21, "held@example.com"), _form(20, "free@example.com"))
        assert [type(outcome) for outcome in await appender.record(refused)] == [
            EmailAlreadyRegistered,
            CpfAlreadyRegistered,
        ]

        again = await _submissions(_form(21, "other@example.com"), _form(22, "free@example.com"))
        assert await appender.record(again) == [None, None]


async def test_duplicates_inside_one_batch_keep_the_first_and_reject_the_rest(
    settings: Settings,
) -> None:
    batch = await _submissions(
        _form(10, "same@example.com"), _form(11), _form(12, "same@example.com")
    )
    async with _appender(settings) as appender:
        outcomes = await appender.record(batch)

    assert outcomes[0] is None and outcomes[1] is None
    assert isinstance(outcomes[2], EmailAlreadyRegistered)


async def test_what_a_batch_appends_eventsourcing_reads_back_as_its_own_events(
    settings: Settings,
) -> None:
    [submission] = await _submissions(_form(15))
    async with _appender(settings) as appender:
        assert await appender.record([submission]) == [None]

    store = _store(settings)
    registration = store.repository.get(submission.registration_id)
    assert registration.personal_data == submission.events[0].personal_data
    for claim_id in submission.claims:
        assert store.holder_of(claim_id) == submission.registration_id
    notifications = store.recorder.select_notifications(start=None, limit=10)
    assert [n.originator_id for n in notifications] == [submission.registration_id]
    assert [n.topic for n in notifications] == [
        store.mapper.to_stored_event(e).topic for e in submission.events
    ]


async def test_two_processes_racing_for_the_same_values_give_each_value_to_one_registration(
    settings: Settings,
) -> None:
    # As two API processes would: each its own appender and connections, the same 20 emails
    # submitted by both at once, in batches that also hold registrations nobody contests.
    contested = [_form(500 + n, f"raced{n}@example.com") for n in range(20)]
    mine = await _submissions(*contested, *(_form(600 + n) for n in range(10)))
    theirs = await _submissions(
        *(_form(700 + n, f"raced{n}@example.com") for n in range(20)),
        *(_form(800 + n) for n in range(10)),
    )
    async with _appender(settings) as one, _appender(settings) as other:
        outcomes = await asyncio.gather(
            *(one.record(mine[n : n + 5]) for n in range(0, len(mine), 5)),
            *(other.record(theirs[n : n + 5]) for n in range(0, len(theirs), 5)),
        )

    results = [outcome for batch in outcomes for outcome in batch]
    everyone = [*mine, *theirs]
    accepted = {s.registration_id for s, o in zip(everyone, results, strict=True) if o is None}
    assert sum(isinstance(o, EmailAlreadyRegistered) for o in results) == 20
    assert len(accepted) == 40  # 20 contested emails won once each, 20 uncontested signups
    assert _stored_registrations(settings, everyone) == accepted


async def test_concurrent_appends_are_committed_together_in_few_transactions(
    settings: Settings,
) -> None:
    submissions = await _submissions(*(_form(100 + n) for n in range(100)))
    async with _group_commit(settings) as group:
        await asyncio.gather(*(group.append(s) for s in submissions))

    assert sum(group.batch_sizes) == 100
    assert len(group.batch_sizes) < 20, group.batch_sizes


async def test_an_append_raises_the_conflict_only_for_its_own_submission(
    settings: Settings,
) -> None:
    submissions = await _submissions(
        _form(200, "dup@example.com"), _form(201), _form(202, "dup@example.com")
    )
    async with _group_commit(settings) as group:
        results = await asyncio.gather(
            *(group.append(s) for s in submissions), return_exceptions=True
        )

    assert results[0] is None and results[1] is None
    assert isinstance(results[2], EmailAlreadyRegistered)


@pytest.mark.parametrize("person_type", ["PF", "PJ"])
async def test_the_claims_a_registration_holds_are_keyed_hashes_not_its_email_or_document(
    settings: Settings, person_type: str
) -> None:
    form = (
        _form(300)
        if person_type == "PF"
        else {**_form(300), "person_type": "PJ", "cnpj": "11.222.333/0001-81"}
    )
    [submission] = await _submissions(form)
    async with _appender(settings) as appender:
        assert await appender.record([submission]) == [None]
        rows = await appender.pool.fetch("SELECT * FROM signup_claims")

    document = "cpf" if person_type == "PF" else "cnpj"
    assert sorted(row["kind"] for row in rows) == sorted(["email", document])
    assert {row["registration_id"] for row in rows} == {submission.registration_id}
    stored = repr([dict(row) for row in rows])
    for value in ("user300@example.com", make_cpf(300), "11222333000181"):
        assert value not in stored


async def test_a_signup_refused_for_a_neighbour_that_then_failed_itself_is_recorded(
    settings: Settings,
) -> None:
    async with _appender(settings) as appender:
        assert await appender.record(await _submissions(_form(30))) == [None]
        # The first claims shared@ but its CPF is already taken; the second wants shared@ too.
        batch = await _submissions(_form(30, "shared@example.com"), _form(31, "shared@example.com"))

        outcomes = await appender.record(batch)

    assert isinstance(outcomes[0], CpfAlreadyRegistered)
    assert outcomes[1] is None  # nobody holds shared@ after all
    assert _stored_registrations(settings, batch) == {batch[1].registration_id}


async def test_a_signup_hears_503_in_time_when_its_batch_is_slow_and_a_retry_finds_it_recorded(
    settings: Settings,
) -> None:
    release = asyncio.Event()

    class Held(BatchAppender):
        """The real appender, held until the test lets it go: as a batch retried through an
        outage. Only the deadline can answer the signup meanwhile."""

        async def record(self, batch: Sequence[Submission]) -> list[AlreadyRegistered | None]:
            await release.wait()
            return await super().record(batch)

    async with _appender(settings, Held) as appender:
        group = GroupCommit(appender, answer_within=0.2)
        group.start()
        [submission] = await _submissions(_form(40))
        try:
            with pytest.raises(StoreUnavailable) as told:
                # (Without its deadline the signup would wait forever: 60 s says it did not.)
                await asyncio.wait_for(group.append(submission), 60)
            # Told by the deadline, before the batch's fate was known; which comes later.
            outcome = told.value.outcome
            assert outcome is not None and not asyncio.ensure_future(outcome).done()
            release.set()
            await outcome  # the batch commits after all
            [retry] = await _submissions(_form(40))
            group.answer_within = 5.0  # this time the client waits for the slow batch
            with pytest.raises(EmailAlreadyRegistered):
                await group.append(retry)
        finally:
            await group.stop()
    assert _stored_registrations(settings, [submission]) == {submission.registration_id}


async def test_a_store_not_migrated_for_this_version_is_unavailable_and_the_log_says_to_migrate(
    settings: Settings,
) -> None:
    assert settings.database_url
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        conn.execute("DROP FUNCTION signup_append_batch")
    async with _appender(settings) as appender:
        [submission] = await _submissions(_form(50))
        with capture_logs() as logged, pytest.raises(StoreUnavailable):
            await appender.record([submission])
    assert {"event": "event_store_not_migrated", "hint": "run `signup migrate`"}.items() <= next(
        e for e in logged if e["event"] == "event_store_not_migrated"
    ).items()


def _vacuum_holding_the_events_table(settings: Settings) -> psycopg.Connection[tuple[object, ...]]:
    """A connection holding the lock a VACUUM (autovacuum's too) holds on the events table
    while it runs, until it is closed: a vacuum that takes as long as the test needs."""
    assert settings.database_url
    vacuum = psycopg.connect(settings.database_url)
    vacuum.execute("LOCK TABLE signup_events IN SHARE UPDATE EXCLUSIVE MODE")
    return vacuum


async def test_signups_and_eventsourcing_s_own_writes_go_on_while_the_events_table_is_vacuumed(
    settings: Settings,
) -> None:
    """Autovacuum came to the events table a minute into a bench and the appends waited for
    it (the events table's EXCLUSIVE lock conflicts with a vacuum's) until PostgreSQL
    cancelled it: a second at a quarter of the rate, and a vacuum that never finished."""
    [submission] = await _submissions(_form(60))
    written_by_eventsourcing = Registration.request(uuid.uuid4(), b"sealed")
    store = _store(settings)
    with _vacuum_holding_the_events_table(settings):
        async with _group_commit(settings) as group:
            group.answer_within = 3.0  # the lock_timeout is 5 s: a wait would be told 503
            await group.append(submission)
        await asyncio.wait_for(asyncio.to_thread(store.save, written_by_eventsourcing), 10)
    store.close()
    assert _stored_registrations(settings, [submission]) == {submission.registration_id}
    assert _store(settings).recorder.select_events(written_by_eventsourcing.id)


async def test_an_append_and_eventsourcing_s_own_writes_wait_for_a_writer_in_progress(
    settings: Settings,
) -> None:
    """Every writer of the events table takes the same turn, so notification ids commit in
    the order they are given: a reader never passes an id that commits later."""
    [submission] = await _submissions(_form(61))
    written_by_eventsourcing = Registration.request(uuid.uuid4(), b"sealed")
    store = _store(settings)
    assert settings.database_url
    async with _group_commit(settings) as group:
        group.answer_within = 30.0
        with psycopg.connect(settings.database_url) as writer:
            # A writer in the middle of its turn (what the append function and the recorder
            # take before they insert an event).
            writer.execute(take_append_lock("public", "signup_events"))
            appending = asyncio.ensure_future(group.append(submission))
            saving = asyncio.ensure_future(asyncio.to_thread(store.save, written_by_eventsourcing))
            done, _ = await asyncio.wait([appending, saving], timeout=1.0)
            assert not done  # both wait for the writer's turn to end
            writer.commit()
        await asyncio.wait_for(asyncio.gather(appending, saving), 10)
    store.close()
    assert _stored_registrations(settings, [submission]) == {submission.registration_id}
