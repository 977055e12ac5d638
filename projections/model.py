"""What a projection is: a name, a version, the event topics it reads, and a pure reducer."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from eventsourcing.utils import get_topic

from domain.form import RegistrationDetails
from domain.registration import (
    EmailVerified,
    RegistrationExpired,
    SignupAttempted,
    UserRegistrationRequested,
)

Row = Mapping[str, Any]

REGISTRATION_REQUESTED = get_topic(UserRegistrationRequested)
SIGNUP_ATTEMPTED = get_topic(SignupAttempted)
EMAIL_VERIFIED = get_topic(EmailVerified)
REGISTRATION_EXPIRED = get_topic(RegistrationExpired)


@dataclass(frozen=True, slots=True)
class RequestedRegistration:
    """What a reducer sees of a ``UserRegistrationRequested`` event: the person's details,
    opened with their key, or ``None`` once they have been erased (their key is shredded).

    A ``SignupAttempted`` event (the enumeration-resistant mode's duplicate, answered as a new
    registration) is seen as one with ``attempt`` set and no details: only the status
    projection reads that topic.

    A registration's verdict (``EmailVerified``, ``RegistrationExpired``) is seen with its
    ``outcome`` set (``verified`` or ``expired``), the request's time and no details.
    """

    registration_id: uuid.UUID
    requested_at: datetime
    details: RegistrationDetails | None
    attempt: bool = False
    outcome: str | None = None


@dataclass(frozen=True, slots=True)
class Projection:
    """A read model's declaration.

    ``reduce`` turns one registration into the rows it contributes (none when it is not for
    this read model, or erased); it does no I/O, so a replay gives the same rows.
    """

    name: str
    version: int
    topics: Sequence[str]
    reduce: Callable[[RequestedRegistration], Sequence[Row]]

    @property
    def table_version(self) -> str:
        return f"{self.name}_v{self.version}"
