"""Group commit: concurrent registrations share a transaction, and a conflict spares the rest."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import pytest

from application.registering import RegisterUser, StoreUnavailable, Submission
from domain.errors import AlreadyRegistered, CpfAlreadyRegistered, EmailAlreadyRegistered
from infrastructure.event_store import BatchRecorder, GroupCommit, SignupEvents, open_event_store
from infrastructure.settings import Settings
from infrastructure.subject_keys import SubjectVault
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
async def _group_commit(settings: Settings) -> AsyncIterator[GroupCommit]:
    group = GroupCommit(BatchRecorder(_store(settings)), max_wait=0.005)
    group.start()
    try:
        yield group
    finally:
        await group.stop()


def _form(n: int, email: str | None = None) -> dict[str, object]:
    address = email or f"user{n}@example.com"
    return valid_form(cpf=make_cpf(n), email=address, email_confirmation=address)


def _stored_registrations(recorder: BatchRecorder, submissions: list[Submission]) -> set[uuid.UUID]:
    found = set()
    for submission in submissions:
        if recorder.app.recorder.select_events(submission.registration_id):
            found.add(submission.registration_id)
    return found


async def test_a_batch_holding_one_conflict_still_commits_the_others(settings: Settings) -> None:
    assert settings.database_url
    recorder = BatchRecorder(_store(settings))
    first = await _submissions(_form(1, "taken@example.com"))
    assert recorder.record(first) == [None]

    batch = await _submissions(
        _form(2), _form(3, "TAKEN@example.com"), _form(4), _form(1, "x@example.com")
    )
    outcomes = recorder.record(batch)

    assert outcomes[0] is None and outcomes[2] is None
    assert isinstance(outcomes[1], EmailAlreadyRegistered)
    assert isinstance(outcomes[3], CpfAlreadyRegistered)
    assert _stored_registrations(recorder, batch) == {
        batch[0].registration_id,
        batch[2].registration_id,
    }


async def test_duplicates_inside_one_batch_keep_the_first_and_reject_the_rest(
    settings: Settings,
) -> None:
    assert settings.database_url
    recorder = BatchRecorder(_store(settings))
    batch = await _submissions(
        _form(10, "same@example.com"), _form(11), _form(12, "same@example.com")
    )

    outcomes = recorder.record(batch)

    assert outcomes[0] is None and outcomes[1] is None
    assert isinstance(outcomes[2], EmailAlreadyRegistered)


class _BlindToExisting(BatchRecorder):
    """Sees no existing reservations before saving, as when another API process commits the
    same email between this process's check and its save."""

    def __init__(self, app: object) -> None:
        super().__init__(app)  # type: ignore[arg-type]
        self.checks = 0

    def reserved(self, reservation_ids: set[uuid.UUID]) -> set[uuid.UUID]:
        self.checks += 1
        return set() if self.checks == 1 else super().reserved(reservation_ids)


async def test_a_conflict_that_races_past_the_check_is_isolated_by_the_primary_key(
    settings: Settings,
) -> None:
    assert settings.database_url
    app = _store(settings)
    assert BatchRecorder(app).record(await _submissions(_form(20, "raced@example.com"))) == [None]

    racing = _BlindToExisting(app)
    batch = await _submissions(_form(21), _form(22), _form(23, "raced@example.com"), _form(24))
    outcomes = racing.record(batch)

    assert [o is None for o in outcomes] == [True, True, False, True]
    assert isinstance(outcomes[2], EmailAlreadyRegistered)
    assert len(_stored_registrations(racing, batch)) == 3


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
async def test_reservation_events_hold_no_email_or_document(
    settings: Settings, person_type: str
) -> None:
    submissions = await _submissions(
        _form(300)
        if person_type == "PF"
        else {**_form(300), "person_type": "PJ", "cnpj": "11.222.333/0001-81"}
    )
    reservation_events = [e for e in submissions[0].events if type(e).__name__ == "Reserved"]
    assert len(reservation_events) == 2
    for reserved in reservation_events:
        assert "example.com" not in repr(reserved.__dict__)
        assert make_cpf(300) not in repr(reserved.__dict__)


async def test_a_signup_refused_for_a_neighbour_that_then_failed_itself_is_recorded(
    settings: Settings,
) -> None:
    recorder = BatchRecorder(_store(settings))
    assert recorder.record(await _submissions(_form(30))) == [None]
    # The first claims shared@ but its CPF is already taken; the second wants shared@ too.
    batch = await _submissions(_form(30, "shared@example.com"), _form(31, "shared@example.com"))

    outcomes = recorder.record(batch)

    assert isinstance(outcomes[0], CpfAlreadyRegistered)
    assert outcomes[1] is None  # nobody holds shared@ after all
    assert _stored_registrations(recorder, batch) == {batch[1].registration_id}


class _SlowRecorder(BatchRecorder):
    """The real recorder, after a pause: as when eventsourcing retries through an outage."""

    def record(self, batch: Sequence[Submission]) -> list[AlreadyRegistered | None]:
        time.sleep(1.0)
        return super().record(batch)


async def test_a_signup_hears_503_in_time_when_its_batch_is_slow_and_a_retry_finds_it_recorded(
    settings: Settings,
) -> None:
    group = GroupCommit(_SlowRecorder(_store(settings)), answer_within=0.2)
    group.start()
    [submission] = await _submissions(_form(40))
    try:
        started = time.monotonic()
        with pytest.raises(StoreUnavailable):
            await group.append(submission)
        assert time.monotonic() - started < 1.0  # told before the batch's fate was known
        await asyncio.sleep(1.5)  # the batch commits after all
        [retry] = await _submissions(_form(40))
        group.answer_within = 5.0  # this time the client waits for the slow batch
        with pytest.raises(EmailAlreadyRegistered):
            await group.append(retry)
    finally:
        await group.stop()
    assert _stored_registrations(group.recorder, [submission]) == {submission.registration_id}
