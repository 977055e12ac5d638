"""Idempotency records in Redis: one key per Idempotency-Key, claimed atomically."""

from __future__ import annotations

import base64
from dataclasses import dataclass

import msgspec
from redis.asyncio import Redis

from application.idempotency import (
    Claimed,
    ClaimOutcome,
    InProgress,
    KeyReused,
    Replay,
    StoredAnswer,
)
from infrastructure import metrics


class _Record(msgspec.Struct, omit_defaults=True):
    fingerprint: str
    done: bool = False
    status: int = 0
    body: str = ""  # base64: answers are bytes
    headers: dict[str, str] = {}


_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder(_Record).decode


@dataclass(slots=True)
class RedisIdempotencyStore:
    redis: Redis
    ttl_seconds: int
    # An in-flight claim expires on its own, so a crashed process cannot block a key for a day.
    in_flight_seconds: int = 30
    prefix: str = "signup:idempotency:"
    # The largest answer kept: a 202 is ~150 bytes, the largest 422 the form can produce
    # (every field wrong, ten unknown fields per object with 64-character names) ~5.5 KB.
    most_stored_bytes: int = 8 * 1024

    async def claim(self, key: str, fingerprint: str) -> ClaimOutcome:
        # SET NX GET: claims the key, or returns what is already there, in one atomic step.
        previous = await self.redis.set(
            self.prefix + key,
            _encode(_Record(fingerprint=fingerprint)),
            nx=True,
            get=True,
            ex=self.in_flight_seconds,
        )
        if previous is None:
            return Claimed()
        record = _decode(previous)  # type: ignore[arg-type]
        if record.fingerprint != fingerprint:
            return KeyReused()
        if not record.done:
            return InProgress()
        metrics.IDEMPOTENT_REPLAYS.inc()
        return Replay(StoredAnswer(record.status, base64.b64decode(record.body), record.headers))

    async def complete(self, key: str, fingerprint: str, answer: StoredAnswer) -> None:
        if len(answer.body) > self.most_stored_bytes:
            # Not kept for a day: a retry is simply answered afresh (the same body gets the
            # same rejection), and nobody can fill Redis with big answers at a key apiece.
            await self.release(key)
            return
        record = _Record(
            fingerprint=fingerprint,
            done=True,
            status=answer.status,
            body=base64.b64encode(answer.body).decode(),
            headers=answer.headers,
        )
        if answer.subject is None:
            await self.redis.set(self.prefix + key, _encode(record), ex=self.ttl_seconds)
            return
        # With the way back from the registration to its key (for an erasure), in one round
        # trip; both expire together.
        async with self.redis.pipeline(transaction=True) as both:
            both.set(self.prefix + key, _encode(record), ex=self.ttl_seconds)
            both.set(self._subject_key(answer.subject), key, ex=self.ttl_seconds)
            await both.execute()

    async def release(self, key: str) -> None:
        await self.redis.delete(self.prefix + key)

    async def forget(self, subject: str) -> bool:
        key = await self.redis.getdel(self._subject_key(subject))
        if key is None:
            return False
        await self.redis.delete(self.prefix + (key.decode() if isinstance(key, bytes) else key))
        return True

    def _subject_key(self, subject: str) -> str:
        # Outside the records' prefix: a client's key can never name it.
        return f"{self.prefix.rstrip(':')}-of:{subject}"
