"""Per-subject keys: each registration's personal data is sealed with a key of its own.

The event store is append-only and replayed forever, so erasing a person (LGPD, art. 18)
cannot mean rewriting their events: it means destroying the one key that opens them
("crypto-shredding"). The key is stored beside the events, written in the same transaction.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Protocol

from domain.form import RegistrationDetails


@dataclass(frozen=True, slots=True)
class Sealed:
    """A registration's personal data, sealed, and the key that opens it, as stored."""

    personal_data: bytes
    key: bytes


class PersonalDataVault(Protocol):
    def seal(self, registration_id: uuid.UUID, details: RegistrationDetails) -> Sealed: ...

    def open(
        self, registration_id: uuid.UUID, personal_data: bytes, key: bytes
    ) -> RegistrationDetails: ...
