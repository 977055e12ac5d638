"""Uniqueness reservations: one aggregate per unique value, saved with the registration.

The reservation's id is derived from the value, so two registrations claiming the same value
create the same aggregate id at version 1 and the event store's primary key rejects the second
one in the same transaction as the append. The id is a keyed hash (HMAC), so the event store
never holds the email or document itself, and nobody without the key can test a guess.
"""

from __future__ import annotations

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

    @staticmethod
    def create_id(claim_id: uuid.UUID) -> uuid.UUID:
        return claim_id
