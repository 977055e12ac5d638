"""Use case: tell a client where its registration stands."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from application.rate_limits import RateLimiter, enforce


@dataclass(frozen=True, slots=True)
class RegistrationStatus:
    registration_id: uuid.UUID
    status: str  # pending | completed | failed | verified | expired
    requested_at: datetime
    updated_at: datetime
    user_id: uuid.UUID | None = None
    reason: str | None = None


class StatusQueries(Protocol):
    async def find(self, registration_id: uuid.UUID) -> RegistrationStatus | None: ...


class PendingStatuses(Protocol):
    """Where a registration just recorded is noted as pending, so that status queries answer
    it without the databases until the projections have it (a pending poll was two round
    trips, to the cache and to the event store, and a person polls a few times a signup).

    Best effort: ``note`` never waits, and a note lost only sends those polls to the
    databases, as before. Whoever writes the registration's status row afterwards (the
    status projection, the process manager) settles the note, so it never hides that row."""

    def note(self, status: RegistrationStatus) -> None: ...


# The limit on status queries per client address (its rate: a setting).
STATUS_CLIENT_LIMIT = "status_client"


@dataclass(slots=True)
class GetRegistrationStatus:
    queries: StatusQueries
    # Counted first, before any lookup: a flood of random ids is refused without reaching a
    # database (each miss costs a cache lookup and two queries).
    limiter: RateLimiter | None = None

    async def __call__(self, registration_id: str, client: str = "") -> RegistrationStatus | None:
        """None for an unknown id and for anything that is not a UUID; raises ``RateLimited``
        when the client asks too often."""
        await enforce(self.limiter, [(STATUS_CLIENT_LIMIT, client)])
        try:
            parsed = uuid.UUID(registration_id)
        except ValueError:
            return None
        return await self.queries.find(parsed)
