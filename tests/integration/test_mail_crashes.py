"""The mailer's promise: every registration gets its message, whenever its worker dies.

A real `signup worker` process sends to a real SMTP sink (aiosmtpd) run by the test, which
kills the worker (SIGKILL) in the middle of a message: before storing it (the relay never
accepted it: the worker died between its outbox row and the send) and after storing it but
before answering 250 (the relay has it; the worker never heard, so never recorded it). The
test restarts the worker each time, as `signup up` does.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import psycopg
from litestar.testing import AsyncTestClient

from infrastructure.settings import Settings
from infrastructure.verification.mail_sink import MailSink
from interfaces.http.app import build_app
from tests.factories import make_cpf, valid_form
from tests.mail import Received, received
from tests.servers import ROOT

REGISTRATIONS = 12
KILLED_BEFORE_STORING = 3  # arrivals 1-3: never stored
KILLED_AFTER_STORING = 3  # arrivals 4-6: stored, never answered


class Killer:
    """Counts the messages arriving at the sink and kills the worker on some of them: on
    arrivals 1 to ``before`` before storing, on the next ``after`` after; a worker once."""

    def __init__(
        self, before: int = KILLED_BEFORE_STORING, after: int = KILLED_AFTER_STORING
    ) -> None:
        self.pid: int | None = None
        self.killed: set[int] = set()
        self.before_storing = before
        self.after_storing = after
        self.arrivals = 0
        self.kills: list[str] = []
        self.lock = threading.Lock()

    def before(self, _: bytes) -> None:
        with self.lock:
            self.arrivals += 1
            if self.arrivals <= self.before_storing and self._kill("before storing"):
                raise RuntimeError("the worker died before the relay took the message")

    def after(self, _: bytes) -> None:
        with self.lock:
            if self.before_storing < self.arrivals <= self.before_storing + self.after_storing:
                self._kill("after storing")

    def _kill(self, when: str) -> bool:
        assert self.pid is not None
        if self.pid in self.killed:
            return False  # another of its connections got here first
        os.kill(self.pid, signal.SIGKILL)
        self.killed.add(self.pid)
        self.kills.append(when)
        return True


def _worker(settings: Settings, log: Path, sessions: int) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        **settings.server_env(),
        "SIGNUP_LOG_FORMAT": "json",
        "SIGNUP_MAIL_SESSIONS": str(sessions),
    }
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "interfaces.cli", "worker"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def _outbox(settings: Settings) -> tuple[set[str], int]:
    """The registrations with a message in the outbox, and how many messages are unsent."""
    with psycopg.connect(settings.read_url) as conn:
        rows = conn.execute("SELECT registration_id, sent_at FROM mail_outbox").fetchall()
    return {str(rid) for rid, _ in rows}, sum(1 for _, sent in rows if sent is None)


async def _sent_through_kills(
    settings: Settings, tmp_path: Path, killer: Killer, sessions: int
) -> tuple[list[str], list[Received], int]:
    """Registrations, then a worker sending their messages to a sink that kills it as
    ``killer`` says, restarted until every message is recorded as sent: the registrations,
    the messages the sink stored and the restarts."""
    sink = MailSink(tmp_path / "mail", before_store=killer.before, after_store=killer.after)
    mailing = dataclasses.replace(settings, smtp_url=sink.url)
    ids = []
    async with AsyncTestClient(app=build_app(mailing)) as api:
        for n in range(REGISTRATIONS):
            email = f"queda{n}@example.com"
            form = valid_form(cpf=make_cpf(66_000 + n), email=email, email_confirmation=email)
            response = await api.post("/registrations", json=form)
            assert response.status_code == 202, response.text
            ids.append(response.json()["registration_id"])

    log = tmp_path / "worker.log"
    restarts = 0
    with sink:
        worker = _worker(mailing, log, sessions)
        killer.pid = worker.pid
        deadline = time.monotonic() + 180
        try:
            # Until every registration's message is in and none is left to send.
            while True:
                queued, unsent = _outbox(mailing)
                missing = set(ids) - {m.registration_id for m in received(sink.directory)}
                if queued == set(ids) and unsent == 0:
                    # Every message recorded as sent: any registration without one lost it.
                    assert not missing, f"messages lost: {sorted(missing)}"
                    break
                assert time.monotonic() < deadline, log.read_text()[-3000:]
                if worker.poll() is not None:
                    worker = _worker(mailing, log, sessions)
                    with killer.lock:
                        killer.pid = worker.pid
                    restarts += 1
                time.sleep(0.1)
        finally:
            worker.send_signal(signal.SIGINT)
            worker.wait(30)

    return ids, received(sink.directory), restarts


async def test_a_worker_killed_mid_send_loses_no_message_and_duplicates_only_what_smtp_forces(
    settings: Settings, tmp_path: Path
) -> None:
    # One connection to the relay: one message in flight, so each kill's consequence can be
    # counted (several: the next test).
    killer = Killer()
    ids, messages, restarts = await _sent_through_kills(settings, tmp_path, killer, sessions=1)
    per_registration = Counter(m.registration_id for m in messages)
    duplicated = {rid for rid, copies in per_registration.items() if copies > 1}
    print(
        {
            "registrations": len(ids),
            "messages": len(messages),
            "kills": killer.kills,
            "restarts": restarts,
            "duplicated": len(duplicated),
        }
    )
    assert killer.kills == ["before storing"] * 3 + ["after storing"] * 3
    assert restarts >= len(killer.kills)
    # Nothing lost: every registration got its message, its code in it.
    assert set(per_registration) == set(ids)
    # Duplicates only as SMTP forces: one copy more per message the relay took and the
    # worker never heard accepted (the restarted worker sends the same one first, so one
    # registration may take them all), each copy the same message (its Message-ID).
    assert len(messages) == len(ids) + KILLED_AFTER_STORING
    assert sum(per_registration[rid] - 1 for rid in duplicated) == KILLED_AFTER_STORING
    for rid in duplicated:
        copies = [m for m in messages if m.registration_id == rid]
        assert len({m.message_id for m in copies}) == 1
        assert len({m.code for m in copies}) == 1


async def test_a_worker_sending_over_several_connections_killed_mid_batch_loses_no_message(
    settings: Settings, tmp_path: Path
) -> None:
    # Four connections: a kill after the relay stored a message may also leave the other
    # connections' messages taken by the relay and unrecorded; each is sent again, never lost.
    sessions = 4
    killer = Killer(before=0, after=KILLED_AFTER_STORING)
    ids, messages, restarts = await _sent_through_kills(settings, tmp_path, killer, sessions)

    assert killer.kills, "no worker was killed: the test proves nothing"
    assert restarts >= len(killer.kills)
    per_registration = Counter(m.registration_id for m in messages)
    assert set(per_registration) == set(ids)  # nothing lost
    extra = len(messages) - len(ids)
    assert 1 <= extra <= sessions * len(killer.kills)
    for rid in per_registration:
        copies = [m for m in messages if m.registration_id == rid]
        assert len({m.message_id for m in copies}) == 1
        assert len({m.code for m in copies}) == 1
