"""The email lookup read model: normalised email → registration and shard."""

from __future__ import annotations

from collections.abc import Sequence

from projections.model import (
    REGISTRATION_REQUESTED,
    Column,
    Layout,
    Projection,
    RequestedRegistration,
    Row,
)
from projections.shards import logical_shard, user_id_for

# What the command side's fast path reads (infrastructure/read_side/email_index.py).
VIEW = "email_lookup"

LAYOUT = Layout(
    VIEW,
    (
        Column("email", "text", primary_key=True),
        # Erasure and expiry delete a registration's row by it: without an index each read
        # the whole table, a row for everyone who ever signed up.
        Column("registration_id", "uuid", index=True),
        Column("shard", "integer"),
        Column("registered_at", "timestamp"),
    ),
)


def email_lookup(logical_shards: int) -> Projection:
    def reduce(registration: RequestedRegistration) -> Sequence[Row]:
        if registration.details is None:
            return []
        user_id = user_id_for(registration.registration_id)
        return [
            {
                "email": registration.details.email,
                "registration_id": registration.registration_id,
                "shard": logical_shard(user_id, logical_shards),
                "registered_at": registration.requested_at,
            }
        ]

    return Projection("email_lookup", 1, [REGISTRATION_REQUESTED], reduce, LAYOUT)
