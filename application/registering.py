"""Use case: register a user. Validate, claim the unique values, record the request."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from application.personal_data import PersonalDataVault
from application.rate_limits import RateLimited, RateLimiter
from domain.errors import EmailAlreadyRegistered
from domain.form import parse_registration_form
from domain.registration import Registration, claims
from domain.reservations import Claim, Reservation


@dataclass(frozen=True, slots=True)
class Submission:
    """A registration's new events and the reservations among them, to be appended atomically."""

    registration_id: uuid.UUID
    events: Sequence[Any]
    claims: Mapping[uuid.UUID, Claim]
    # The key that opens this registration's personal data, as stored (see PersonalDataVault).
    subject_key: bytes


class RegistrationLog(Protocol):
    """Where accepted registrations are recorded (the event store).

    ``append`` returns once the submission is durable, or raises the domain's
    ``AlreadyRegistered`` naming the claim someone else holds, or ``StoreUnavailable``.
    """

    async def append(self, submission: Submission) -> None: ...


class KnownEmails(Protocol):
    """The email lookup read model: a fast, possibly stale answer to "is this email taken?"."""

    async def registered(self, email: str) -> bool: ...


class StoreUnavailable(Exception):
    """The event store cannot be reached or did not confirm; the client may retry safely.

    Almost always nothing was recorded; if a commit succeeded but its acknowledgement was
    lost, a retry finds the registration (idempotency key) or its email taken (409).
    """


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

    async def __call__(self, form: object, client: str = "") -> Accepted:
        # The client's limit comes first, so a flood of invalid bodies is throttled too.
        await self._limit("client", client)
        details = parse_registration_form(form)
        # Keyed by the claims' HMACs, so the limiter's store never holds an email or a CPF.
        held = {claim.kind: claim for claim in claims(details)}
        reservation_ids = {
            kind: claim.reservation_id(self.reservation_key) for kind, claim in held.items()
        }
        # Independent counters: ask for both at once, one round trip of waiting instead of two.
        outcomes = await asyncio.gather(
            self._limit("email", str(reservation_ids["email"])),
            self._limit("cpf", str(Claim("cpf", details.cpf).reservation_id(self.reservation_key))),
            return_exceptions=True,
        )
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome
        if self.known_emails is not None and await self.known_emails.registered(details.email):
            raise EmailAlreadyRegistered()
        registration_id = uuid.uuid4()
        sealed = self.vault.seal(registration_id, details)
        registration = Registration.request(registration_id, sealed.personal_data)
        events = list(registration.collect_events())
        for kind, claim in held.items():
            reservation = Reservation(
                claim_id=reservation_ids[kind], registration_id=registration_id, kind=claim.kind
            )
            events.extend(reservation.collect_events())
        await self.log.append(
            Submission(
                registration_id=registration_id,
                events=events,
                claims={reservation_ids[kind]: claim for kind, claim in held.items()},
                subject_key=sealed.key,
            )
        )
        return Accepted(registration_id)

    async def _limit(self, limit: str, key: str) -> None:
        if self.limiter is not None and key:
            retry_after = await self.limiter.hit(limit, key)
            if retry_after is not None:
                raise RateLimited(limit, retry_after)
