"""PostgreSQL stopped under the API: 503 with Retry-After, never 202; recovery by itself."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from litestar.testing import AsyncTestClient

from infrastructure.composition.operations import migrate
from infrastructure.embedded import ensure_database
from infrastructure.settings import Settings
from interfaces.http.app import build_app
from tests.factories import make_cpf, valid_form
from tests.faults.harness import start_postgres, stop_postgres_immediately
from tests.servers import TEST_RESERVATION_KEY


def _person(n: int) -> dict[str, Any]:
    email = f"outage{n}@example.com"
    return valid_form(cpf=make_cpf(95_000 + n), email=email, email_confirmation=email)


async def test_while_postgres_is_down_signups_get_503_and_after_it_returns_202(
    breakable_postgres: Any, redis_url: str
) -> None:
    url = ensure_database(breakable_postgres.get_uri(), "signup")
    settings = Settings(
        reservation_key=TEST_RESERVATION_KEY,
        database_url=url,
        redis_url=redis_url,
        rate_limit_per_client="",
    )
    await asyncio.to_thread(migrate, settings)
    async with AsyncTestClient(app=build_app(settings), timeout=60) as client:
        assert (await client.post("/registrations", json=_person(1))).status_code == 202

        await asyncio.to_thread(stop_postgres_immediately, breakable_postgres)
        started = time.monotonic()
        down = await client.post("/registrations", json=_person(2))
        # Printed, not asserted (the deadline that bounds it is tested in test_group_commit.py).
        print(f"\nthe client waited {time.monotonic() - started:.1f}s for its 503")
        ready = await client.get("/health/ready")

        await asyncio.to_thread(start_postgres, breakable_postgres)
        # A client retries as Retry-After says; the API reconnects by itself.
        retries = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            retries.append(await client.post("/registrations", json=_person(3)))
            if retries[-1].status_code != 503:
                break
            await asyncio.sleep(0.5)
        back = retries[-1]

    assert down.status_code == 503, down.text
    assert down.json()["code"] == "service_unavailable"
    assert int(down.headers["retry-after"]) > 0
    assert ready.status_code == 503
    assert back.status_code == 202, back.text
    assert {r.status_code for r in retries[:-1]} <= {503}
