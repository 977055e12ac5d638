"""Use case: erase a person (LGPD, art. 18): their key shredded, every read model cleared.

The events stay, as the event store is append-only, but nobody can open them again: a replay
passes over them, so a rebuilt read model does not bring the person back.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol


class Subjects(Protocol):
    async def registration_of(self, subject_id: uuid.UUID) -> uuid.UUID | None:
        """The registration of a user id, or a registration id itself; None if neither."""
        ...

    async def shred(self, registration_id: uuid.UUID) -> bool:
        """Destroy the key that opens the registration; False if it was already gone."""
        ...


class PersonalReadModels(Protocol):
    async def forget(self, registration_id: uuid.UUID) -> Sequence[str]:
        """Remove the registration from every read model and cache; the ones it was in."""
        ...


class UnknownSubject(Exception):
    """No user or registration has this id."""


@dataclass(frozen=True, slots=True)
class Erased:
    registration_id: uuid.UUID
    key_shredded: bool  # False when an earlier erasure had already shredded it
    removed_from: Sequence[str]


@dataclass(slots=True)
class EraseUser:
    subjects: Subjects
    read_models: PersonalReadModels

    async def __call__(self, subject_id: str) -> Erased:
        try:
            parsed = uuid.UUID(subject_id)
        except ValueError:
            raise UnknownSubject(subject_id) from None
        registration_id = await self.subjects.registration_of(parsed)
        if registration_id is None:
            raise UnknownSubject(subject_id)
        # The key first: from this moment no projector can write the person anywhere again,
        # so what is removed next stays removed.
        shredded = await self.subjects.shred(registration_id)
        removed = await self.read_models.forget(registration_id)
        return Erased(registration_id, shredded, removed)
