"""An event no projector can open (damaged at rest, or written with another cipher key before
the key checks existed) holds up every projection: the worker says so as an error of its own,
not as the database being out of reach, and quotes nothing of the event."""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg
from litestar.testing import AsyncTestClient
from structlog.testing import capture_logs

from infrastructure.settings import Settings
from tests.factories import make_cpf, valid_form
from tests.read_models import running_worker

Client = AsyncTestClient  # type: ignore[type-arg]


async def test_an_event_that_does_not_open_is_logged_as_a_stuck_projector_not_an_outage(
    settings: Settings, client: Client
) -> None:
    email = "estragado@example.com"
    form = valid_form(cpf=make_cpf(55_301), email=email, email_confirmation=email)
    response = await client.post("/registrations", json=form)
    assert response.status_code == 202, response.text
    registration_id = response.json()["registration_id"]
    assert settings.database_url
    with psycopg.connect(settings.database_url) as conn:
        damaged = conn.execute(
            "UPDATE signup_events SET state = 'not an event'::bytea WHERE originator_id = %s",
            (registration_id,),
        ).rowcount
    assert damaged == 1

    with capture_logs() as logs:
        async with running_worker(settings):
            await asyncio.sleep(1.5)

    stuck: list[dict[str, Any]] = [entry for entry in logs if entry["event"] == "projector_stuck"]
    assert stuck, [entry["event"] for entry in logs]
    assert all(entry["log_level"] == "error" for entry in stuck)
    assert {entry["projection"] for entry in stuck} >= {"email_lookup", "users_shard0"}
    assert not [entry for entry in logs if entry["event"] == "projector_unavailable"]
    assert email not in repr(logs) and "not an event" not in repr(logs)
