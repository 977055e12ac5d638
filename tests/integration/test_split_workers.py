"""Projections spread over several worker processes, to use more than one core."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import psutil
from litestar.testing import AsyncTestClient

from infrastructure.composition.read_side import open_read_side
from infrastructure.settings import Settings
from tests.factories import make_cpf, valid_form
from tests.read_models import all_have_status, eventually, replayed_rows, table_rows
from tests.servers import ROOT, free_port

Client = AsyncTestClient  # type: ignore[type-arg]


def _worker(settings: Settings, projections: str, log: Path) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        **settings.server_env(),
        "SIGNUP_LOG_FORMAT": "json",
    }
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "interfaces.cli", "worker", "--projections", projections],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


async def test_two_workers_with_disjoint_projections_complete_every_registration(
    client: Client, settings: Settings, tmp_path: Path
) -> None:
    ids = []
    for n in range(30):
        email = f"split-worker{n}@example.com"
        form = valid_form(cpf=make_cpf(70_000 + n), email=email, email_confirmation=email)
        ids.append((await client.post("/registrations", json=form)).json()["registration_id"])

    workers = [
        _worker(settings, "email_lookup,users_shard0", tmp_path / "a.log"),
        _worker(settings, "users_shard1,registration_status", tmp_path / "b.log"),
    ]
    try:
        await eventually(lambda: all_have_status(client, ids, "completed"))
    finally:
        for worker in workers:
            worker.send_signal(signal.SIGINT)
        for worker in workers:
            assert worker.wait(30) == 0

    read_side = open_read_side(settings)
    try:
        assert await table_rows(read_side) == await replayed_rows(read_side)
    finally:
        await read_side.close()


def test_a_worker_asked_for_an_unknown_projection_stops_and_says_so(
    settings: Settings, tmp_path: Path
) -> None:
    worker = _worker(settings, "email_lookup,nothing", tmp_path / "bad.log")
    assert worker.wait(60) != 0
    assert "unknown projections: nothing" in (tmp_path / "bad.log").read_text()


def test_the_workers_metrics_listen_on_loopback_unless_told_otherwise() -> None:
    def listening_on(port: int, *env: str) -> str:
        script = (
            "import time\n"
            "from infrastructure.metrics import serve_worker_metrics\n"
            "from infrastructure.settings import Settings\n"
            "s = Settings.from_env()\n"
            "serve_worker_metrics(s.worker_metrics_port, s.worker_metrics_host)\n"
            "print('ready', flush=True)\n"
            "time.sleep(60)\n"
        )
        settings = dict(e.split("=", 1) for e in env)
        process = subprocess.Popen(
            [sys.executable, "-c", script],
            env={**os.environ, "SIGNUP_WORKER_METRICS_PORT": str(port), **settings},
            stdout=subprocess.PIPE,
            cwd=ROOT,
        )
        try:
            assert process.stdout is not None
            while (line := process.stdout.readline()) != b"ready\n":
                assert line, "the process exited before serving its metrics"
            [address] = [
                c.laddr.ip
                for c in psutil.Process(process.pid).net_connections("tcp")
                if c.status == psutil.CONN_LISTEN and c.laddr.port == port
            ]
            return str(address)
        finally:
            process.kill()
            process.wait()

    assert listening_on(free_port()) == "127.0.0.1"
    assert listening_on(free_port(), "SIGNUP_WORKER_METRICS_HOST=0.0.0.0") == "0.0.0.0"
