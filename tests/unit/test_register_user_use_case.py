"""RegisterUser on in-memory fakes of its ports: what it records, and what it refuses."""

from __future__ import annotations

import uuid

import pytest

from application.outages import StoreUnavailable
from application.personal_data import Sealed
from application.registering import DuplicateAttempt, RegisterUser, Submission
from application.status import RegistrationStatus
from domain.errors import EmailAlreadyRegistered
from domain.form import RegistrationDetails
from domain.registration import SignupAttempted, UserRegistrationRequested
from tests.factories import make_cpf, mask_cpf, valid_form

KEY = b"reservation-key-of-these-tests!!"


class Log:
    """The event store's port over a list; the values it holds are claimed once."""

    def __init__(self) -> None:
        self.recorded: list[Submission] = []
        self.held: set[uuid.UUID] = set()

    async def append(self, submission: Submission) -> None:
        for claim_id, claim in submission.claims.items():
            if claim_id in self.held:
                raise claim.conflict()
        self.held.update(submission.claims)
        self.recorded.append(submission)


class Vault:
    def seal(self, registration_id: uuid.UUID, details: RegistrationDetails) -> Sealed:
        return Sealed(f"sealed {registration_id}".encode(), b"key")

    def open(
        self, registration_id: uuid.UUID, personal_data: bytes, key: bytes
    ) -> RegistrationDetails:
        raise NotImplementedError


class Outbox:
    def __init__(self) -> None:
        self.notices: list[DuplicateAttempt] = []

    async def notify(self, attempt: DuplicateAttempt) -> None:
        self.notices.append(attempt)


def _second_signup_with_the_same_email() -> dict[str, object]:
    return valid_form(cpf=mask_cpf(make_cpf(1)))  # another person, the first one's email


async def test_a_signup_is_recorded_as_one_sealed_event_claiming_its_email_and_cpf() -> None:
    log = Log()
    accepted = await RegisterUser(log, KEY, Vault())(valid_form())

    [submission] = log.recorded
    assert submission.registration_id == accepted.registration_id
    [event] = submission.events
    assert isinstance(event, UserRegistrationRequested)
    assert event.personal_data == f"sealed {accepted.registration_id}".encode()
    assert sorted(claim.kind for claim in submission.claims.values()) == ["cpf", "email"]
    assert submission.subject_key == b"key"


async def test_a_duplicate_email_is_refused_naming_the_field_and_nothing_is_recorded() -> None:
    log = Log()
    register = RegisterUser(log, KEY, Vault())
    await register(valid_form())

    with pytest.raises(EmailAlreadyRegistered):
        await register(_second_signup_with_the_same_email())
    assert len(log.recorded) == 1


async def test_a_duplicate_in_the_resistant_mode_notifies_the_holder_and_records_an_attempt() -> (
    None
):
    log, outbox = Log(), Outbox()
    register = RegisterUser(log, KEY, Vault(), owners=outbox)
    await register(valid_form())

    attempt = await register(_second_signup_with_the_same_email())

    [notice] = outbox.notices
    assert (notice.attempt_id, notice.kind) == (attempt.registration_id, "email")
    # The attempt's id is recorded as an event of its own: no claim, no key, nothing typed.
    recorded = log.recorded[-1]
    assert recorded.registration_id == attempt.registration_id
    assert [type(event) for event in recorded.events] == [SignupAttempted]
    assert (recorded.claims, recorded.subject_key) == ({}, None)


class Pending:
    def __init__(self) -> None:
        self.noted: list[RegistrationStatus] = []

    def note(self, status: RegistrationStatus) -> None:
        self.noted.append(status)


class Unavailable(Log):
    async def append(self, submission: Submission) -> None:
        raise StoreUnavailable("down")


async def test_a_recorded_signup_is_noted_pending_as_the_event_store_would_answer_it() -> None:
    log, pending = Log(), Pending()
    accepted = await RegisterUser(log, KEY, Vault(), pending=pending)(valid_form())

    [event] = log.recorded[0].events
    assert pending.noted == [
        RegistrationStatus(accepted.registration_id, "pending", event.timestamp, event.timestamp)
    ]


async def test_nothing_is_noted_pending_for_a_refused_or_unconfirmed_signup() -> None:
    pending = Pending()
    register = RegisterUser(Log(), KEY, Vault(), pending=pending)
    await register(valid_form())

    with pytest.raises(EmailAlreadyRegistered):
        await register(_second_signup_with_the_same_email())
    with pytest.raises(StoreUnavailable):
        await RegisterUser(Unavailable(), KEY, Vault(), pending=pending)(valid_form())
    assert len(pending.noted) == 1


async def test_a_duplicate_attempt_in_the_resistant_mode_is_noted_pending_like_a_signup() -> None:
    log, pending = Log(), Pending()
    register = RegisterUser(log, KEY, Vault(), owners=Outbox(), pending=pending)
    await register(valid_form())

    attempt = await register(_second_signup_with_the_same_email())

    assert [status.registration_id for status in pending.noted][-1] == attempt.registration_id
    assert pending.noted[-1].status == "pending"
    assert pending.noted[-1].requested_at == log.recorded[-1].events[0].timestamp
