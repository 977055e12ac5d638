"""The registration status read model: what GET /registrations/{id} answers, and every rule
for which status a registration has.

Its projector runs behind the others: it handles an event only once every other projection
has handled it, so ``completed`` means the user is in its shard and in the email lookup.
A row is written from the events (``registration_status``'s reducer, adjusted by
``given_failures`` for the other projections' failures); after that it changes only as the
``Change``s below say: a dead letter fails it, a successful retry completes it, and the email
verification's verdict settles it.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from domain.statuses import COMPLETED, EXPIRED, FAILED, PENDING, VERIFIED
from projections.model import (
    EMAIL_VERIFIED,
    REGISTRATION_EXPIRED,
    REGISTRATION_REQUESTED,
    SIGNUP_ATTEMPTED,
    Column,
    Layout,
    Projection,
    Replacement,
    RequestedRegistration,
    Row,
)
from projections.shards import user_id_for

# What a failed registration tells its client: what happened, never the internals.
FAILED_REASON = "The registration could not be completed; an operator has been notified."

# What status queries read (infrastructure/read_side/status_queries.py), and what a registration's
# later changes (below) are written to.
VIEW = "registration_status"

LAYOUT = Layout(
    VIEW,
    (
        Column("registration_id", "uuid", primary_key=True),
        Column("status", "string", length=10),
        Column("user_id", "uuid", nullable=True),
        Column("reason", "text", nullable=True),
        Column("requested_at", "timestamp"),
        Column("updated_at", "timestamp", written_at=True),
    ),
    # No personal data: an expired registration stays, as ``expired``.
    personal=False,
    # A verdict (verified, expired) replaces the row its registration completed with (a
    # verdict row's reason is None); any other row is written once, as everywhere else.
    replaced_by=Replacement("status", (VERIFIED, EXPIRED), ("status", "user_id", "reason")),
)


def registration_status() -> Projection:
    def reduce(registration: RequestedRegistration) -> Sequence[Row]:
        if registration.outcome is not None:
            # An expired registration's user is gone with its personal data.
            user_id = (
                user_id_for(registration.registration_id)
                if registration.outcome == VERIFIED
                else None
            )
            return [
                {
                    "registration_id": registration.registration_id,
                    "status": registration.outcome,
                    "user_id": user_id,
                    "reason": None,
                    "requested_at": registration.requested_at,
                }
            ]
        if registration.details is None and not registration.attempt:
            return []  # erased: as if it had never been
        return [
            {
                "registration_id": registration.registration_id,
                "status": COMPLETED,
                "user_id": user_id_for(registration.registration_id),
                "reason": None,
                "requested_at": registration.requested_at,
            }
        ]

    # A duplicate attempt completes as a registration does: the same row, the same timing.
    topics = [REGISTRATION_REQUESTED, SIGNUP_ATTEMPTED, EMAIL_VERIFIED, REGISTRATION_EXPIRED]
    return Projection("registration_status", 1, topics, reduce, LAYOUT)


def given_failures(row: Row, *, dead_lettered: bool, waiting: bool) -> Row:
    """A reduced status row, as the registration's failures in the other projections make it:
    failed once any of its events is a dead letter (no user, and the reason its client is
    told), pending while one still waits for a retry (no user yet), else as reduced. A
    verdict is final: no failure of another projection changes it."""
    if row["status"] in (VERIFIED, EXPIRED):
        return row
    if dead_lettered:
        return {**row, "status": FAILED, "user_id": None, "reason": FAILED_REASON}
    if waiting:
        return {**row, "status": PENDING, "user_id": None}
    return row


@dataclass(frozen=True, slots=True)
class Change:
    """A change to a status row already written: a row in one of ``from_statuses`` takes
    ``values``; a row in any other status stays as it is.

    Infrastructure runs it as one conditional UPDATE (infrastructure/read_side/status_changes.py),
    so the status is read and changed in one step whoever else writes the row meanwhile.
    """

    from_statuses: tuple[str, ...]
    values: Mapping[str, Any]

    def apply(self, row: Row) -> Row | None:
        """The row as this change leaves it; None where it does not apply."""
        if row["status"] not in self.from_statuses:
            return None
        return {**row, **self.values}


# An event of the registration dead-lettered by another projection: a pending or completed
# registration fails, with the reason its client is told (its user id as it was); a failed
# one stays failed, and a verdict is final.
DEAD_LETTERED = Change((PENDING, COMPLETED), {"status": FAILED, "reason": FAILED_REASON})


def retried(registration_id: uuid.UUID) -> Change:
    """The registration's last open failure projected at last, on a retry: a pending or failed
    registration completes, with its user; a verdict is final."""
    return Change(
        (PENDING, FAILED),
        {"status": COMPLETED, "reason": None, "user_id": user_id_for(registration_id)},
    )


def settled(verdict: str) -> Change:
    """The email verification's verdict (``verified`` or ``expired``) on a completed
    registration, or the same verdict told again (so that it is found again); an expired
    registration's user is gone with its personal data. A registration that is not completed
    has no verification to settle, and the other verdict, once given, is final."""
    values: dict[str, Any] = {"status": verdict}
    if verdict == EXPIRED:
        values["user_id"] = None
    return Change((COMPLETED, verdict), values)
