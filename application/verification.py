"""Use cases of email verification: verify a code, send a new one, expire the unverified.

A registration's challenge (``domain.verification.Challenge``) is written when it completes,
in the status projection's transaction, with its first message in the mail outbox. The
verdict (``EmailVerified`` or ``RegistrationExpired``) is the registration's second event:
the event store records one of them only, so a verification racing the expiry sweep is
decided there.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from application.rate_limits import RateLimiter, enforce
from application.status import RegistrationStatus
from domain.registration import expired, verified
from domain.statuses import EXPIRED, VERIFIED
from domain.verification import (
    NONCE_BYTES,
    AlreadyVerified,
    Challenge,
    RegistrationExpired,
    ResendRefused,
    TooManyVerificationAttempts,
    VerificationCodeExpired,
    VerificationCodeInvalid,
    VerificationPolicy,
    matches,
    normalise_offer,
)


def _now() -> datetime:
    return datetime.now(UTC)


def _nonce() -> bytes:
    return secrets.token_bytes(NONCE_BYTES)


class Challenges(Protocol):
    """Where challenges live (the read database, beside the status read model)."""

    async def find(self, registration_id: uuid.UUID) -> Challenge | None: ...

    async def count_wrong(self, registration_id: uuid.UUID, nonce: bytes, most: int) -> int | None:
        """One more wrong attempt at the code of ``nonce``, atomically; the attempts made
        now, or None when none was left (or the code changed meanwhile)."""
        ...

    async def verified(self, registration_id: uuid.UUID, at: datetime) -> None:
        """Mark it verified; the notices waiting for this holder to be verified may go."""
        ...

    async def renew(
        self, registration_id: uuid.UUID, nonce: bytes, now: datetime, policy: VerificationPolicy
    ) -> Challenge | None:
        """A new code (``nonce``) and its message in the outbox, in one transaction, unless
        the policy refuses it by then (too soon, every message spent, decided): None."""
        ...

    async def overdue(self, now: datetime, limit: int) -> Sequence[Challenge]:
        """Undecided challenges past their registration's deadline."""
        ...

    async def expired(self, registration_ids: Sequence[uuid.UUID], at: datetime) -> None: ...


class Verdicts(Protocol):
    """The event store, for a registration's second event."""

    async def record(self, event: Any) -> str | None:
        """Append the verdict; None when it was recorded, else the verdict recorded before
        (``verified`` or ``expired``)."""
        ...

    async def record_all(self, events: Sequence[Any]) -> Sequence[str | None]:
        """``record`` for each (in one append when it can), the answers in their order."""
        ...


class Statuses(Protocol):
    async def find(self, registration_id: uuid.UUID) -> RegistrationStatus | None: ...

    async def settle(self, registration_id: uuid.UUID, status: str) -> RegistrationStatus | None:
        """Write a verdict into the status read model and its cache at once (the status
        projection writes it too, when it gets to the event), so that nobody is told
        ``verified`` and then ``completed``; the status as it now reads."""
        ...

    async def settle_all(self, registration_ids: Sequence[uuid.UUID], status: str) -> None:
        """``settle`` for many at once."""
        ...


@dataclass(slots=True)
class VerifyEmail:
    challenges: Challenges
    verdicts: Verdicts
    statuses: Statuses
    key: bytes
    policy: VerificationPolicy = field(default_factory=VerificationPolicy)
    limiter: RateLimiter | None = None
    clock: Callable[[], datetime] = _now

    async def __call__(
        self, registration_id: str, offered: str, client: str = ""
    ) -> RegistrationStatus | None:
        """The registration's status once verified; None for an unknown or malformed id.
        Raises ``VerificationCodeInvalid`` (a wrong code: one attempt spent),
        ``TooManyVerificationAttempts``, ``VerificationCodeExpired``."""
        await enforce(self.limiter, [("client", client)])
        try:
            rid = uuid.UUID(registration_id)
        except ValueError:
            return None
        challenge = await self.challenges.find(rid)
        if challenge is None:
            return await self._without_challenge(rid)
        if challenge.verified_at is not None:
            # The link opened twice, a double click: the answer again, no second event.
            return await self._status(rid)
        now = self.clock()
        self.policy.check(challenge, now)
        offer = normalise_offer(offered)
        if offer is None:
            raise VerificationCodeInvalid(self.policy.max_attempts - challenge.attempts)
        if not matches(self.key, rid, challenge.nonce, offer):
            spent = await self.challenges.count_wrong(
                rid, challenge.nonce, self.policy.max_attempts
            )
            if spent is None:
                again = await self.challenges.find(rid)
                if again is not None and again.nonce != challenge.nonce:
                    # A new code was sent meanwhile: this was a wrong code for the old one.
                    raise VerificationCodeInvalid(self.policy.max_attempts - again.attempts)
                raise TooManyVerificationAttempts(self.policy.resend_wait(challenge, now))
            raise VerificationCodeInvalid(self.policy.max_attempts - spent)
        before = await self.verdicts.record(verified(rid, challenge.requested_at))
        if before == EXPIRED:
            raise VerificationCodeExpired(registration_expired=True)
        await self.challenges.verified(rid, now)
        return await self.statuses.settle(rid, VERIFIED) or await self._status(rid)

    async def _without_challenge(self, rid: uuid.UUID) -> RegistrationStatus | None:
        status = await self.statuses.find(rid)
        if status is None:
            return None
        if status.status == EXPIRED:
            raise VerificationCodeExpired(registration_expired=True)
        # Pending (no code sent yet), failed, or from before verification existed: no code
        # is this registration's.
        raise VerificationCodeInvalid(0)

    async def _status(self, rid: uuid.UUID) -> RegistrationStatus | None:
        return await self.statuses.find(rid)


