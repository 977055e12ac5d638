"""``signup up``'s worker, kept running: restarted with backoff whenever it exits on its own.

Without it a worker killed by the OOM killer, a crash or a stray ``kill`` left every later
registration ``pending`` for good while the API went on accepting them. Nothing is lost
meanwhile (the events are in the store; the restarted worker resumes from its tracking
position), but nobody would see the registrations complete.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import structlog

log = structlog.get_logger("signup")


@dataclass
class Supervised:
    """Runs ``start(restarts)`` (a child process) and starts it again when it exits before
    ``stop``: after ``first_wait`` seconds, doubling up to ``longest_wait``, back to
    ``first_wait`` once a run has lasted ``healthy_after`` seconds (a worker that dies at
    once, e.g. on a bad setting, is not restarted in a tight loop)."""

    start: Callable[[int], subprocess.Popen[bytes]]
    name: str = "worker"
    first_wait: float = 1.0
    longest_wait: float = 30.0
    healthy_after: float = 60.0
    restarts: int = 0
    _child: subprocess.Popen[bytes] | None = field(init=False, default=None)
    _stopping: threading.Event = field(init=False, default_factory=threading.Event)
    _lock: threading.Lock = field(init=False, default_factory=threading.Lock)
    _thread: threading.Thread | None = field(init=False, default=None)

    def __enter__(self) -> Supervised:
        self._child = self.start(0)
        self._thread = threading.Thread(target=self._watch, name=f"supervise-{self.name}")
        self._thread.daemon = True
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stopping.set()
        with self._lock:
            child = self._child
        if child is not None:
            _stop_child(child)
        if self._thread is not None:
            self._thread.join(30)

    @property
    def pid(self) -> int | None:
        return self._child.pid if self._child is not None else None

    def _watch(self) -> None:
        wait = self.first_wait
        while True:
            with self._lock:
                child = self._child
            assert child is not None
            started = time.monotonic()
            code = child.wait()
            if self._stopping.is_set():
                return
            if time.monotonic() - started >= self.healthy_after:
                wait = self.first_wait
            log.error(f"{self.name}_exited", exit_code=code, restart_in_seconds=wait)
            if self._stopping.wait(wait):
                return
            with self._lock:
                if self._stopping.is_set():
                    return
                self.restarts += 1
                self._child = self.start(self.restarts)
            log.warning(f"{self.name}_restarted", restarts=self.restarts, pid=self._child.pid)
            wait = min(wait * 2, self.longest_wait)


def _stop_child(child: subprocess.Popen[bytes]) -> None:
    """Ask nicely, then firmly: no worker may outlive `signup up`.

    SIGTERM, not SIGINT: a running worker or mailer takes either as its stop, but one still
    importing (the mailer starts last) died of SIGINT with a KeyboardInterrupt traceback,
    and dies of SIGTERM quietly."""
    for stop, grace in ((signal.SIGTERM, 20), (signal.SIGKILL, 5)):
        if child.poll() is not None:
            return
        child.send_signal(stop)
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.wait(grace)
