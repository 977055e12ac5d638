"""A worker killed with SIGKILL at random points loses and duplicates nothing."""

from __future__ import annotations

import asyncio
import itertools
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import httpx
from sqlalchemy import text

from infrastructure.composition.read_side import open_read_side
from infrastructure.read_side.gauges import lag
from infrastructure.settings import Settings
from tests.clients import separate_clients
from tests.factories import make_cpf, valid_form
from tests.read_models import eventually, replayed_rows, table_rows
from tests.servers import ROOT, free_port, signup_process

REGISTRATIONS = int(os.environ.get("SIGNUP_CRASH_TEST_REGISTRATIONS", "5000"))
# Registrations are sent until both are reached: the kills are the test's samples, so their
# number does not depend on how fast the clients happen to send.
KILLS = 5


def _env(settings: Settings) -> dict[str, str]:
    return {**settings.server_env(), "SIGNUP_PROJECTION_BATCH_SIZE": "200"}


def _start_worker(settings: Settings, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "interfaces.cli", "worker"],
            cwd=ROOT,
            env={**os.environ, "SIGNUP_LOG_FORMAT": "json", **_env(settings)},
            stdout=out,
            stderr=subprocess.STDOUT,
        )


async def test_a_worker_killed_repeatedly_under_load_loses_and_duplicates_nothing(
    settings: Settings, tmp_path: Path
) -> None:
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "worker.log"
    kills = 0
    api = ["api", "--port", str(port), "--workers", "1"]  # the worker is what this test breaks
    with signup_process(api, _env(settings), url, tmp_path / "api.log"):
        worker = _start_worker(settings, log)
        sending = True

        async def projected() -> int:
            return sum(position for position, _ in (await lag(read_side)).values())

        async def chaos() -> None:
            # Killed on progress, not on a timer: a worker still starting up when a timer
            # fired (as on a slow machine) was killed before it had written anything.
            nonlocal worker, kills
            while sending:
                started_at = await projected()
                while sending and await projected() == started_at:
                    await asyncio.sleep(0.02)
                if not sending:
                    break
                await asyncio.sleep(rng.uniform(0.0, 0.3))  # somewhere in its work
                worker.send_signal(signal.SIGKILL)
                worker.wait()
                kills += 1
                worker = _start_worker(settings, log)

        async def send() -> list[str]:
            async with separate_clients(32, base_url=url, timeout=60) as clients:
                numbers = itertools.count()
                accepted: list[str] = []

                async def one_client(client: httpx.AsyncClient) -> None:
                    while (n := next(numbers)) < REGISTRATIONS or (
                        kills < KILLS and n < 4 * REGISTRATIONS  # bounded if kills stall
                    ):
                        email = f"crash{n}@example.com"
                        form = valid_form(
                            cpf=make_cpf(10_000 + n), email=email, email_confirmation=email
                        )
                        # As a real client would: a dropped connection (uvicorn's keep-alive
                        # handling can close one under load) is retried with the same key.
                        key = {"Idempotency-Key": f"crash-{n}"}
                        for attempt in range(3):
                            try:
                                response = await client.post(
                                    "/registrations", json=form, headers=key
                                )
                                break
                            except httpx.TransportError:
                                if attempt == 2:
                                    raise
                        assert response.status_code == 202, response.text
                        accepted.append(response.json()["registration_id"])

                await asyncio.gather(*(one_client(client) for client in clients))
                return accepted

        read_side = open_read_side(settings)
        chaos_task = asyncio.create_task(chaos())
        try:
            try:
                accepted = await send()
            finally:
                sending = False
                await chaos_task

            async def all_completed() -> bool:
                async with read_side.read_engine.connect() as conn:
                    result = await conn.execute(
                        text("SELECT count(*) FROM registration_status WHERE status = 'completed'")
                    )
                    return result.scalar_one() == len(accepted)

            await eventually(all_completed, timeout=180)
            rows = await table_rows(read_side)
            expected = await replayed_rows(read_side)
        finally:
            await read_side.close()
            worker.kill()  # whatever happened above: no worker outlives the test
            worker.wait(30)

    # Each kill came after the worker had projected something of its own.
    assert kills >= KILLS, f"seed {seed}: the worker was killed only {kills} times"
    assert len(accepted) >= REGISTRATIONS
    shard_users = [user for name in rows if name.startswith("users_shard") for user in rows[name]]
    assert len(shard_users) == len(accepted), f"seed {seed}"
    assert len({dict(user)["user_id"] for user in shard_users}) == len(accepted), f"seed {seed}"
    assert rows == expected, f"seed {seed}"
