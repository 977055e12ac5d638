"""Use case: register a user. Validate, claim the unique values, record the request."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from application.identifiers import new_registration_id
from application.outages import StoreUnavailable
from application.personal_data import PersonalDataVault
from application.rate_limits import RateLimiter, enforce
from application.status import PendingStatuses, RegistrationStatus
from domain.errors import AlreadyRegistered, EmailAlreadyRegistered, InvalidRegistration
from domain.form import RegistrationDetails, parse_registration_form
from domain.registration import attempted, claims, requested
from domain.reservations import Claim
from domain.statuses import PENDING


@dataclass(frozen=True, slots=True)
class Submission:
    """A registration's new events and the values it claims, to be appended atomically."""

    registration_id: uuid.UUID
    events: Sequence[Any]
    claims: Mapping[uuid.UUID, Claim]
    # The key that opens this registration's personal data, as stored (see PersonalDataVault);
    # None for a record that holds none (a duplicate attempt's).
    subject_key: bytes | None


class RegistrationLog(Protocol):
    """Where accepted registrations are recorded (the event store).

    ``append`` returns once the submission is durable, or raises the domain's
    ``AlreadyRegistered`` naming the claim someone else holds, or ``StoreUnavailable``.
    """

    async def append(self, submission: Submission) -> None: ...


class KnownEmails(Protocol):
    """The email lookup read model: a fast, possibly stale answer to "is this email taken?"."""

    async def registered(self, email: str) -> bool: ...


@dataclass(frozen=True, slots=True)
class DuplicateAttempt:
    """Someone tried to sign up with a value another registration holds (their reservation)."""

    attempt_id: uuid.UUID  # what the person trying was told is their registration id
    reservation_id: uuid.UUID
    kind: str  # email, cpf or cnpj


class OwnerNotifications(Protocol):
    """The enumeration-resistant mode's outbox: the holder of the value hears of the attempt
    (a mailer reads the outbox); ``notify`` returns once that is durable."""

    async def notify(self, attempt: DuplicateAttempt) -> None: ...


@dataclass(frozen=True, slots=True)
class Accepted:
    registration_id: uuid.UUID


@dataclass(slots=True)
class RegisterUser:
    log: RegistrationLog
    reservation_key: bytes
    vault: PersonalDataVault
    # Rejects most duplicates without touching the event store; its reservations stay the
    # authority, so a stale or missing answer here never lets a duplicate through.
    known_emails: KnownEmails | None = None
    limiter: RateLimiter | None = None
    # The enumeration-resistant mode, when set: a duplicate is answered as a new signup, so
    # the answer never tells whether an email or document is registered, and its holder is
    # notified instead. Unset, a duplicate gets 409 naming the field, as the contract says.
    owners: OwnerNotifications | None = None
    # Told of each registration once it is durable: its first polls are answered from there.
    pending: PendingStatuses | None = None

    async def __call__(self, form: object, client: str = "") -> Accepted:
        try:
            details = parse_registration_form(form)
        except InvalidRegistration:
            # Counted too: a flood of invalid bodies is throttled like any other.
            await enforce(self.limiter, [("client", client)])
            raise
        # Keyed by the claims' HMACs, so the limiter's store never holds an email or a CPF.
        held = claims(details)
        reservation_ids: dict[str, uuid.UUID] = {
            claim.kind: claim.reservation_id(self.reservation_key) for claim in held
        }
        # The client's limit first; one round trip for the three.
        await enforce(
            self.limiter,
            [
                ("client", client),
                ("email", str(reservation_ids["email"])),
                ("cpf", str(self._cpf_key(details.cpf, reservation_ids))),
            ],
        )
        registration_id = new_registration_id()
        try:
            try:
                if self.known_emails is not None and await self.known_emails.registered(
                    details.email
                ):
                    raise EmailAlreadyRegistered()
                submission = self._submission(registration_id, details, held, reservation_ids)
                await self.log.append(submission)
                self._note_pending(submission)
            except AlreadyRegistered as taken:
                if self.owners is None:
                    raise
                await self._answer_as_new(registration_id, reservation_ids[taken.field], taken)
        except StoreUnavailable as unconfirmed:
            unconfirmed.registration_id = registration_id
            raise
        return Accepted(registration_id)

    async def _answer_as_new(
        self, attempt_id: uuid.UUID, reservation_id: uuid.UUID, taken: AlreadyRegistered
    ) -> None:
        """The enumeration-resistant mode: the holder is told of the attempt, and the
        attempt's id is recorded as a registration's is (without claims or personal data),
        so that it goes pending -> completed as a real one does."""
        assert self.owners is not None
        await self.owners.notify(DuplicateAttempt(attempt_id, reservation_id, taken.field))
        submission = Submission(attempt_id, [attempted(attempt_id)], {}, None)
        await self.log.append(submission)
        self._note_pending(submission)

    def _note_pending(self, submission: Submission) -> None:
        if self.pending is not None:
            # As the event store would answer it: requested (and last changed) when recorded.
            at = submission.events[0].timestamp
            self.pending.note(RegistrationStatus(submission.registration_id, PENDING, at, at))

    def _submission(
        self,
        registration_id: uuid.UUID,
        details: RegistrationDetails,
        held: Sequence[Claim],
        reservation_ids: Mapping[str, uuid.UUID],
    ) -> Submission:
        sealed = self.vault.seal(registration_id, details)
        return Submission(
            registration_id=registration_id,
            events=[requested(registration_id, sealed.personal_data)],
            claims={reservation_ids[claim.kind]: claim for claim in held},
            subject_key=sealed.key,
        )

    def _cpf_key(self, cpf: str, reservation_ids: Mapping[str, uuid.UUID]) -> uuid.UUID:
        # A PF already claims its CPF; a PJ's responsible person is limited by theirs too.
        held = reservation_ids.get("cpf")
        return held if held is not None else Claim("cpf", cpf).reservation_id(self.reservation_key)
