"""The Registration aggregate: a person's request to sign up, recorded once.

What the person submitted is personal data, and the event store is append-only: so the event
carries it sealed with a key of that person's own (see ``application/personal_data.py``).
Destroying the key erases them from history without rewriting it.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from eventsourcing.domain import Aggregate, event
from eventsourcing.utils import get_topic

from domain.form import PF, RegistrationDetails
from domain.reservations import Claim


class Registration(Aggregate):
    class UserRegistrationRequested(Aggregate.Created):
        """Everything the person submitted, validated, normalised and sealed."""

        personal_data: bytes

    @event(UserRegistrationRequested)
    def __init__(self, *, id: uuid.UUID, personal_data: bytes) -> None:
        self.personal_data = personal_data

    @classmethod
    def request(cls, registration_id: uuid.UUID, personal_data: bytes) -> Registration:
        """``personal_data`` is the sealed ``RegistrationDetails`` of this registration id."""
        return cls(id=registration_id, personal_data=personal_data)

    class EmailVerified(Aggregate.Event):
        """The person proved they read the mail sent to the address: the claim is final.
        ``requested_at`` is the request's time (the status read model shows it), never
        anything the person typed."""

        requested_at: datetime

    class RegistrationExpired(Aggregate.Event):
        """Not verified in time: its values were released and its personal data shredded."""

        requested_at: datetime


# A registration is verified or expired, once: both verdicts are its second event, so the
# event store's unique (originator id, version) lets only the first of the two be recorded,
# however a verification and the expiry sweep race.
VERDICT_VERSION = 2


def requested(registration_id: uuid.UUID, personal_data: bytes) -> UserRegistrationRequested:
    """The event ``Registration.request`` records, made without building the aggregate: a
    signup only appends it, and on the accept path the aggregate's machinery costs more than
    the event (13 us against 3)."""
    # eventsourcing makes each event class a dataclass of its annotations; mypy cannot see it.
    return UserRegistrationRequested(  # type: ignore[call-arg]
        originator_id=registration_id,
        originator_version=1,
        timestamp=UserRegistrationRequested.create_timestamp(),
        originator_topic=_REGISTRATION_TOPIC,
        personal_data=personal_data,
    )


class Attempt(Aggregate):
    """The enumeration-resistant mode's answer to a duplicate signup, recorded as a
    registration is, so that its id goes pending -> completed through the same projection,
    with the same timing, as a real registration's does (an answer that came complete at
    once would tell a duplicate apart)."""

    class SignupAttempted(Aggregate.Created):
        """Someone signed up with a value another registration holds and was answered as a
        new registration under this id. Ids only: nothing the person typed is kept."""


def attempted(attempt_id: uuid.UUID) -> SignupAttempted:
    """The event recording a duplicate attempt's id (made as ``requested`` makes its own)."""
    return SignupAttempted(
        originator_id=attempt_id,
        originator_version=1,
        timestamp=SignupAttempted.create_timestamp(),
        originator_topic=_ATTEMPT_TOPIC,
    )


def verified(registration_id: uuid.UUID, requested_at: datetime) -> EmailVerified:
    """The verdict recorded when the right code (or the link) is offered in time."""
    return EmailVerified(  # type: ignore[call-arg]
        originator_id=registration_id,
        originator_version=VERDICT_VERSION,
        timestamp=EmailVerified.create_timestamp(),
        requested_at=requested_at,
    )


def expired(registration_id: uuid.UUID, requested_at: datetime) -> RegistrationExpired:
    """The verdict recorded when the verification deadline passed first."""
    return RegistrationExpired(  # type: ignore[call-arg]
        originator_id=registration_id,
        originator_version=VERDICT_VERSION,
        timestamp=RegistrationExpired.create_timestamp(),
        requested_at=requested_at,
    )


def claims(details: RegistrationDetails) -> list[Claim]:
    """The unique values a registration must hold alone.

    A person may be responsible for several companies, so a PJ claims its CNPJ, not the CPF.
    """
    document = (
        Claim("cpf", details.cpf)
        if details.person_type == PF
        else Claim("cnpj", details.cnpj or "")
    )
    return [Claim("email", details.email), document]


UserRegistrationRequested = Registration.UserRegistrationRequested
_REGISTRATION_TOPIC = get_topic(Registration)
EmailVerified = Registration.EmailVerified
RegistrationExpired = Registration.RegistrationExpired
SignupAttempted = Attempt.SignupAttempted
_ATTEMPT_TOPIC = get_topic(Attempt)
