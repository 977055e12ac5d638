"""GetRegistrationStatus on in-memory fakes: the limit is counted before any lookup."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime

import pytest

from application.rate_limits import RateLimited, Refused
from application.status import STATUS_CLIENT_LIMIT, GetRegistrationStatus, RegistrationStatus


class Registrations:
    """The status queries' port, over a dict; counts the lookups that reached it."""

    def __init__(self, *known: uuid.UUID) -> None:
        now = datetime.now(UTC)
        self.known = {rid: RegistrationStatus(rid, "pending", now, now) for rid in known}
        self.lookups = 0

    async def find(self, registration_id: uuid.UUID) -> RegistrationStatus | None:
        self.lookups += 1
        return self.known.get(registration_id)


class Allowance:
    """A rate limiter that lets ``allowed`` hits through per key, then refuses."""

    def __init__(self, allowed: int) -> None:
        self.allowed = allowed
        self.hits: list[tuple[str, str]] = []

    async def hit(self, limits: Sequence[tuple[str, str]]) -> Refused | None:
        self.hits.extend(limits)
        for name, key in limits:
            if self.hits.count((name, key)) > self.allowed:
                return Refused(name, 7)
        return None


async def test_a_client_over_its_status_limit_is_refused_before_any_lookup() -> None:
    registrations = Registrations()
    get_status = GetRegistrationStatus(registrations, Allowance(allowed=2))

    for _ in range(2):
        assert await get_status(str(uuid.uuid4()), "203.0.113.9") is None
    with pytest.raises(RateLimited) as refused:
        await get_status(str(uuid.uuid4()), "203.0.113.9")

    assert (refused.value.limit, refused.value.retry_after) == (STATUS_CLIENT_LIMIT, 7)
    assert registrations.lookups == 2


async def test_each_client_has_its_own_status_allowance() -> None:
    known = uuid.uuid4()
    get_status = GetRegistrationStatus(Registrations(known), Allowance(allowed=1))

    await get_status(str(known), "203.0.113.9")
    found = await get_status(str(known), "198.51.100.7")

    assert found is not None and found.registration_id == known


async def test_a_malformed_id_is_counted_too_and_never_looked_up() -> None:
    registrations = Registrations()
    limiter = Allowance(allowed=10)

    assert await GetRegistrationStatus(registrations, limiter)("not-an-id", "203.0.113.9") is None

    assert limiter.hits == [(STATUS_CLIENT_LIMIT, "203.0.113.9")]
    assert registrations.lookups == 0
