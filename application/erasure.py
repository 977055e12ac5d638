"""Use case: erase a person (LGPD, art. 18): their key shredded, every read model cleared.

The events stay, as the event store is append-only, but nobody can open them again: a replay
passes over them, so a rebuilt read model does not bring the person back.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from domain.contact import normalise_email
from domain.reservations import Claim
from domain.values import InvalidValue


class Subjects(Protocol):
    async def registration_of(self, subject_id: uuid.UUID) -> uuid.UUID | None:
        """The registration of a user id, or a registration id itself; None if neither."""
        ...

    async def registration_holding(self, claim: Claim) -> uuid.UUID | None:
        """The registration that holds this email (or document), if any."""
        ...

    async def shred(self, registration_id: uuid.UUID) -> bool:
        """Destroy the key that opens the registration; False if it was already gone."""
        ...

    async def release(self, registration_id: uuid.UUID) -> int:
        """Free every value the registration still holds; how many it freed. Run again after
        an interruption, it frees what is left."""
        ...


class PersonalReadModels(Protocol):
    async def forget(self, registration_id: uuid.UUID) -> Sequence[str]:
        """Remove the registration from every read model and cache; the ones it was in."""
        ...


class UnknownSubject(Exception):
    """No user, registration or email matches what the operator gave."""


@dataclass(frozen=True, slots=True)
class Erased:
    registration_id: uuid.UUID
    key_shredded: bool  # False when an earlier erasure had already shredded it
    removed_from: Sequence[str]
    released: int  # its email and CPF/CNPJ, free for a new signup


@dataclass(slots=True)
class EraseUser:
    subjects: Subjects
    read_models: PersonalReadModels

    async def __call__(self, subject: str) -> Erased:
        """``subject``: a user id, a registration id, or the email the person signed up with
        (what they usually tell the operator)."""
        registration_id = await self._registration(subject)
        if registration_id is None:
            raise UnknownSubject(subject)
        # The key first: from this moment no projector can write the person anywhere again,
        # so what is removed next stays removed.
        shredded = await self.subjects.shred(registration_id)
        removed = await self.read_models.forget(registration_id)
        # The values last: a new signup with the same email must not reach the email lookup
        # (keyed by email) before the erased person's row has left it.
        released = await self.subjects.release(registration_id)
        return Erased(registration_id, shredded, removed, released)

    async def _registration(self, subject: str) -> uuid.UUID | None:
        if "@" in subject:
            try:
                email = normalise_email(subject)
            except InvalidValue:
                return None
            return await self.subjects.registration_holding(Claim("email", email))
        try:
            return await self.subjects.registration_of(uuid.UUID(subject))
        except ValueError:
            return None
