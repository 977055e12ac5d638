"""Rate limits: per client address and per person (email, CPF), shared by every API process."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol


class RateLimited(Exception):
    def __init__(self, limit: str, retry_after: int) -> None:
        super().__init__(f"rate limit {limit} exceeded; retry after {retry_after}s")
        self.limit = limit
        self.retry_after = retry_after


@dataclass(frozen=True, slots=True)
class Refused:
    """Which limit refused a request, and in how many seconds it may try again."""

    limit: str
    retry_after: int


class RateLimiter(Protocol):
    async def hit(self, limits: Sequence[tuple[str, str]]) -> Refused | None:
        """Count one request against each ``(limit, key)``, in order, and say which refused.

        The first limit gates the rest: when it refuses, the others are not counted (a client
        over its limit spends no one's per-email allowance). Otherwise every one is counted,
        and the first to refuse is named. A limit without a rate, or an empty key, is free.
        """


async def enforce(limiter: RateLimiter | None, limits: Sequence[tuple[str, str]]) -> None:
    """Count the request against ``limits`` (see ``RateLimiter.hit``); raise ``RateLimited``
    naming the first that refused. No limiter, no limits."""
    if limiter is not None:
        refused = await limiter.hit(limits)
        if refused is not None:
            raise RateLimited(refused.limit, refused.retry_after)
