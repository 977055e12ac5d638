"""`signup up` keeps its worker running, and /health/ready says when projections stop."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import psutil

from tests import clients
from tests.factories import make_cpf, valid_form
from tests.mail import messages_for, wait_for_messages_sync
from tests.servers import free_port, logged, signup_process


def _until(condition: Callable[[], bool], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"not {what} after {timeout}s"
        time.sleep(0.2)


def _in_background(task: psutil.Process) -> bool:
    """At the kernel's idle policy (infrastructure/priority.py), niced as well."""
    return os.sched_getscheduler(task.pid) == os.SCHED_IDLE and task.nice() == 10


def _child(up: psutil.Process, command: str) -> psutil.Process | None:
    """``signup up``'s child running ``python -m interfaces.cli <command> ...``."""
    for child in up.children(recursive=True):
        try:
            line = child.cmdline()
        except psutil.NoSuchProcess:
            continue
        if "interfaces.cli" in line and line[line.index("interfaces.cli") + 1 :][:1] == [command]:
            return child
    return None


def _worker(up: psutil.Process) -> psutil.Process | None:
    return _child(up, "worker")


def _person(n: int) -> dict[str, object]:
    email = f"supervised{n}@example.com"
    return valid_form(cpf=make_cpf(900 + n), email=email, email_confirmation=email)


