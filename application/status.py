"""Use case: tell a client where its registration stands."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol


@dataclass(frozen=True, slots=True)
class RegistrationStatus:
    registration_id: uuid.UUID
    status: str  # pending | completed | failed
    requested_at: datetime
    updated_at: datetime
    user_id: uuid.UUID | None = None
    reason: str | None = None


class StatusQueries(Protocol):
    async def find(self, registration_id: uuid.UUID) -> RegistrationStatus | None: ...


@dataclass(slots=True)
class GetRegistrationStatus:
    queries: StatusQueries

    async def __call__(self, registration_id: str) -> RegistrationStatus | None:
        """None for an unknown id and for anything that is not a UUID."""
        try:
            parsed = uuid.UUID(registration_id)
        except ValueError:
            return None
        return await self.queries.find(parsed)
