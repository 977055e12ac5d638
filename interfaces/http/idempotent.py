"""Idempotency-Key handling: the first answer for a key is the answer for every retry."""

from __future__ import annotations

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


async def answer_once(
    store: IdempotencyStore,
    key: str,
    body: bytes,
    produce: Callable[[], Awaitable[StoredAnswer]],
) -> StoredAnswer:
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
    except BaseException:
        # No final answer (the store was down, or a bug): let the client's retry run afresh.
        await _quietly(store.release(key))
        raise
    await _quietly(store.complete(key, fingerprint, answer))
    return answer


async def _quietly(step: Awaitable[None]) -> None:
    try:
        await step
    except RedisError as error:
        log.warning("idempotency_record_failed", error=describe(error))
