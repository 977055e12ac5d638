"""Uniqueness claims: the values a registration must hold alone, and their ids.

A claim's id is derived from the value, so two registrations claiming the same value claim
the same id, and the event store's claims table (its primary key, in the transaction of the
append) lets only one of them have it; erasing the holder releases the value for a new
signup. The id is a keyed hash (HMAC), so the store never holds the email or document
itself, and nobody without the key can test a guess.

``Reservation`` is how claims were recorded before they became rows (an aggregate per value,
its events in the store): stores written then still hold those events, which are read once to
turn them into rows (``infrastructure/event_store/claims.py``), and never written any more.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import uuid
from dataclasses import dataclass
from typing import Literal

from eventsourcing.domain import Aggregate, event

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


@functools.lru_cache(maxsize=8)
def _keyed(key: bytes) -> hmac.HMAC:
    """The HMAC keyed once: every claim of a signup copies it (1.0 us) instead of keying its
    own (1.5 us); the same digest."""
    return hmac.new(key, digestmod=hashlib.sha256)


@dataclass(frozen=True, slots=True)
class Claim:
    """A unique value a registration needs: its normalised email, a PF's CPF, a PJ's CNPJ."""

    kind: ClaimKind
    value: str

    def reservation_id(self, key: bytes) -> uuid.UUID:
        mac = _keyed(key).copy()
        mac.update(f"{self.kind}:{self.value}".encode())
        return uuid.UUID(bytes=mac.digest()[:16], version=5)

    def conflict(self) -> AlreadyRegistered:
        return _CONFLICTS[self.kind]()


class Reservation(Aggregate):
    """A claim as an aggregate (before claims were rows); read from old stores only."""

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


def holder(event: object) -> uuid.UUID | None:
    """Who holds a value, given its reservation's latest event (None once released)."""
    if isinstance(event, Reservation.Reserved | Reservation.Reclaimed):
        return event.registration_id
    return None