@dataclass(slots=True)
class ResendVerification:
    challenges: Challenges
    statuses: Statuses
    policy: VerificationPolicy = field(default_factory=VerificationPolicy)
    limiter: RateLimiter | None = None
    clock: Callable[[], datetime] = _now
    new_nonce: Callable[[], bytes] = _nonce

    async def __call__(self, registration_id: str, client: str = "") -> uuid.UUID | None:
        """Queue a new code; the registration id, or None for an unknown or malformed id.
        Raises ``ResendRefused`` (too soon, or every message spent), ``AlreadyVerified``,
        ``RegistrationExpired``. A registration still pending gets its first message when
        it completes: nothing is queued now."""
        await enforce(self.limiter, [("client", client)])
        try:
            rid = uuid.UUID(registration_id)
        except ValueError:
            return None
        challenge = await self.challenges.find(rid)
        if challenge is None:
            status = await self.statuses.find(rid)
            if status is None:
                return None
            if status.status == EXPIRED:
                raise RegistrationExpired()
            return rid
        now = self.clock()
        self._check(challenge, now)
        renewed = await self.challenges.renew(rid, self.new_nonce(), now, self.policy)
        if renewed is None:
            # Someone else's resend (or the verdict) got there first: say why, as it is now.
            again = await self.challenges.find(rid)
            if again is not None:
                self._check(again, now)
                raise ResendRefused(self.policy.resend_wait(again, now))
            return None
        return rid

    def _check(self, challenge: Challenge, now: datetime) -> None:
        if challenge.verified_at is not None:
            raise AlreadyVerified()
        if challenge.expired_at is not None or self.policy.overdue(challenge, now):
            raise RegistrationExpired()
        if not self.policy.may_resend(challenge, now):
            raise ResendRefused(self.policy.resend_wait(challenge, now))


class Shredder(Protocol):
    """What erasure also uses (``application.erasure.Subjects``), for many at once: the
    keys, the values."""

    async def shred_all(self, registration_ids: Sequence[uuid.UUID]) -> int: ...

    async def release_all(self, registration_ids: Sequence[uuid.UUID]) -> Mapping[uuid.UUID, int]:
        """How many values each held (those that held none may be left out)."""
        ...


class PersonalCopies(Protocol):
    async def drop(self, registration_ids: Sequence[uuid.UUID]) -> Sequence[str]:
        """Remove the registrations from the read models that hold personal data (and keep
        them out of them), and their unsent mail; the places any was in."""
        ...


@dataclass(frozen=True, slots=True)
class Expiry:
    registration_id: uuid.UUID
    recorded: bool  # False when it was verified in time after all
    released: int


@dataclass(slots=True)
class ExpireRegistrations:
    """The sweep: a registration not verified by its deadline expires. Its verdict first
    (a verification racing it is decided by the event store), then, as an erasure does: the
    key shredded, its copies removed, its values released (a new signup with the same email
    must not reach the email lookup before the old row has left it), and only then its status
    ``expired``, which tells the person those values are free. Run again after an
    interruption, it finishes what was begun.

    A sweep's registrations go through those steps together, each step for all of them
    before the next: every registration still takes them in that order, and each step is
    one statement a table for all of them (the verdicts' append, the shreds, the copies,
    the releases, the statuses, the challenges' marks) instead of a transaction a
    registration, which was most of what an expiry cost."""

    challenges: Challenges
    verdicts: Verdicts
    subjects: Shredder
    copies: PersonalCopies
    statuses: Statuses
    policy: VerificationPolicy = field(default_factory=VerificationPolicy)
    clock: Callable[[], datetime] = _now

    async def sweep(self, limit: int = 100) -> list[Expiry]:
        now = self.clock()
        return await self.expire(await self.challenges.overdue(now, limit), now)

    async def expire(self, challenges: Sequence[Challenge], now: datetime) -> list[Expiry]:
        if not challenges:
            return []
        befores = await self.verdicts.record_all(
            [expired(c.registration_id, c.requested_at) for c in challenges]
        )
        verified: list[uuid.UUID] = []
        expiring: list[uuid.UUID] = []
        for challenge, before in zip(challenges, befores, strict=True):
            # Verified just in time (its verifier stopped before marking it): so be it.
            (verified if before == VERIFIED else expiring).append(challenge.registration_id)
        for rid in verified:
            await self.challenges.verified(rid, now)
            await self.statuses.settle(rid, VERIFIED)
        released: Mapping[uuid.UUID, int] = {}
        if expiring:
            await self.subjects.shred_all(expiring)
            await self.copies.drop(expiring)
            released = await self.subjects.release_all(expiring)
            # Only now ``expired``: the status promises their emails and CPFs/CNPJs are free
            # again, and a person who reads it and signs up at once must not be told 409.
            await self.statuses.settle_all(expiring, EXPIRED)
            await self.challenges.expired(expiring, now)
        expiring_ids = set(expiring)
        return [
            Expiry(rid, rid in expiring_ids, released.get(rid, 0))
            for rid in (challenge.registration_id for challenge in challenges)
        ]
