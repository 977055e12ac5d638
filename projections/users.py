"""The users read model, split over shards: one row per user, in exactly one shard."""

from __future__ import annotations

from collections.abc import Sequence

from projections.model import REGISTRATION_REQUESTED, Projection, RequestedRegistration, Row
from projections.shards import ShardMap


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

    return Projection(f"users_shard{physical_index}", 1, [REGISTRATION_REQUESTED], reduce)
