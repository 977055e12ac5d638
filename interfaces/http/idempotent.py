"""Idempotency-Key handling: the first answer for a key is the answer for every retry."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable

import structlog
from redis.exceptions import RedisError

from application.error_text import describe
from application.idempotency import (
    Claimed,
    IdempotencyStore,
    InProgress,
    KeyReused,
    Replay,
    StoredAnswer,
)
from interfaces.http.problems import problem

log = structlog.get_logger(__name__)

REPLAYED_HEADER = "Idempotent-Replayed"


def check_key(key: str) -> str:
    if not 1 <= len(key) <= 255 or not all(" " <= ch <= "~" for ch in key):
        raise problem(
            400,
            "invalid_idempotency_key",
            "Idempotency-Key must be 1 to 255 printable ASCII characters.",
        )
    return key


# Answers still being settled after their client was told 503 (see ``answer_once``).
_settling: set[asyncio.Task[None]] = set()


async def answer_once(
    store: IdempotencyStore,
    key: str,
    body: bytes,
    produce: Callable[[], Awaitable[StoredAnswer]],
    later: Callable[[BaseException], Awaitable[StoredAnswer] | None] = lambda _: None,
) -> StoredAnswer:
    """``later`` maps a failure of ``produce`` to the answer it will turn out to have had
    (a signup whose batch may still commit after its client heard 503), or None."""
    fingerprint = hashlib.sha256(body).hexdigest()
    try:
        outcome = await store.claim(key, fingerprint)
    except RedisError as error:
        # Fail open: uniqueness is enforced by the event store, so without Redis a retry
        # cannot create a second account; it gets a 409 instead of the replayed 202.
        log.warning("idempotency_unavailable", error=describe(error))
        return await produce()
    if isinstance(outcome, KeyReused):
        raise problem(
            422,
            "idempotency_key_reused",
            "This Idempotency-Key was already used with a different request body.",
        )
    if isinstance(outcome, InProgress):
        raise problem(
            409,
            "idempotency_request_in_progress",
            "A request with this Idempotency-Key is still being processed; retry shortly.",
        )
    if isinstance(outcome, Replay):
        answer = outcome.answer
        return StoredAnswer(answer.status, answer.body, {**answer.headers, REPLAYED_HEADER: "true"})
    assert isinstance(outcome, Claimed)
    try:
        answer = await produce()
    except BaseException as error:
        eventual = later(error) if isinstance(error, Exception) else None
        if eventual is None:
            # No final answer (the store was down, or a bug): let the client's retry run afresh.
            await _quietly(store.release(key))
        else:
            # The key stays claimed (a retry meanwhile hears "in progress") until the outcome
            # is known: then a retry gets the answer the first request turned out to have.
            task = asyncio.get_running_loop().create_task(
                _settle(store, key, fingerprint, eventual)
            )
            _settling.add(task)
            task.add_done_callback(_settling.discard)
        raise
    await _quietly(store.complete(key, fingerprint, answer))
    return answer


async def _settle(
    store: IdempotencyStore, key: str, fingerprint: str, eventual: Awaitable[StoredAnswer]
) -> None:
    try:
        answer = await eventual
    except Exception:
        await _quietly(store.release(key))
        return
    await _quietly(store.complete(key, fingerprint, answer))


async def _quietly(step: Awaitable[None]) -> None:
    try:
        await step
    except RedisError as error:
        log.warning("idempotency_record_failed", error=describe(error))
