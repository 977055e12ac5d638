"""Rate limits: per client address and per person (email, CPF), shared by every API process."""

from __future__ import annotations

from typing import Protocol


class RateLimited(Exception):
    def __init__(self, limit: str, retry_after: int) -> None:
        super().__init__(f"rate limit {limit} exceeded; retry after {retry_after}s")
        self.limit = limit
        self.retry_after = retry_after


class RateLimiter(Protocol):
    async def hit(self, limit: str, key: str) -> int | None:
        """Count one request against ``limit`` for ``key``; seconds to wait when over it."""
