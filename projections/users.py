"""The users read model, split over shards: one row per user, in exactly one shard."""

from __future__ import annotations

from collections.abc import Sequence

from domain.registration import UserRegistrationRequested
from projections.model import REGISTRATION_REQUESTED, Projection, Row
from projections.shards import ShardMap


def users(shard_map: ShardMap, physical_index: int) -> Projection:
    """The projection for one physical shard: it keeps only the users that live there."""

    def reduce(event: UserRegistrationRequested) -> Sequence[Row]:
        user_id, logical, physical = shard_map.locate(event.originator_id)
        if physical != physical_index:
            return []
        return [
            {
                "user_id": user_id,
                "registration_id": event.originator_id,
                "logical_shard": logical,
                "person_type": event.person_type,
                "cpf": event.cpf,
                "cnpj": event.cnpj,
                "name": event.name,
                "mobile_phone": event.mobile_phone,
                "phone": event.phone,
                "email": event.email,
                "address": event.address,
                "created_at": event.timestamp,
            }
        ]

    return Projection(f"users_shard{physical_index}", 1, [REGISTRATION_REQUESTED], reduce)
