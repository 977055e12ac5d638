"""Rate limits in Redis with the ``limits`` library's sliding-window counters: atomic, so they
hold across any number of API processes (Litestar's own limiter keeps its lock inside one).

Three limits a signup, each a round trip through redis-py, were a fifth of the API's time.
So the requests that arrive in one event-loop turn are counted together: one script call runs
the library's own ``acquire_sliding_window`` Lua for every one of them, on the library's own
keys, and for a refused one its ``sliding_window`` Lua, from which the wait is worked out as
the library's ``get_window_stats`` does (tests hold the keys and the wait to agreeing with
the library's own).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog
from limits import RateLimitItem, parse
from limits.aio.storage.redis.bridge import RedisBridge
from redis.asyncio import Redis

from application.rate_limits import Refused
from infrastructure import metrics
from infrastructure.redis_store.held_script import HeldScript

log = structlog.get_logger(__name__)

KEY_PREFIX = "signup:limits"

# The library's sliding-window Lua, as one script over every request of a turn. A request's
# first limit gates the rest: once it is refused nothing else of that request is counted (the
# per-client limit comes first, so a flood does not spend a victim's per-email allowance). The
# answer lists only the requests that were refused or read a key, each as {its place in the
# call (from 1), the position of the first limit that refused or 0, the refusal's window or
# the value read}: a call whose requests were all counted (nearly every call) answers {}.
# Building and sending a {0} for each of them cost Valkey a sixth of the script's time.
#
# Arguments: the number of limits, each limit's amount and expiry, then one argument per
# request: a line "<limit> <current window key>" per limit (the previous window's key is the
# library's: the current one and "/-1"). One argument a request rather than a dozen: redis-py
# packs each argument in Python, and that was most of the limiter's cost. The keys are named
# here rather than declared, which a single Redis or Valkey allows (a cluster would not).
#
# ``LIBRARY_BATCH`` runs the library's two scripts verbatim for each limit
# (``acquire_sliding_window``, then ``sliding_window`` for a refusal's window). ``_BATCH`` is
# what the limiter runs: the same steps on the same keys, each value read once. Within a
# script the server's clock stands still and nothing else runs, so a second read of a key
# nothing has written since gives the first read's answer: the acquire's re-read of the current
# window when it did not shift it, its ``exists`` (the ``get`` said), and the whole of
# ``sliding_window`` after a refusal (its shift cannot apply: the acquire made it already). Five
# commands a limit instead of seven to nine, and no tables or calls between them: the library's
# version cost Valkey 28 us a limit, in the path of every wave of signups. A window with no
# current key has no previous one (the library's shift makes the current outlive the previous
# by one expiry), so a hit on it is the library's new window made at once: one command a fresh
# key, a `set NX` that fails over to the reads when the key is there (tests/integration/
# test_rate_limiter.py holds the two to the same answers and keys over the states the library's
# own scripts can leave).
LIBRARY_BATCH = """
local function acquire(KEYS, ARGV)
{acquire}
end
local function window(KEYS, ARGV)
{window}
end
local limits = {{}}
local count = tonumber(ARGV[1])
for i = 1, count do limits[i] = {{ARGV[2 * i], ARGV[2 * i + 1]}} end
local answers = {{}}
for request = 2 * count + 2, #ARGV do
  local answer = {{0}}
  local position = 0
  for index, current in string.gmatch(ARGV[request], "(%d+) ([^\\n]+)\\n") do
    position = position + 1
    if answer[1] ~= 1 then
      local keys = {{current .. "/-1", current}}
      local limit = limits[tonumber(index)]
      if not acquire(keys, {{limit[1], limit[2], 1}}) and answer[1] == 0 then
        answer = {{position, window(keys, {{limit[2]}})}}
      end
    end
  end
  if answer[1] ~= 0 then
    answers[#answers + 1] = {{request - 2 * count - 1, answer[1], answer[2]}}
  end
end
return answers
"""

_BATCH = """
-- The counts are kept in memory only: not written to the append-only file, not sent to
-- replicas. Logging every count was an eighth of Valkey's work a signup. A restarted or
-- promoted server forgets the counts since its last snapshot, as limits forget while Redis
-- is down (they fail open then).
redis.set_repl(redis.REPL_NONE)
local call = redis.call
-- The windows of a limit as sliding_window reads them, shifting an expired current one first.
local function read(current, previous, expiry)
  local current_ttl = call('pttl', current)
  if current_ttl == -2 then
    -- No current window, so no previous one either: a shift leaves the current window a whole
    -- expiry longer to live than the previous it makes, and nothing else writes them. (A hit
    -- on an absent window never gets here: its set NX below counts it.)
    -- (Only a full Valkey evicting the current key and sparing the previous breaks this: that
    -- hit is counted without the previous window's share, as any eviction loses counts.)
    return false, -2, false, -2
  end
  if current_ttl > 0 and current_ttl < expiry then
    -- Current window expired, shift it to the previous window
    call('rename', current, previous)
    call('set', current, 0, 'PX', current_ttl + expiry)
    current_ttl = call('pttl', current)
  end
  return call('get', previous), call('pttl', previous), call('get', current), current_ttl
end
local count = tonumber(ARGV[1])
local amounts, expiries, lifetimes = {}, {}, {}
for i = 1, count do
  amounts[i] = tonumber(ARGV[2 * i])
  expiries[i] = tonumber(ARGV[2 * i + 1]) * 1000
  -- A new current window's lifetime, as the library sets it (two expiries), as a string once.
  lifetimes[i] = tostring(expiries[i] * 2)
end
local answers = {}
for request = 2 * count + 2, #ARGV do
  local refused, window, value = 0, nil, nil
  local position = 0
  for index, current in string.gmatch(ARGV[request], "(%d+) ([^\\n]+)\\n") do
    if index == '0' then
      -- Not a limit: a key read for the request (a status poll's cache), if it was let through.
      if refused == 0 then value = call('get', current) end
    else
      position = position + 1
      if refused ~= 1 then
        local i = tonumber(index)
        local limit, expiry = amounts[i], expiries[i]
        local previous = current .. "/-1"
        if 1 > limit then
          -- acquire refuses before it reads anything; only a first refusal reads its window.
          if refused == 0 then
            refused = position
            window = {read(current, previous, expiry)}
          end
        elseif call('set', current, 1, 'PX', lifetimes[i], 'NX') then
          -- No current window (so no previous one, see read): the hit makes it, with the
          -- library's count and lifetime. One command where read's pttl and a set were two:
          -- a person's first signup meets its email's and CPF's limits so.
        else
          local previous_count, previous_ttl, current_count, current_ttl =
            read(current, previous, expiry)
          local weighted_ttl = previous_ttl
          if weighted_ttl <= 0 then weighted_ttl = 0 end
          local weighted_count = math.floor((tonumber(previous_count) or 0) * weighted_ttl / expiry)
            + (tonumber(current_count) or 0)
          if weighted_count + 1 > limit then
            if refused == 0 then
              refused = position
              window = {previous_count, previous_ttl, current_count, current_ttl}
            end
          elseif current_count then
            call('incrby', current, 1)
          else
            call('set', current, 1, 'PX', expiry * 2)
          end
        end
      end
    end
  end
  -- Only what is not "counted, nothing read" is answered (see the header above).
  if refused ~= 0 then
    answers[#answers + 1] = {request - 2 * count - 1, refused, window}
  elseif value then
    answers[#answers + 1] = {request - 2 * count - 1, 0, value}
  end
end
return answers
"""

# Requests counted by one script call: it blocks Redis while it runs (a few microseconds
# a limit), so a huge turn is split.
_MOST_PER_CALL = 256


@dataclass(frozen=True, slots=True)
class _Limit:
    name: str
    item: RateLimitItem
    index: int  # its place in the script's arguments
    # The current window's key is head + the request's key + tail, as the library names it.
    head: str
    tail: str


@dataclass(slots=True)
class _Ask:
    limits: list[_Limit]
    lines: str
    # The refusal, if any, and the value of the key read (a line "0 <key>"), if any.
    answer: asyncio.Future[tuple[Refused | None, bytes | None]]


@dataclass
class RedisRateLimiter:
    """``limits`` maps a limit name ("client", "email", "cpf") to its rate ("600/minute");
    a name without a rate is not limited."""

    redis: Redis
    limits: dict[str, str]
    _limits: dict[str, _Limit] = field(init=False)
    _definitions: list[Any] = field(init=False)
    _script: HeldScript = field(init=False)
    # How long a call waits for company before it goes when company is scarce: fewer than
    # ``gather_below`` requests waiting, and the last call counted fewer too; otherwise it
    # goes at the next loop turn. With one call in flight, whoever asks while it is out goes
    # in the next one: under a saturating load ~30 requests a call, where a wait only adds
    # latency (2 ms cost accepted/s -18 %, A/B). At a steady moderate rate calls carried one
    # or two requests, each call costing the API ~70 us: at 1,500/s (open loop) waiting 1 ms
    # cut the API's CPU a signup 0.507-0.520 -> 0.487-0.503 ms (four alternating runs each),
    # and c64 was unchanged (three pairs).
    gather_seconds: float = 0.001
    gather_below: int = 4
    _turn: list[_Ask] = field(init=False, default_factory=list)
    _sender: asyncio.Task[None] | None = field(init=False, default=None)
    _last_call: int = field(init=False, default=0)  # the requests the last call counted
    # The batch script; tests give ``library_batch()`` to compare the two.
    script: str = _BATCH

    def __post_init__(self) -> None:
        self._limits = {}
        self._definitions = []
        for name, rate in self.limits.items():
            if not rate:
                continue
            item = parse(rate)
            head, tail = _window_key(item, name).split(_MARK)
            self._limits[name] = _Limit(name, item, len(self._limits) + 1, head, tail)
            self._definitions += [item.amount, item.get_expiry()]
        self._definitions.insert(0, len(self._limits))
        self._script = HeldScript(self.redis, self.script)

    async def hit(self, limits: Sequence[tuple[str, str]]) -> Refused | None:
        wanted = [
            (limit, key)
            for name, key in limits
            if key and (limit := self._limits.get(name)) is not None
        ]
        if not wanted:
            return None
        # A key is an address or an HMAC; a line break could only be a forged address.
        lines = "".join(
            f"{limit.index} {limit.head}{key.replace(chr(10), ' ')}{limit.tail}\n"
            for limit, key in wanted
        )
        refused, _ = await self._ask([limit for limit, _ in wanted], lines)
        if refused is not None:
            metrics.RATE_LIMITED.labels(refused.limit).inc()
        return refused

    async def read(self, key: str) -> bytes | None:
        """The value of ``key``, read in the limiter's next call instead of a command of its
        own: a status poll's cache lookup then shares a round trip with the loop turn's
        limits (a redis-py command cost the API ~70 us of CPU). None if absent, or if Redis
        cannot be reached (as a miss: the caller asks the database)."""
        _, value = await self._ask([], f"0 {key}\n")
        return value

    async def _ask(self, limits: list[_Limit], lines: str) -> tuple[Refused | None, bytes | None]:
        loop = asyncio.get_running_loop()
        ask = _Ask(limits, lines, loop.create_future())
        self._turn.append(ask)
        if self._sender is None:
            self._sender = loop.create_task(self._send())
        return await ask.answer

    async def _send(self) -> None:
        """One call in flight at a time, each taking every request that asked meanwhile: a
        round trip costs the API about 60 us of CPU, so it must be shared by many requests."""
        try:
            while self._turn:
                # Company is scarce when the last call had little and little is waiting now.
                few = max(len(self._turn), self._last_call) < self.gather_below
                await asyncio.sleep(self.gather_seconds if few else 0)
                asks, self._turn = self._turn, []
                self._last_call = len(asks)
                await asyncio.gather(
                    *(
                        self._count(asks[start : start + _MOST_PER_CALL])
                        for start in range(0, len(asks), _MOST_PER_CALL)
                    )
                )
        finally:
            self._sender = None

    async def _count(self, asks: list[_Ask]) -> None:
        try:
            answers = await self._script([*self._definitions, *(ask.lines for ask in asks)])
            results: list[tuple[Refused | None, bytes | None]] = [(None, None)] * len(asks)
            for place, refused, payload in answers:
                index, position = int(place) - 1, int(refused)
                if position:
                    results[index] = (_refusal(asks[index], position, payload), None)
                else:
                    results[index] = (None, payload)
        except Exception as error:
            # Fail open: a signup must not be refused because the limiter's Redis is down;
            # uniqueness lives in the event store, so nothing is duplicated meanwhile.
            log.warning("rate_limiter_unavailable", error=type(error).__name__)
            results = [(None, None)] * len(asks)
        for ask, result in zip(asks, results, strict=True):
            if not ask.answer.done():
                ask.answer.set_result(result)

    async def close(self) -> None:
        if self._sender is not None:
            await asyncio.gather(self._sender, return_exceptions=True)


_MARK = "\x00"


def _window_key(item: RateLimitItem, name: str) -> str:
    """The current window's key of ``name``'s limit for a key ``_MARK``, as the library's
    Redis storage names it (``{prefix}:{{namespace/name/key/amount/multiples/granularity}}``)."""
    return f"{KEY_PREFIX}:{{{item.key_for(name, _MARK)}}}"


def _refusal(ask: _Ask, position: int, window: list[Any]) -> Refused:
    limit = ask.limits[position - 1]
    name, item = limit.name, limit.item
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
        # The library reads the TTL after the hit; read in the hit's own script, a window key
        # just made has exactly twice the expiry left: a whole window to wait, not none.
        current_reset_in = current_expires_in % expiry or expiry
    return min(previous_reset_in, current_reset_in)


def library_batch() -> str:
    """``LIBRARY_BATCH`` with the library's own scripts in it."""
    return LIBRARY_BATCH.format(
        acquire=_text(RedisBridge.SCRIPT_ACQUIRE_SLIDING_WINDOW),
        window=_text(RedisBridge.SCRIPT_SLIDING_WINDOW),
    )


def _text(script: str | bytes) -> str:
    # The library ships its scripts as package data, as bytes.
    return script.decode() if isinstance(script, bytes) else script
