"""How the process manager retries a projection that failed on an event."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential backoff: ``base``, ``2·base``, ``4·base``… capped at ``cap``; after
    ``max_attempts`` failed attempts the event becomes a dead letter."""

    max_attempts: int = 5
    base: timedelta = timedelta(seconds=1)
    cap: timedelta = timedelta(minutes=5)

    def delay_after(self, attempts: int) -> timedelta:
        delay: timedelta = self.base * (2 ** max(0, attempts - 1))
        return min(self.cap, delay)

    def gives_up(self, attempts: int) -> bool:
        return attempts >= self.max_attempts
