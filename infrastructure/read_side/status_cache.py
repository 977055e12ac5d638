"""The status cache in Redis: one key a registration, read by every status query first.

A key holds one of two things:
- a status a poll may repeat without asking the databases: a just-recorded registration's
  ``pending`` (noted by the API after its commit, for ``SIGNUP_STATUS_PENDING_SECONDS``), then
  ``completed`` or a verdict (cached by a poll or written by the verdict, for the configured
  cache time);
- a settlement: "ask the status read model", written by whoever has just written the
  registration's row (the status projection, the process manager) or erased it, so that a
  pending note can never hide a newer row, nor an erasure.

The writers are ordered by what they may overwrite: a pending note only an empty key (``NX``:
a note that arrives after the key was settled is dropped); a poll's cache an empty key, or
the very settlement it read before asking the read model (each settlement is unique, so a
poll that read a row just before the process manager changed it again, a dead letter after
``completed``, cannot cache the old row over the newer settlement); a settlement and a
verdict anything.
"""

from __future__ import annotations

import asyncio
import secrets
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import msgspec
import structlog
from redis.asyncio import Redis

from application.status import RegistrationStatus
from infrastructure.redis_store.held_script import HeldScript

log = structlog.get_logger(__name__)

STATUS_CACHE_PREFIX = "signup:status:"
_SETTLED = b"settled:"
# How long a pending note answers by default (SIGNUP_STATUS_PENDING_SECONDS), and how long an
# erasure's settlement lasts: longer than a registration takes to complete when the
# worker keeps up (p99 well under a second), short enough that a settlement lost while Redis
# blinked leaves a completed registration reading pending only briefly.
PENDING_SECONDS = 10
# How long the API's pending notes gather before they go, in one script call. Per loop turn,
# each group commit's notes were a call of their own (~65 a second an API process at c64);
# over 20 ms, several commits share one: API CPU a signup -3 to -7 us (in-process driver,
# three alternating pairs), Valkey's wake-ups -15 %. A poll within those 20 ms of its 202
# reads the databases instead, as any poll without a note does; people poll later than that.
PENDING_GATHER_SECONDS = 0.02

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder(RegistrationStatus).decode


def settlement() -> bytes:
    """A new settlement: unique, so that a poll replaces only the one it read."""
    return _SETTLED + secrets.token_hex(8).encode()


def is_settlement(raw: bytes | str) -> bool:
    return isinstance(raw, bytes) and raw.startswith(_SETTLED)


def decode_cached(raw: bytes | str) -> RegistrationStatus | None:
    """A cached status, or None for a settlement (ask the read model)."""
    return None if is_settlement(raw) else _decode(raw)


async def cache_status(redis: Redis, status: RegistrationStatus, seconds: int) -> None:
    """Cache ``status`` over whatever its key holds: a verdict's write (polls cache through
    ``PollCaches``, on their conditions)."""
    await redis.set(STATUS_CACHE_PREFIX + str(status.registration_id), _encode(status), ex=seconds)


async def settle_now(
    redis: Redis,
    registration_id: uuid.UUID,
    seconds: int = PENDING_SECONDS,
    prefix: str = STATUS_CACHE_PREFIX,
) -> bool:
    """Settle the key at once, for ``seconds`` (a pending note's lifetime: an erasure's
    settlement must keep out a note still in flight); whether it held anything before."""
    before = await redis.set(prefix + str(registration_id), settlement(), ex=seconds, get=True)
    return before is not None


# Every key of a call in one script, named in its arguments (as the limiter's script names its
# keys: a single Redis or Valkey allows it, a cluster would not). ARGV: NX or "" (overwrite),
# the lifetime in seconds, then key and value pairs.
_WRITE = """
local nx, seconds = ARGV[1], ARGV[2]
for i = 3, #ARGV, 2 do
  if nx == 'NX' then
    redis.call('set', ARGV[i], ARGV[i + 1], 'EX', seconds, 'NX')
  else
    redis.call('set', ARGV[i], ARGV[i + 1], 'EX', seconds)
  end
end
return 0
"""

# A poll's cache of what it read from the read model, where the key is still as the poll found
# it: empty (its read "" here: the status is set only where nothing is), or holding the very
# settlement the poll read (see the module's header). ARGV: the lifetime in seconds, then key,
# read and value triples.
_CACHE_OVER = """
local seconds = ARGV[1]
for i = 2, #ARGV, 3 do
  local key, read = ARGV[i], ARGV[i + 1]
  if read == '' then
    redis.call('set', key, ARGV[i + 2], 'EX', seconds, 'NX')
  elseif redis.call('get', key) == read then
    redis.call('set', key, ARGV[i + 2], 'EX', seconds)
  end
end
return 0
"""


