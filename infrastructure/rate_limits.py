"""Rate limits in Redis with the ``limits`` library's sliding-window counters: atomic, so they
hold across any number of API processes (Litestar's own limiter keeps its lock inside one).

Three limits a signup, each a round trip through redis-py, were a fifth of the API's time.
So the requests that arrive in one event-loop turn are counted together: one script call runs
the library's own ``acquire_sliding_window`` Lua for every one of them, on the library's own
keys, and for a refused one its ``sliding_window`` Lua, from which the wait is worked out as
the library's ``get_window_stats`` does (a test holds the two to agreeing).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog
from limits import RateLimitItem, parse
from limits.aio.storage import RedisStorage
from redis.asyncio import Redis
from redis.commands.core import AsyncScript

from application.rate_limits import Refused
from infrastructure import metrics

log = structlog.get_logger(__name__)

KEY_PREFIX = "signup:limits"

# The library's scripts, verbatim, as functions of their keys and arguments, called for each
# request of the turn in order. A request's first limit gates the rest: once it is refused
# nothing else of that request is counted (the per-client limit comes first, so a flood does
# not spend a victim's per-email allowance). The answer per request: {0} when every limit
# took the hit, otherwise {position of the first that refused, its window}.
_BATCH = """
local function acquire(KEYS, ARGV)
{acquire}
end
local function window(KEYS, ARGV)
{window}
end
local answers = {{}}
local k, a = 1, 2
for request = 1, tonumber(ARGV[1]) do
  local count = tonumber(ARGV[a]); a = a + 1
  local answer = {{0}}
  for position = 1, count do
    if answer[1] ~= 1 then
      local keys = {{KEYS[k], KEYS[k + 1]}}
      if not acquire(keys, {{ARGV[a], ARGV[a + 1], 1}}) and answer[1] == 0 then
        answer = {{position, window(keys, {{ARGV[a + 1]}})}}
      end
    end
    k, a = k + 2, a + 2
  end
  answers[request] = answer
end
return answers
"""

# Requests counted by one script call: it blocks Redis while it runs (a few microseconds
# a limit), so a huge turn is split.
_MOST_PER_CALL = 256


@dataclass(slots=True)
class _Ask:
    limits: list[tuple[str, str, RateLimitItem]]
    answer: asyncio.Future[Refused | None]


@dataclass
class RedisRateLimiter:
    """``limits`` maps a limit name ("client", "email", "cpf") to its rate ("600/minute");
    a name without a rate is not limited."""

    redis: Redis
    redis_url: str
    limits: dict[str, str]
    _items: dict[str, RateLimitItem] = field(init=False)
    _storage: RedisStorage = field(init=False)
    _script: AsyncScript = field(init=False)
    _turn: list[_Ask] = field(init=False, default_factory=list)
    _calls: set[asyncio.Task[None]] = field(init=False, default_factory=set)

    def __post_init__(self) -> None:
        self._items = {name: parse(rate) for name, rate in self.limits.items() if rate}
        self._storage = RedisStorage(
            _storage_uri(self.redis_url), implementation="redispy", key_prefix=KEY_PREFIX
        )
        bridge = self._storage.bridge
        self._script = self.redis.register_script(
            _BATCH.format(
                acquire=_text(bridge.SCRIPT_ACQUIRE_SLIDING_WINDOW),
                window=_text(bridge.SCRIPT_SLIDING_WINDOW),
            )
        )

    async def hit(self, limits: Sequence[tuple[str, str]]) -> Refused | None:
        wanted = [
            (name, key, item)
            for name, key in limits
            if key and (item := self._items.get(name)) is not None
        ]
        if not wanted:
            return None
        loop = asyncio.get_running_loop()
        ask = _Ask(wanted, loop.create_future())
        if not self._turn:
            # Next turn of the loop: by then every request of this one has asked.
            loop.call_soon(self._send)
        self._turn.append(ask)
        refused = await ask.answer
        if refused is not None:
            metrics.RATE_LIMITED.labels(refused.limit).inc()
        return refused

    def _send(self) -> None:
        asks, self._turn = self._turn, []
        for start in range(0, len(asks), _MOST_PER_CALL):
            call = asyncio.get_running_loop().create_task(
                self._count(asks[start : start + _MOST_PER_CALL])
            )
            self._calls.add(call)
            call.add_done_callback(self._calls.discard)

    async def _count(self, asks: list[_Ask]) -> None:
        keys: list[str] = []
        args: list[Any] = [len(asks)]
        for ask in asks:
            args.append(len(ask.limits))
            for name, key, item in ask.limits:
                window = item.key_for(name, key)
                keys += [self._prefixed(self._storage._previous_window_key(window))]
                keys += [self._prefixed(self._storage._current_window_key(window))]
                args += [item.amount, item.get_expiry()]
        try:
            answers = await self._script(keys=keys, args=args)
            refusals = [
                _refusal(ask, answer) if int(answer[0]) else None
                for ask, answer in zip(asks, answers, strict=True)
            ]
        except Exception as error:
            # Fail open: a signup must not be refused because the limiter's Redis is down;
            # uniqueness lives in the event store, so nothing is duplicated meanwhile.
            log.warning("rate_limiter_unavailable", error=type(error).__name__)
            refusals = [None] * len(asks)
        for ask, refusal in zip(asks, refusals, strict=True):
            if not ask.answer.done():
                ask.answer.set_result(refusal)

    def _prefixed(self, key: str) -> str:
        return self._storage.bridge.prefixed_key(key)

    async def close(self) -> None:
        await asyncio.gather(*self._calls, return_exceptions=True)


def _refusal(ask: _Ask, answer: list[Any]) -> Refused:
    name, _, item = ask.limits[int(answer[0]) - 1]
    window = answer[1]
    # As the library's redis bridge reads the sliding_window script's answer.
    previous_count, current_count = int(window[0] or 0), int(window[2] or 0)
    previous_ttl = max(0, float(window[1] or 0)) / 1000
    current_ttl = max(0, float(window[3] or 0)) / 1000
    return Refused(
        name,
        max(1, math.ceil(reset_in(item, previous_count, previous_ttl, current_count, current_ttl))),
    )


def reset_in(
    item: RateLimitItem,
    previous_count: int,
    previous_expires_in: float,
    current_count: int,
    current_expires_in: float,
) -> float:
    """Seconds until the window lets one more through: the reset time of
    ``SlidingWindowCounterRateLimiter.get_window_stats`` (limits 5), less the current time."""
    if not (previous_count or current_count):
        return 0.0
    expiry = item.get_expiry()
    previous_reset_in, current_reset_in = math.inf, math.inf
    if previous_count:
        previous_reset_in = previous_expires_in % (expiry / previous_count)
    if current_count:
        current_reset_in = current_expires_in % expiry
    return min(previous_reset_in, current_reset_in)


def _text(script: str | bytes) -> str:
    # The library ships its scripts as package data, as bytes.
    return script.decode() if isinstance(script, bytes) else script


def _storage_uri(redis_url: str) -> str:
    scheme, _, rest = redis_url.partition("://")
    return f"async+{scheme}://{rest}"
