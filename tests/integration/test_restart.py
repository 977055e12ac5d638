"""`signup up` keeps what it accepted across a restart, and Ctrl-C leaves nothing running."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import psutil
import pytest

from tests import clients
from tests.factories import make_cpf, valid_form
from tests.servers import free_port, signup_process


def _processes_using(data_dir: Path) -> list[psutil.Process]:
    found = []
    for process in psutil.process_iter(["cmdline"]):
        cmdline = " ".join(process.info["cmdline"] or [])
        if str(data_dir) in cmdline and process.pid != os.getpid():
            found.append(process)
    return found


def _wait_for_status(location: str, status: str, timeout: float = 60) -> None:
    """`signup up` runs the worker too, so an accepted registration completes by itself."""
    deadline = time.monotonic() + timeout
    while (found := clients.get(location, timeout=10).json()["status"]) != status:
        assert time.monotonic() < deadline, f"still {found} after {timeout}s"
        time.sleep(0.2)


@pytest.fixture
def embedded_env() -> dict[str, str]:
    # `signup up` must start its own servers, whatever the developer's shell has set.
    return {"DATABASE_URL": "", "REDIS_URL": ""}


def test_an_accepted_registration_survives_a_restart_of_the_system(
    data_dir: Path, tmp_path: Path, embedded_env: dict[str, str]
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    args = ["up", "--port", str(port), "--data-dir", str(data_dir)]
    form = valid_form(cpf=make_cpf(7))

    with signup_process(args, embedded_env, url, tmp_path / "first.log") as first:
        accepted = clients.post(f"{url}/registrations", json=form, timeout=30)
        assert accepted.status_code == 202
        location = f"{url}{accepted.headers['location']}"
        _wait_for_status(location, "completed")
        children = psutil.Process(first.pid).children(recursive=True)
        assert children, "the worker and the servers run beside the API"
        first.send_signal(signal.SIGINT)
        assert first.wait(60) == 0
    assert _processes_using(data_dir) == []
    # multiprocessing's resource tracker ends when it reads its parent's end of the pipe: it
    # may outlive `signup up` by a moment (seen once in a full run), never for long.
    _, alive = psutil.wait_procs(children, timeout=10)
    assert not [child for child in alive if child.status() != "zombie"]

    with signup_process(args, embedded_env, url, tmp_path / "second.log"):
        again = clients.post(f"{url}/registrations", json=form, timeout=30)
        other = valid_form(
            cpf=make_cpf(8), email="other@example.com", email_confirmation="other@example.com"
        )
        fresh = clients.post(f"{url}/registrations", json=other, timeout=30)

        _wait_for_status(location, "completed")

    assert again.status_code == 409
    assert again.json()["field"] == "email"
    assert fresh.status_code == 202
    assert _processes_using(data_dir) == []


def test_sigterm_also_stops_the_embedded_servers(
    data_dir: Path, tmp_path: Path, embedded_env: dict[str, str]
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with signup_process(
        ["up", "--port", str(port), "--data-dir", str(data_dir)],
        embedded_env,
        url,
        tmp_path / "up.log",
    ) as process:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
            raise
    assert _processes_using(data_dir) == []


def test_ctrl_c_in_a_terminal_stops_signup_up_without_restarting_its_worker(
    data_dir: Path, tmp_path: Path, embedded_env: dict[str, str]
) -> None:
    """A terminal's Ctrl-C signals the whole foreground process group: the worker and the
    mailer too, not only `signup up`, which stops them in its own order."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "up.log"
    args = ["up", "--port", str(port), "--data-dir", str(data_dir)]
    with signup_process(args, embedded_env, url, log) as process:
        os.killpg(process.pid, signal.SIGINT)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
            raise
    lines = log.read_text().splitlines()
    # e.g. a child's KeyboardInterrupt traceback, caught importing
    assert all(line.startswith("{") for line in lines), lines
    events = [json.loads(line)["event"] for line in lines]
    assert "worker_started" in events  # the log is the whole run's
    assert not [event for event in events if event.endswith(("_exited", "_restarted"))], events
    assert _processes_using(data_dir) == []
