"""Email verification: the codes a person proves their address with, and the rules they obey.

A registration's message carries a short code (typed by hand, perhaps on another device) and a
link holding a longer token. Neither is stored anywhere: both are HMACs of the registration
id and a random nonce under a key of the service's (``verification_key``), so the database
holds the nonce alone, which opens nothing without the key, and a message written again after
a crash carries the same code as the first. A new code (a resend) is a new nonce: the old
code stops working. Offered codes are compared in constant time.

Pure: no I/O, no clock (the caller says what time it is).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from domain.errors import DomainError

CODE_DIGITS = 6
NONCE_BYTES = 16
# Characters an offered value may have and still be worth an attempt: a code with the
# spaces or hyphen a person may type, or the link's token (43 characters of base64url).
_LONGEST_OFFER = 64
_TOKEN = re.compile(r"[A-Za-z0-9_-]{43}")


def verification_key(reservation_key: bytes) -> bytes:
    """The codes' key, derived from the reservation key (one secret fewer to keep), under a
    label of its own so that no code is ever a claim id or the reverse."""
    return hmac.new(reservation_key, b"signup email verification v1", hashlib.sha256).digest()


def _mac(key: bytes, purpose: bytes, registration_id: uuid.UUID, nonce: bytes) -> bytes:
    return hmac.new(key, purpose + registration_id.bytes + nonce, hashlib.sha256).digest()


def code_for(key: bytes, registration_id: uuid.UUID, nonce: bytes) -> str:
    """The short code: six digits (the 64-bit prefix's remainder has a bias under 10^-13)."""
    number = int.from_bytes(_mac(key, b"code", registration_id, nonce)[:8], "big")
    return f"{number % 10**CODE_DIGITS:0{CODE_DIGITS}d}"


def token_for(key: bytes, registration_id: uuid.UUID, nonce: bytes) -> str:
    """The link's token: 256 bits, base64url without padding (43 characters)."""
    digest = _mac(key, b"link", registration_id, nonce)
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def normalise_offer(offered: str) -> str | None:
    """What a person typed, as it is compared: blanks and hyphens dropped; None when it
    cannot be a code or a token at all (it costs no attempt: a typo is not a guess)."""
    if len(offered) > _LONGEST_OFFER:
        return None
    stripped = offered.strip()
    compact = "".join(stripped.split()).replace("-", "")
    if len(compact) == CODE_DIGITS and compact.isascii() and compact.isdigit():
        return compact
    if _TOKEN.fullmatch(stripped):
        return stripped
    return None


def matches(key: bytes, registration_id: uuid.UUID, nonce: bytes, offered: str) -> bool:
    """Whether ``offered`` (normalised) is this nonce's code or token; both are compared, in
    constant time, whichever was offered."""
    code = hmac.compare_digest(offered.encode(), code_for(key, registration_id, nonce).encode())
    token = hmac.compare_digest(offered.encode(), token_for(key, registration_id, nonce).encode())
    return code | token


@dataclass(frozen=True, slots=True)
class Challenge:
    """A registration's verification, as stored: no code, only what decides about one."""

    registration_id: uuid.UUID
    nonce: bytes
    requested_at: datetime
    code_expires_at: datetime  # this code's end; a resend makes a new one
    expires_at: datetime  # the registration's end: requested_at + the verification TTL
    attempts: int  # wrong codes offered since this code was sent
    sends: int  # messages queued, the first included
    last_sent_at: datetime
    verified_at: datetime | None = None
    expired_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class VerificationPolicy:
    """``ttl``: how long a registration may wait for its verification, from its request (a
    squatter holds a value at most this long). ``code_ttl``: how long one code works.
    ``max_attempts`` wrong codes per code, ``max_sends`` messages per registration (so at
    most ``max_attempts * max_sends`` guesses, each 1 in 10^6), ``resend_every`` between
    two messages."""

    ttl: timedelta = timedelta(hours=48)
    code_ttl: timedelta = timedelta(hours=24)
    max_attempts: int = 5
    max_sends: int = 5
    resend_every: timedelta = timedelta(seconds=60)

    def deadline(self, requested_at: datetime) -> datetime:
        return requested_at + self.ttl

    def code_expiry(self, now: datetime, requested_at: datetime) -> datetime:
        """A new code's end: never after the registration's own."""
        return min(now + self.code_ttl, self.deadline(requested_at))

    def overdue(self, challenge: Challenge, now: datetime) -> bool:
        return challenge.verified_at is None and now >= challenge.expires_at

    def check(self, challenge: Challenge, now: datetime) -> None:
        """Raise what stops this challenge from taking a code now, if anything."""
        if challenge.expired_at is not None or self.overdue(challenge, now):
            raise VerificationCodeExpired(registration_expired=True)
        if challenge.attempts >= self.max_attempts:
            raise TooManyVerificationAttempts(self.resend_wait(challenge, now))
        if now >= challenge.code_expires_at:
            raise VerificationCodeExpired(registration_expired=False)

    def resend_wait(self, challenge: Challenge, now: datetime) -> int:
        """Seconds until a new code may be asked for (at least 1); until the registration's
        end once every message is spent."""
        if challenge.sends >= self.max_sends:
            until = challenge.expires_at
        else:
            until = challenge.last_sent_at + self.resend_every
        return max(1, int((until - now).total_seconds() + 0.999))

    def may_resend(self, challenge: Challenge, now: datetime) -> bool:
        return challenge.sends < self.max_sends and now >= challenge.last_sent_at + (
            self.resend_every
        )


class VerificationCodeInvalid(DomainError):
    """A wrong code. ``attempts_left``: how many more this code may take."""

    code = "verification_code_invalid"

    def __init__(self, attempts_left: int) -> None:
        super().__init__("The code is not this registration's.")
        self.attempts_left = attempts_left


class VerificationCodeExpired(DomainError):
    """The code expired (ask for a new one), or the registration itself did."""

    code = "verification_code_expired"

    def __init__(self, *, registration_expired: bool) -> None:
        super().__init__("The code has expired.")
        self.registration_expired = registration_expired


class TooManyVerificationAttempts(DomainError):
    """Every attempt of this code is spent: a new one (a resend) brings new attempts."""

    code = "verification_attempts_exceeded"

    def __init__(self, retry_after: int) -> None:
        super().__init__("Too many wrong codes.")
        self.retry_after = retry_after


class ResendRefused(DomainError):
    """A new code was asked for too soon, or every message was spent."""

    code = "verification_resend_limited"

    def __init__(self, retry_after: int) -> None:
        super().__init__("A new code cannot be sent yet.")
        self.retry_after = retry_after


class AlreadyVerified(DomainError):
    code = "registration_already_verified"

    def __init__(self) -> None:
        super().__init__("This registration's email is already verified.")


class RegistrationExpired(DomainError):
    code = "registration_expired"

    def __init__(self) -> None:
        super().__init__("This registration expired before its email was verified.")
