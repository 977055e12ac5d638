"""Rate limits in Redis with the ``limits`` library: atomic, so they hold across any number of
API processes (Litestar's own limiter keeps its lock inside one process)."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import structlog
from limits import RateLimitItem, parse
from limits.aio.storage import RedisStorage
from limits.aio.strategies import SlidingWindowCounterRateLimiter

from infrastructure import metrics

log = structlog.get_logger(__name__)


def storage_uri(redis_url: str) -> str:
    scheme, _, rest = redis_url.partition("://")
    return f"async+{scheme}://{rest}"


@dataclass
class RedisRateLimiter:
    """``limits`` maps a limit name ("client", "email", "cpf") to its rate ("600/minute");
    a name without a rate is not limited."""

    redis_url: str
    limits: dict[str, str]
    _items: dict[str, RateLimitItem] = field(init=False)
    _limiter: SlidingWindowCounterRateLimiter = field(init=False)

    def __post_init__(self) -> None:
        self._items = {name: parse(rate) for name, rate in self.limits.items() if rate}
        storage = RedisStorage(
            storage_uri(self.redis_url), implementation="redispy", key_prefix="signup:limits"
        )
        self._limiter = SlidingWindowCounterRateLimiter(storage)

    async def hit(self, limit: str, key: str) -> int | None:
        item = self._items.get(limit)
        if item is None:
            return None
        try:
            if await self._limiter.hit(item, limit, key):
                return None
            stats = await self._limiter.get_window_stats(item, limit, key)
        except Exception as error:
            # Fail open: a signup must not be refused because the limiter's Redis is down;
            # uniqueness lives in the event store, so nothing is duplicated meanwhile.
            log.warning("rate_limiter_unavailable", error=repr(error))
            return None
        metrics.RATE_LIMITED.labels(limit).inc()
        return max(1, math.ceil(stats.reset_time - time.time()))
