"""The status cache's writes that nobody waits for (pending notes, settlements, polls' caches)."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
from redis.asyncio import Redis
from structlog.testing import capture_logs

from application.status import RegistrationStatus
from infrastructure.read_side.status_cache import PendingNotes, PollCaches, setting, settlement


@pytest.fixture
async def silent_server() -> AsyncIterator[str]:
    """A server that takes connections and never answers: a Redis that hangs (SIGSTOPped,
    or behind a dead network path), not one that refuses."""
    held: list[asyncio.StreamWriter] = []

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    yield f"redis://127.0.0.1:{port}"
    for writer in held:
        writer.close()
    server.close()


async def test_a_stop_does_not_wait_on_a_redis_that_does_not_answer(silent_server: str) -> None:
    redis = Redis.from_url(silent_server)
    writes = setting(redis, seconds=10, only_if_absent=True)
    writes.write(uuid.uuid4(), settlement())
    await asyncio.sleep(0.05)  # the write has gone out and waits for an answer

    with capture_logs() as logs:
        # Well before the client gives up on its own (it did after ~5 s here).
        await asyncio.wait_for(writes.flush(within=0.5), timeout=3)

    assert [entry["event"] for entry in logs] == ["status_cache_unavailable"]
    await redis.aclose()


async def test_a_pending_note_never_replaces_a_settlement_and_lasts_its_seconds(
    redis_url: str,
) -> None:
    redis = Redis.from_url(redis_url)
    notes = PendingNotes.to(redis, seconds=30)
    settled_id, fresh_ids = uuid.uuid4(), [uuid.uuid4() for _ in range(3)]
    settled = settlement()
    await redis.set(f"signup:status:{settled_id}", settled)
    # A note that arrives after the status row's writer settled the key (the API was slow to
    # send it) must not answer pending over that row.
    for registration_id in [settled_id, *fresh_ids]:
        notes.note(_status(registration_id))
    await notes.writes.flush()

    assert await redis.get(f"signup:status:{settled_id}") == settled
    for registration_id in fresh_ids:
        assert 0 < await redis.ttl(f"signup:status:{registration_id}") <= 30
    await redis.aclose()


def _status(registration_id: uuid.UUID, status: str = "pending") -> RegistrationStatus:
    now = datetime.now(UTC)
    return RegistrationStatus(registration_id, status, now, now)


async def test_pending_notes_of_several_commits_within_the_gather_time_go_in_one_call(
    redis_url: str,
) -> None:
    redis = Redis.from_url(redis_url)
    notes = PendingNotes.to(redis, seconds=30, gather_seconds=0.5)
    calls = 0
    script = notes.writes._script

    async def counted(*args: object, **kwargs: object) -> object:
        nonlocal calls
        calls += 1
        return await script(*args, **kwargs)

    notes.writes._script = counted  # type: ignore[assignment]
    ids = [uuid.uuid4() for _ in range(3)]
    for registration_id in ids:
        # Three group commits' notes, a few milliseconds apart (well within the half second).
        notes.note(_status(registration_id))
        await asyncio.sleep(0.005)
    await notes.writes.flush()

    assert calls == 1
    for registration_id in ids:
        assert json.loads(await redis.get(f"signup:status:{registration_id}"))["status"] == (
            "pending"
        )
    await redis.aclose()


async def test_a_polls_cache_goes_only_where_the_key_is_still_as_the_poll_found_it(
    redis_url: str,
) -> None:
    redis = Redis.from_url(redis_url)
    caches = PollCaches.to(redis, seconds=60)
    empty, settled, resettled, judged = (uuid.uuid4() for _ in range(4))
    read, newer = settlement(), settlement()
    verdict = json.dumps({"status": "verified"})
    await redis.set(f"signup:status:{settled}", read)
    # Settled again after the poll read it (a dead letter after completed): the newer
    # settlement must keep sending polls to the read model.
    await redis.set(f"signup:status:{resettled}", newer)
    # A verdict written after a poll found the key empty: the poll's completed comes late.
    await redis.set(f"signup:status:{judged}", verdict)

    caches.cache(_status(empty, "completed"), None)
    caches.cache(_status(settled, "completed"), read)
    caches.cache(_status(resettled, "completed"), read)
    caches.cache(_status(judged, "completed"), None)
    await caches.writes.flush()

    for registration_id in (empty, settled):
        key = f"signup:status:{registration_id}"
        assert json.loads(await redis.get(key))["status"] == "completed"
        assert 0 < await redis.ttl(key) <= 60
    assert await redis.get(f"signup:status:{resettled}") == newer
    assert await redis.get(f"signup:status:{judged}") == verdict.encode()
    await redis.aclose()
