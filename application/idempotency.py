"""Idempotent answers: a retried request with the same key and body gets the first answer."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class StoredAnswer:
    """The first answer given for a key, replayed byte for byte."""

    status: int
    body: bytes
    headers: dict[str, str]
    # The registration the answer names (a 202's), so that erasing the person finds the
    # record; not part of what is replayed.
    subject: str | None = None


@dataclass(frozen=True, slots=True)
class Claimed:
    """This request is the first with its key: process it, then ``complete`` or ``release``."""


@dataclass(frozen=True, slots=True)
class Replay:
    answer: StoredAnswer


@dataclass(frozen=True, slots=True)
class InProgress:
    """The first request with this key has not answered yet."""


@dataclass(frozen=True, slots=True)
class KeyReused:
    """The key was first used with a different body."""


ClaimOutcome = Claimed | Replay | InProgress | KeyReused


class IdempotencyStore(Protocol):
    async def claim(self, key: str, fingerprint: str) -> ClaimOutcome: ...

    async def complete(self, key: str, fingerprint: str, answer: StoredAnswer) -> None: ...

    async def release(self, key: str) -> None: ...

    async def forget(self, subject: str) -> bool:
        """Remove the record of the answer that named ``subject``; False if there was none."""
        ...
