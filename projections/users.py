"""The users read model, split over shards: one row per user, in exactly one shard."""

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
from projections.shards import ShardMap

# One name in every shard's database: a query asks the shard, not the table, for a user.
VIEW = "users"

LAYOUT = Layout(
    VIEW,
    (
        Column("user_id", "uuid", primary_key=True),
        Column("registration_id", "uuid", unique=True),
        Column("logical_shard", "integer", index=True),
        Column("person_type", "string", length=2),
        Column("cpf", "string", length=11),
        Column("cnpj", "string", length=14, nullable=True),
        Column("name", "text"),
        Column("mobile_phone", "string", length=20),
        Column("phone", "string", length=20, nullable=True),
        Column("email", "text"),
        Column("address", "json"),
        Column("created_at", "timestamp"),
    ),
)


def users(shard_map: ShardMap, physical_index: int) -> Projection:
    """The projection for one physical shard: it keeps only the users that live there."""

    def reduce(registration: RequestedRegistration) -> Sequence[Row]:
        person = registration.details
        user_id, logical, physical = shard_map.locate(registration.registration_id)
        if person is None or physical != physical_index:
            return []
        return [
            {
                "user_id": user_id,
                "registration_id": registration.registration_id,
                "logical_shard": logical,
                "person_type": person.person_type,
                "cpf": person.cpf,
                "cnpj": person.cnpj,
                "name": person.name,
                "mobile_phone": person.mobile_phone,
                "phone": person.phone,
                "email": person.email,
                "address": person.address.to_dict(),
                "created_at": registration.requested_at,
            }
        ]

    return Projection(f"users_shard{physical_index}", 1, [REGISTRATION_REQUESTED], reduce, LAYOUT)
