"""The email lookup read model: normalised email → registration and shard."""

from __future__ import annotations

from collections.abc import Sequence

from domain.registration import UserRegistrationRequested
from projections.model import REGISTRATION_REQUESTED, Projection, Row
from projections.shards import logical_shard, user_id_for


def email_lookup(logical_shards: int) -> Projection:
    def reduce(event: UserRegistrationRequested) -> Sequence[Row]:
        user_id = user_id_for(event.originator_id)
        return [
            {
                "email": event.email,
                "registration_id": event.originator_id,
                "shard": logical_shard(user_id, logical_shards),
                "registered_at": event.timestamp,
            }
        ]

    return Projection("email_lookup", 1, [REGISTRATION_REQUESTED], reduce)
