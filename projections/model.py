"""What a projection is: a name, a version, the event topics it reads, a pure reducer, and the
layout of the table its rows go into."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

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


# What a column holds, named without a database library (infrastructure/read_side/read_store.py maps
# each to PostgreSQL's type): ``string`` is text of at most ``length`` characters.
Kind = Literal["uuid", "text", "string", "integer", "timestamp", "json"]


@dataclass(frozen=True, slots=True)
class Column:
    name: str
    kind: Kind
    length: int | None = None
    nullable: bool = False
    primary_key: bool = False
    unique: bool = False
    index: bool = False
    # When the row was written: filled by the database, not the reducer (a replay writes
    # the rows again, at another time), and again whenever the row is replaced or changed.
    written_at: bool = False


@dataclass(frozen=True, slots=True)
class Replacement:
    """A row whose key is in the table already replaces the one there, in ``columns``, when
    its ``column`` holds one of ``values``; any other such row is dropped."""

    column: str
    values: tuple[str, ...]
    columns: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Layout:
    """A read model's table: what queries call it, its columns, and how rows are written.

    Every table has a ``registration_id`` column: an erased registration's rows are found by
    it. ``personal``: it holds personal data, so an expired registration's rows are deleted
    and kept out, as an erased one's are (the status read model keeps it, as ``expired``).
    Rows are written once (a replay writes nothing twice) unless ``replaced_by`` says when a
    row replaces the one there.
    """

    view: str
    columns: tuple[Column, ...]
    personal: bool = True
    replaced_by: Replacement | None = None


@dataclass(frozen=True, slots=True)
class Projection:
    """A read model's declaration.

    ``reduce`` turns one registration into the rows it contributes (none when it is not for
    this read model, or erased); it does no I/O, so a replay gives the same rows. ``layout``
    is the table they go into.
    """

    name: str
    version: int
    topics: Sequence[str]
    reduce: Callable[[RequestedRegistration], Sequence[Row]]
    layout: Layout

    @property
    def table_version(self) -> str:
        return f"{self.name}_v{self.version}"
