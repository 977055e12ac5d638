"""A worker started while PostgreSQL is out of reach waits for it, then projects.

Once running, a worker waits outages out; at its start it used to die instead (its expiry
sweep opens the event store, which connects as it is opened), and a worker started by hand
or by an orchestrator then projected nothing until somebody started it again.

While it waits, each line says why in the server's words: the pool's own error is the same
for a server that is down and a database URL that is wrong.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from litestar.testing import AsyncTestClient
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from infrastructure.read_side.read_store import async_url
from infrastructure.settings import Settings
from interfaces.http.app import build_app
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
from tests.servers import TEST_RESERVATION_KEY


def _reasons(log: Path) -> list[str]:
    """Why the worker's log says it waits for PostgreSQL, a reason a line."""
    return reasons(log, "worker_waiting_for_postgres")


def _waited(log: Path) -> bool:
    """Whether the worker's log says it is waiting for PostgreSQL (and so did not die)."""
    return bool(_reasons(log))


async def test_a_worker_started_while_postgres_is_down_waits_for_it_and_then_projects(
    breakable_postgres: Any, redis_url: str, tmp_path: Path
) -> None:
    settings = await migrated_settings(breakable_postgres, redis_url)
    email = "espera@example.com"
    form = valid_form(cpf=make_cpf(77_001), email=email, email_confirmation=email)
    async with AsyncTestClient(app=build_app(settings)) as api:
        accepted = await api.post("/registrations", json=form)
    assert accepted.status_code == 202, accepted.text
    registration_id = accepted.json()["registration_id"]

    await asyncio.to_thread(stop_postgres_immediately, breakable_postgres)
    with Processes(tmp_path / "logs", server_env(settings)) as processes:
        worker = processes.worker()
        await eventually(
            lambda: asyncio.to_thread(_waited, tmp_path / "logs" / "worker.log"), timeout=60
        )
        assert worker.poll() is None, processes.log_tail("worker")
        # libpq's words: "connection ...: connection to server ... failed: <why>"
        reason = _reasons(tmp_path / "logs" / "worker.log")[0]
        assert "connection to server" in reason and " failed: " in reason, reason

        await asyncio.to_thread(start_postgres, breakable_postgres)
        engine = create_async_engine(async_url(settings.read_url))
        try:

            async def completed() -> bool:
                async with engine.connect() as conn:
                    status = await conn.scalar(
                        text(
                            "SELECT status FROM registration_status"
                            " WHERE registration_id = CAST(:id AS uuid)"
                        ),
                        {"id": registration_id},
                    )
                return bool(status == "completed")

            await eventually(completed, timeout=90)
        finally:
            await engine.dispose()
        assert worker.poll() is None, processes.log_tail("worker")


async def test_a_worker_given_a_database_that_does_not_exist_says_so_while_it_waits(
    postgres_url: str, redis_url: str, tmp_path: Path
) -> None:
    password = "never-in-a-log"
    server = urlsplit(postgres_url)
    user = server.netloc.rpartition("@")[0].partition(":")[0]
    where = server.netloc.rpartition("@")[2]  # host and port, or empty for a socket
    wrong = urlunsplit(
        server._replace(netloc=f"{user}:{password}@{where}", path="/no_such_signup_database")
    )
    settings = Settings(
        reservation_key=TEST_RESERVATION_KEY, database_url=wrong, redis_url=redis_url
    )
    log = tmp_path / "logs" / "worker.log"
    with Processes(tmp_path / "logs", server_env(settings)) as processes:
        worker = processes.worker()
        await eventually(lambda: asyncio.to_thread(_waited, log), timeout=60)
        assert worker.poll() is None, processes.log_tail("worker")
    assert 'database "no_such_signup_database" does not exist' in _reasons(log)[0]
    assert password not in log.read_text()
