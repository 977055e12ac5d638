"""Uniqueness reservations: one aggregate per unique value, saved with the registration.

The reservation's id is derived from the value, so two registrations claiming the same value
create the same aggregate id at version 1 and the event store's primary key rejects the second
one in the same transaction as the append. When the holder is erased the value is released
(a later version), and the next registration to claim it reclaims it at the version after:
again one version number, so again the primary key decides. The id is a keyed hash (HMAC),
so the event store never holds the email or document itself, and nobody without the key can
test a guess.
"""

from __future__ import annotations

import hashlib
import hmac
import uuid
from dataclasses import dataclass
from typing import Literal

from eventsourcing.domain import Aggregate, event
from eventsourcing.utils import get_topic

from domain.errors import (
    AlreadyRegistered,
    CnpjAlreadyRegistered,
    CpfAlreadyRegistered,
    EmailAlreadyRegistered,
)

ClaimKind = Literal["email", "cpf", "cnpj"]

_CONFLICTS: dict[str, type[AlreadyRegistered]] = {
    "email": EmailAlreadyRegistered,
    "cpf": CpfAlreadyRegistered,
    "cnpj": CnpjAlreadyRegistered,
}


@dataclass(frozen=True, slots=True)
class Claim:
    """A unique value a registration needs: its normalised email, a PF's CPF, a PJ's CNPJ."""

    kind: ClaimKind
    value: str

    def reservation_id(self, key: bytes) -> uuid.UUID:
        digest = hmac.new(key, f"{self.kind}:{self.value}".encode(), hashlib.sha256).digest()
        return uuid.UUID(bytes=digest[:16], version=5)

    def conflict(self) -> AlreadyRegistered:
        return _CONFLICTS[self.kind]()


class Reservation(Aggregate):
    class Reserved(Aggregate.Created):
        claim_id: uuid.UUID
        registration_id: uuid.UUID
        kind: str

    @event(Reserved)
    def __init__(self, *, claim_id: uuid.UUID, registration_id: uuid.UUID, kind: str) -> None:
        self.registration_id = registration_id
        self.kind = kind

    class Released(Aggregate.Event):
        """Its holder was erased: the value is free to be claimed again."""

    class Reclaimed(Aggregate.Event):
        registration_id: uuid.UUID

    @staticmethod
    def create_id(claim_id: uuid.UUID) -> uuid.UUID:
        return claim_id


def reserve(claim_id: uuid.UUID, registration_id: uuid.UUID, kind: str) -> Reservation.Reserved:
    """The event that claims a value never claimed before (what ``Reservation(...)`` records,
    without building the aggregate)."""
    return Reservation.Reserved(  # type: ignore[call-arg]
        originator_id=claim_id,
        originator_version=1,
        timestamp=Reservation.Reserved.create_timestamp(),
        originator_topic=_RESERVATION_TOPIC,
        claim_id=claim_id,
        registration_id=registration_id,
        kind=kind,
    )


def release(claim_id: uuid.UUID, held_at_version: int) -> Reservation.Released:
    """The event that frees a value, after the version at which it is held."""
    return Reservation.Released(
        originator_id=claim_id,
        originator_version=held_at_version + 1,
        timestamp=Reservation.Released.create_timestamp(),
    )


def reclaim(
    claim_id: uuid.UUID, released_at_version: int, registration_id: uuid.UUID
) -> Reservation.Reclaimed:
    """The event that gives a released value to a new registration."""
    # eventsourcing makes each event class a dataclass of its annotations; mypy cannot see it.
    return Reservation.Reclaimed(  # type: ignore[call-arg]
        originator_id=claim_id,
        originator_version=released_at_version + 1,
        timestamp=Reservation.Reclaimed.create_timestamp(),
        registration_id=registration_id,
    )


_RESERVATION_TOPIC = get_topic(Reservation)


def holder(event: object) -> uuid.UUID | None:
    """Who holds a value, given its reservation's latest event (None once released)."""
    if isinstance(event, Reservation.Reserved | Reservation.Reclaimed):
        return event.registration_id
    return None