def test_a_stalled_worker_fails_readiness_and_a_killed_one_is_restarted_to_finish_the_work(
    data_dir: Path, tmp_path: Path
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "up.log"
    env = {"DATABASE_URL": "", "REDIS_URL": "", "SIGNUP_PROJECTION_STALL_SECONDS": "2"}
    args = ["up", "--port", str(port), "--data-dir", str(data_dir)]
    with signup_process(args, env, url, log) as process:
        up = psutil.Process(process.pid)
        worker = _worker(up)
        assert worker is not None, "signup up runs a worker"

        # Hung: every server answers, but nothing is projected while events wait.
        worker.send_signal(signal.SIGSTOP)
        waiting = clients.post(f"{url}/registrations", json=_person(1), timeout=30)
        assert waiting.status_code == 202, waiting.text
        # Each API process watches on its own: keep the answer that said so.
        unready: list[httpx.Response] = []

        def said_unready() -> bool:
            unready.append(clients.get(f"{url}/health/ready"))
            return unready[-1].status_code == 503

        _until(said_unready, "unready")
        checks = unready[-1].json()["checks"]
        assert checks == {"postgres": True, "redis": True, "projections": False}
        # The gauge is published once a second, readiness decides at each request: the gauge
        # says so too within a tick.
        _until(
            lambda: (
                'signup_projection_stalled{projection="registration_status"} 1.0'
                in clients.get(f"{url}/metrics").text
            ),
            "stalled gauge",
        )
        assert clients.get(f"{url}{waiting.headers['location']}").json()["status"] == "pending"

        worker.send_signal(signal.SIGCONT)
        _until(lambda: clients.get(f"{url}/health/ready").status_code == 200, "ready again")
        status = f"{url}{waiting.headers['location']}"
        _until(lambda: clients.get(status).json()["status"] == "completed", "completed")

        # Dead: signup up starts another, which picks up what waited meanwhile.
        worker.kill()
        worker.wait(10)
        accepted = clients.post(f"{url}/registrations", json=_person(2), timeout=30)
        assert accepted.status_code == 202, accepted.text
        status = f"{url}{accepted.headers['location']}"
        _until(lambda: clients.get(status).json()["status"] == "completed", "completed")
        restarted = _worker(up)
        assert restarted is not None and restarted.pid != worker.pid

    events = logged(log)
    names = [e.get("event") for e in events]
    assert "projection_stalled" in names and "projection_moving_again" in names
    exited = next(e for e in events if e.get("event") == "worker_exited")
    assert exited["exit_code"] == -signal.SIGKILL
    assert any(e.get("event") == "worker_restarted" and e["restarts"] == 1 for e in events)


def _logged_sent(log: Path, registration_id: str) -> bool:
    return any(
        json.loads(line).get("event") == "mail_sent" and registration_id in line
        for line in log.read_text().splitlines()
        if line.startswith("{")
    )


def test_while_readiness_says_projections_are_stalled_signups_are_still_accepted(
    data_dir: Path, tmp_path: Path
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {"DATABASE_URL": "", "REDIS_URL": "", "SIGNUP_PROJECTION_STALL_SECONDS": "2"}
    # One API process: the readiness answers and the signup come from the same watcher.
    args = ["up", "--port", str(port), "--data-dir", str(data_dir), "--workers", "1"]
    with signup_process(args, env, url, tmp_path / "up.log") as process:
        worker = _worker(psutil.Process(process.pid))
        assert worker is not None, "signup up runs a worker"
        # Hung, with an event waiting: the projections stall.
        worker.send_signal(signal.SIGSTOP)
        try:
            first = clients.post(f"{url}/registrations", json=_person(21), timeout=30)
            assert first.status_code == 202, first.text
            _until(lambda: clients.get(f"{url}/health/ready").status_code == 503, "unready")

            during = clients.post(f"{url}/registrations", json=_person(22), timeout=30)
            after = clients.get(f"{url}/health/ready")
        finally:
            # A stopped worker would not hear `signup up` stop it.
            worker.send_signal(signal.SIGCONT)

    # Readiness takes the process out of a load balancer, but one that still sends it a
    # signup (or a client that calls it directly) has it recorded.
    assert during.status_code == 202, during.text
    assert during.json()["status"] == "pending"
    assert after.status_code == 503
    assert after.json()["checks"] == {"postgres": True, "redis": True, "projections": False}


def test_signup_up_sends_mail_from_a_process_of_its_own_in_the_background(
    data_dir: Path, tmp_path: Path
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {"DATABASE_URL": "", "REDIS_URL": "", "SMTP_URL": ""}
    args = ["up", "--port", str(port), "--data-dir", str(data_dir)]
    log = tmp_path / "up.log"
    with signup_process(args, env, url, log) as process:
        up = psutil.Process(process.pid)
        worker, mailer = _worker(up), _child(up, "mailer")
        assert worker is not None and mailer is not None, "signup up runs a worker and a mailer"
        # Under a peak the cores go to the API and the worker; the mail has the gaps: the
        # mailer, and the thread of signup up that runs its SMTP sink, in the background,
        # and the mailer rests while the cores are saturated.
        assert _in_background(mailer)
        assert "--background" in mailer.cmdline()
        assert not _in_background(worker) and worker.nice() == up.nice()
        up_threads = [_in_background(psutil.Process(thread.id)) for thread in up.threads()]
        assert up_threads.count(True) == 1, "the sink's thread alone"
        assert not _in_background(up)

        first = clients.post(f"{url}/registrations", json=_person(11), timeout=30)
        assert first.status_code == 202, first.text
        [message] = wait_for_messages_sync(data_dir / "mail", first.json()["registration_id"])
        assert message.kind == "verification"
        # Killed only once it has recorded the send: killed between the relay's answer and that
        # record, a mailer sends the message again at its restart (as SMTP forces; that is
        # test_mail_crashes' subject, not this one's).
        _until(lambda: _logged_sent(log, first.json()["registration_id"]), "the send recorded")

        # Killed: signup up starts another, as lowly, which sends what waited meanwhile.
        mailer.kill()
        mailer.wait(10)
        second = clients.post(f"{url}/registrations", json=_person(12), timeout=30)
        assert second.status_code == 202, second.text
        restarted = _new_mailer(up, mailer.pid)
        # Killed again at once, well within the minute after which a run counts as healthy:
        # the supervisor waits twice as long before this restart.
        restarted.kill()
        restarted.wait(10)
        again = _new_mailer(up, restarted.pid)
        wait_for_messages_sync(data_dir / "mail", second.json()["registration_id"], timeout=90)
        assert _in_background(again)
    # Sent once: by the mailer, not also by the worker (one sender a shard).
    assert len(messages_for(data_dir / "mail", first.json()["registration_id"])) == 1

    # The operator reads each death and each restart in the log: the exit code, the wait
    # before the restart (1 s, then doubled) and how many restarts so far.
    events = logged(log)
    exits = [
        (e["exit_code"], e["restart_in_seconds"])
        for e in events
        if e.get("event") == "mailer_exited"
    ]
    assert exits == [(-signal.SIGKILL, 1), (-signal.SIGKILL, 2)]
    restarts = [e["restarts"] for e in events if e.get("event") == "mailer_restarted"]
    assert restarts == [1, 2]


def _new_mailer(up: psutil.Process, old_pid: int) -> psutil.Process:
    """The mailer signup up started in place of the one with ``old_pid``, once it has."""
    found: list[psutil.Process] = []

    def restarted() -> bool:
        mailer = _child(up, "mailer")
        if mailer is None or mailer.pid == old_pid:
            return False
        found.append(mailer)
        return True

    _until(restarted, "mailer restarted")
    return found[-1]
