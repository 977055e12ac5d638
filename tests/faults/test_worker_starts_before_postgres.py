"""A worker started while PostgreSQL is out of reach waits for it, then projects.

Once running, a worker waits outages out; at its start it used to die instead (its expiry
sweep opens the event store, which connects as it is opened), and a worker started by hand
or by an orchestrator then projected nothing until somebody started it again.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from litestar.testing import AsyncTestClient
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from infrastructure.read_side.read_store import async_url
from interfaces.http.app import build_app
from tests.factories import make_cpf, valid_form
from tests.faults.harness import (
    Processes,
    migrated_settings,
    server_env,
    start_postgres,
    stop_postgres_immediately,
)
from tests.read_models import eventually


def _waited(log: Path) -> bool:
    """Whether the worker's log says it is waiting for PostgreSQL (and so did not die)."""
    if not log.exists():
        return False
    lines = [line for line in log.read_text().splitlines() if line.startswith("{")]
    return any(json.loads(line).get("event") == "worker_waiting_for_postgres" for line in lines)


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
