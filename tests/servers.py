"""Real servers for the tests: embedded PostgreSQL and Valkey from PyPI wheels."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import psycopg

# Re-exported: the tests start their servers on ports from here.
from bench.ports import free_port as free_port
from infrastructure.embedded import database_url, ensure_database
from infrastructure.settings import Settings
from tests import clients

ROOT = Path(__file__).resolve().parents[1]
# What the tests' servers hash claims with: `signup` refuses the development key outside its
# embedded mode, and every process of a test must compute the same claim ids.
TEST_RESERVATION_KEY = "a-test-reservation-key-" + "x" * 24


# Test traffic all comes from 127.0.0.1: turn the per-client and per-person limits off unless
# a test sets them.
LOAD_FROM_ONE_ADDRESS = {
    "SIGNUP_RATE_LIMIT_PER_CLIENT": "",
    "SIGNUP_RATE_LIMIT_PER_EMAIL": "",
    "SIGNUP_RATE_LIMIT_PER_CPF": "",
    "SIGNUP_RATE_LIMIT_STATUS_PER_CLIENT": "",
}


def bench_load_env() -> dict[str, str]:
    """`signup up` as the throughput goal is measured: embedded servers, the bench trusted as
    a proxy (it names many clients in X-Forwarded-For) and the rate limits it ships with, put
    back over ``LOAD_FROM_ONE_ADDRESS`` (until 2026-12-05 the load tests had them off, and
    their figures with them)."""
    from infrastructure.settings import Settings

    shipped = Settings()
    return {
        "DATABASE_URL": "",
        "REDIS_URL": "",
        "SIGNUP_TRUSTED_PROXIES": "127.0.0.1",
        "SIGNUP_RATE_LIMIT_PER_CLIENT": shipped.rate_limit_per_client,
        "SIGNUP_RATE_LIMIT_PER_EMAIL": shipped.rate_limit_per_email,
        "SIGNUP_RATE_LIMIT_PER_CPF": shipped.rate_limit_per_cpf,
        "SIGNUP_RATE_LIMIT_STATUS_PER_CLIENT": shipped.rate_limit_status_per_client,
    }


def bench_round(tmp_path: Path, label: str, checkout: Path = ROOT) -> dict[str, Any]:
    """One round of the throughput goal's measure: a fresh `signup up` of ``checkout``'s code
    (a fresh store, as a person trying `signup up` then `signup bench` has), measured by this
    checkout's `signup bench --baseline` at its defaults, all three rate limits on (100,000
    client addresses). Its report, checked to mean something."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    up = ["up", "--port", str(port), "--data-dir", str(tmp_path / label)]
    report = tmp_path / f"{label}.json"
    env = {**bench_load_env(), "PYTHONPATH": str(checkout)}
    with signup_process(up, env, url, tmp_path / f"{label}.log", checkout=checkout):
        command = [sys.executable, "-m", "interfaces.cli", "bench", "--url", url]
        command += ["--baseline", "--client-addresses", "100000"]
        command += ["--report", str(report), "--plot", str(tmp_path / f"{label}.png")]
        bench = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert bench.returncode == 0, bench.stderr[-4000:]
    # The round's data (~750 MB: the store, the WAL, the AOF) goes with it (its log and report
    # stay): kept, the kernel wrote it out during the next rounds (its dirty pages expire after
    # 30 s), and each round read lower than the one before (0.352 / 0.339 / 0.329 / 0.326);
    # deleted, what is not written yet is never written.
    shutil.rmtree(tmp_path / label, ignore_errors=True)
    document: dict[str, Any] = json.loads(report.read_text())
    target = document["target"]
    assert target["accepted"] > 0 and target["server_errors_5xx"] == 0
    assert "429" not in target["status_counts"], "rate-limited: the ratio would mean nothing"
    return document


def create_database(server_url: str, template: str | None = None) -> str:
    """A fresh database on the server, so tests never see each other's rows: empty, or a
    copy of ``template`` (a database URL on the same server)."""
    name = f"test_{uuid.uuid4().hex[:12]}"
    if template is None:
        return ensure_database(server_url, name)
    source = urlsplit(template).path.lstrip("/")
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{source}"')
    return database_url(server_url, name)


def logged(log: Path) -> list[dict[str, Any]]:
    """The JSON lines a ``signup`` process wrote to its log file; none before it wrote one."""
    if not log.exists():
        return []
    return [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]


def wait_until_ready(base_url: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if clients.get(f"{base_url}/health/ready", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        # A poll costs ~1 ms of CPU now that it builds no TLS context (tests/clients.py);
        # every server start used to wait 0.1 s on average past its readiness.
        time.sleep(0.05)
    raise TimeoutError(f"{base_url} did not become ready in {timeout}s")


async def run_signup(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    """``signup ARGS`` against these settings' servers, as an operator would run it."""
    env = {**os.environ, **settings.server_env(), "SIGNUP_LOG_FORMAT": "json"}
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "interfaces.cli", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@contextmanager
def signup_process(
    args: list[str],
    env: Mapping[str, str],
    base_url: str,
    log_path: Path,
    checkout: Path = ROOT,
) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``signup ARGS`` as its own process until ready; SIGINT it on exit. ``checkout``:
    whose code it runs (``python -m`` puts the working directory first on the path; the
    processes it starts inherit it), this one's by default."""
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "interfaces.cli", *args],
            cwd=checkout,
            env={**os.environ, **LOAD_FROM_ONE_ADDRESS, "SIGNUP_LOG_FORMAT": "json", **env},
            stdout=log,
            stderr=subprocess.STDOUT,
            # A group of its own, as a command started from a shell gets: a test may signal
            # the whole group, as a terminal's Ctrl-C does, without signalling pytest.
            process_group=0,
        )
    try:
        try:
            wait_until_ready(base_url)
        except TimeoutError:
            # Stopped below with SIGINT, as on success: a `signup up` SIGKILLed here left its
            # embedded Valkey running after the test (seen after a run on a loaded VM).
            raise AssertionError(log_path.read_text()[-4000:]) from None
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(2)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
