"""An API started while PostgreSQL is out of reach waits for it, then serves; told to stop
while it waits, it stops.

Opening the event store connects, and an API started before its database used to die within
2 s: each of its processes printed a 90-line traceback, and with several processes the
command exited with status 0, as if it had been stopped on purpose.
"""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from typing import Any

import httpx

from tests.factories import make_cpf, valid_form
from tests.faults.harness import (
    Processes,
    migrated_settings,
    reasons,
    server_env,
    start_postgres,
    stop_postgres_immediately,
)
from tests.read_models import eventually
from tests.servers import free_port, logged, wait_until_ready


def _events(log: Path) -> list[str]:
    return [line.get("event", "") for line in logged(log)]


def _waiting(log: Path, processes: int) -> bool:
    """Whether the log says each of the API's processes waits for PostgreSQL."""
    return _events(log).count("api_waiting_for_postgres") >= processes


async def test_an_api_started_while_postgres_is_down_waits_stops_when_told_and_serves_once_up(
    breakable_postgres: Any, redis_url: str, tmp_path: Path
) -> None:
    settings = await migrated_settings(breakable_postgres, redis_url)
    await asyncio.to_thread(stop_postgres_immediately, breakable_postgres)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    logs = tmp_path / "logs"
    with Processes(logs, server_env(settings)) as processes:
        # Two of them: one is told to stop while it waits, the other waits it out.
        stopped = processes.start(
            "stopped", ["api", "--host", "127.0.0.1", "--port", str(free_port()), "--workers", "2"]
        )
        api = processes.start(
            "api", ["api", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
        )
        await eventually(lambda: asyncio.to_thread(_waiting, logs / "stopped.log", 2), timeout=60)
        await eventually(lambda: asyncio.to_thread(_waiting, logs / "api.log", 1), timeout=60)

        stopped.send_signal(signal.SIGTERM)
        # Within one attempt to connect (2 s) and a pause, not after the pauses' 10 s at
        # most: the wait ends on the signal.
        code = await asyncio.to_thread(stopped.wait, 30)
        stopped_log = processes.log_tail("stopped", 10**6)
        assert code == 0, stopped_log
        stops = _events(logs / "stopped.log").count("api_stopped_while_waiting_for_postgres")
        assert stops == 2, stopped_log
        assert "Traceback" not in stopped_log

        assert api.poll() is None, processes.log_tail("api")
        # Why, in the server's words, not only the pool's "couldn't get a connection".
        reason = reasons(logs / "api.log", "api_waiting_for_postgres")[0]
        assert "connection to server" in reason and " failed: " in reason, reason
        await asyncio.to_thread(start_postgres, breakable_postgres)
        await asyncio.to_thread(wait_until_ready, url)
        email = "paciente@example.com"
        form = valid_form(cpf=make_cpf(77_002), email=email, email_confirmation=email)
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            accepted = await client.post("/registrations", json=form)
        assert accepted.status_code == 202, accepted.text
        assert "Traceback" not in processes.log_tail("api", 10**6)
