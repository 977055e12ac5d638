"""The registration status read model: what GET /registrations/{id} answers.

Its projector runs behind the others: it handles an event only once every other projection
has handled it, so ``completed`` means the user is in its shard and in the email lookup.
"""

from __future__ import annotations

from collections.abc import Sequence

from domain.registration import UserRegistrationRequested
from projections.model import REGISTRATION_REQUESTED, Projection, Row
from projections.shards import user_id_for

PENDING = "pending"
COMPLETED = "completed"
FAILED = "failed"
# What a failed registration tells its client: what happened, never the internals.
FAILED_REASON = "The registration could not be completed; an operator has been notified."


def registration_status() -> Projection:
    def reduce(event: UserRegistrationRequested) -> Sequence[Row]:
        return [
            {
                "registration_id": event.originator_id,
                "status": COMPLETED,
                "user_id": user_id_for(event.originator_id),
                "reason": None,
                "requested_at": event.timestamp,
            }
        ]

    return Projection("registration_status", 1, [REGISTRATION_REQUESTED], reduce)