@dataclass
class CacheWrites:
    """Writes to the status cache that nobody waits for: whatever is written within
    ``gather_seconds`` (one turn of the event loop by default) goes in one script call, with
    one call in flight at a time (as the limiter counts). Bounded: while Redis does not
    answer, at most ``most_waiting`` writes wait, and the oldest are dropped (a dropped write
    only sends polls to the databases, or leaves a pending note to its short lifetime).

    A write is ``width`` arguments of ``script``, after the call's ``leading`` ones."""

    redis: Redis
    script: str
    leading: tuple[str | int, ...]
    width: int = 2
    prefix: str = STATUS_CACHE_PREFIX
    most_waiting: int = 50_000
    gather_seconds: float = 0.0
    _waiting: list[str | bytes] = field(init=False, default_factory=list)
    _sender: asyncio.Task[None] | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        self._script = HeldScript(self.redis, self.script)

    def write(self, registration_id: uuid.UUID, *values: str | bytes) -> None:
        """The key of ``registration_id`` and ``values``: the rest of the write's arguments."""
        self._waiting += (self.prefix + str(registration_id), *values)
        if len(self._waiting) > self.width * self.most_waiting:
            del self._waiting[: len(self._waiting) - self.width * self.most_waiting]
        if self._sender is None:
            self._sender = asyncio.get_running_loop().create_task(self._send())

    async def _send(self) -> None:
        try:
            while self._waiting:
                await asyncio.sleep(self.gather_seconds)  # later writes join the call meanwhile
                written, self._waiting = self._waiting, []
                try:
                    await self._script([*self.leading, *written])
                except Exception as error:
                    log.warning("status_cache_unavailable", error=type(error).__name__)
        finally:
            self._sender = None

    async def flush(self, within: float = 2.0) -> None:
        """Wait for what was written so far (at a stop), at most ``within`` seconds: a Redis
        that does not answer must not hold a stopping process (the writes are best effort)."""
        if self._sender is None:
            return
        try:
            await asyncio.wait_for(asyncio.shield(self._sender), within)
        except TimeoutError:
            if self._sender is not None:
                self._sender.cancel()
            log.warning(
                "status_cache_unavailable",
                error="TimeoutError",
                waiting=len(self._waiting) // self.width,
            )


def setting(redis: Redis, seconds: int, *, only_if_absent: bool, **options: Any) -> CacheWrites:
    """Writes that set each key to a value for ``seconds``: where nothing is, or over anything."""
    return CacheWrites(redis, _WRITE, ("NX" if only_if_absent else "", seconds), **options)


@dataclass
class PendingNotes:
    """``PendingStatuses`` in the status cache (the API's side)."""

    writes: CacheWrites

    @classmethod
    def to(
        cls,
        redis: Redis,
        seconds: int = PENDING_SECONDS,
        gather_seconds: float = PENDING_GATHER_SECONDS,
    ) -> PendingNotes:
        return cls(setting(redis, seconds, only_if_absent=True, gather_seconds=gather_seconds))

    def note(self, status: RegistrationStatus) -> None:
        self.writes.write(status.registration_id, _encode(status))


@dataclass
class Settlements:
    """A settlement for each registration whose status row was just written (the worker's
    side), after the transaction that wrote it has committed."""

    writes: CacheWrites

    @classmethod
    def to(cls, redis: Redis, seconds: int = PENDING_SECONDS) -> Settlements:
        return cls(setting(redis, seconds, only_if_absent=False))

    def settle(self, registration_ids: Iterable[uuid.UUID]) -> None:
        for registration_id in registration_ids:
            self.writes.write(registration_id, settlement())

    async def close(self) -> None:
        await self.writes.flush()
        await self.writes.redis.aclose()


@dataclass
class PollCaches:
    """What polls read from the read model and may cache (see the module's header), written
    after their answers, in one script call a loop turn: a poll that found its registration
    completed used to wait for a command of its own (redis-py's ``EVAL`` with the script's
    whole text, which the server hashed again each time) before it answered."""

    writes: CacheWrites

    @classmethod
    def to(cls, redis: Redis, seconds: int) -> PollCaches:
        return cls(CacheWrites(redis, _CACHE_OVER, (seconds,), width=3))

    def key(self, registration_id: uuid.UUID) -> str:
        """The registration's key in the cache, as polls read it."""
        return self.writes.prefix + str(registration_id)

    def cache(self, status: RegistrationStatus, read: bytes | None) -> None:
        """Cache ``status`` where its key is empty (``read`` None), or still holds the
        settlement ``read`` that sent the poll to the read model."""
        self.writes.write(status.registration_id, read or b"", _encode(status))
