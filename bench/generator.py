"""One load-generating process: an asyncio loop sending its share of the load.

The parent starts ``--processes`` of these (spawned, so no event loop or thread state is
inherited) because one Python process tops out at a few thousand requests per second, and
the generator must not be what limits the measurement. Each process sends what it measured
to the parent once a second, as :class:`~bench.stats.Second` records keyed by
the second of the run they belong to.

Two ways of loading the server:

- fixed concurrency (closed loop): ``C`` coroutines each send, wait for the answer, send
  again; latency is measured from the send.
- fixed arrival rate (open loop): requests are started on a schedule whatever the server
  does; latency is measured from the *scheduled* start, so a server that stalls is charged
  for the requests that queued behind it (no coordinated omission).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import random
import signal
import time
import traceback
from collections import Counter
from dataclasses import dataclass
from multiprocessing.queues import Queue
from multiprocessing.sharedctypes import Synchronized
from multiprocessing.synchronize import Event
from typing import Any, Final

import msgspec

from bench.bodies import BodyFactory, Claim, Mix
from bench.client import HttpClient, RequestFailed, make_client
from bench.stats import Second

POLL_CONNECTIONS: Final = 4
"""Connections per process for status polls, apart from the POSTs so polls never take their
connections (and so do not change the concurrency being measured)."""

_FIRST_POLL_INTERVAL: Final = 0.01
_MAX_POLL_INTERVAL: Final = 0.25
_BACKLOG_PER_CONNECTION: Final = 20
"""Open loop: requests waiting for a connection beyond this many per connection are not sent
(counted as ``generator_backlog``), so a stalled server cannot make the generator hoard
memory without bound."""


_PREPARED_PER_SECOND: Final = 3_000
"""Bodies a closed-loop process prepares a second of its run: more than one process sends
against ``signup up`` on two cores (~1,700/s), fewer than against the bare baseline (~5,000/s),
which is bound by its one server process, not by the machine the generator shares."""
_PREPARED_MOST: Final = 100_000
"""At most (~70 MB a process); past them, bodies are made as they are sent."""


@dataclass(frozen=True, slots=True)
class WorkerPlan:
    """One process's share of the run."""

    url: str
    process: int
    processes: int
    client: str
    concurrency: int
    rate: float | None
    connections: int
    count: int | None
    duration: float | None
    mix: Mix
    poll_completion: float
    poll_timeout: float
    timeout: float
    run_id: str
    offset: int
    seed: int
    client_addresses: int
    """How many distinct clients to name in X-Forwarded-For; 0 sends no such header."""
    policy: str
    """The process's scheduling policy (``batch`` or ``normal``): see :func:`take_policy`."""


@dataclass(frozen=True, slots=True)
class WorkerDone:
    process: int
    last_answer_at: float
    """Monotonic time of the last POST answer (the clock is shared by the processes)."""


def work(plan: WorkerPlan, out: Queue[Any], go: Event, start_at: Synchronized[float]) -> None:
    """Process entry point: wait for the parent's start signal, run, report."""
    # Ctrl-C reaches the whole process group; the parent alone handles it (and ends us).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    take_policy(plan.policy)
    try:
        import uvloop  # same loop as the server: the generator's own overhead stays small

        uvloop.install()
    except ImportError:
        pass
    try:
        asyncio.run(_Worker(plan, out).run(go, start_at))
    except BaseException:
        out.put(("failed", plan.process, traceback.format_exc()))
        raise


def take_policy(policy: str) -> bool:
    """Run this process under ``policy``; whether it does.

    ``batch`` is Linux's SCHED_BATCH: the same share of the CPU, but a generator woken by an
    answer waits for the scheduler's next tick instead of preempting whoever runs, the
    server it measures included. Its clients on other machines never take a server's core;
    on a shared one each answer did, in the middle of the server's turn of its loop (on 2
    cores, interleaved pairs: the generator ~73 -> ~59 us and the API ~243 -> ~231 us a
    signup, the bare baseline unchanged; docs/performance.md). Elsewhere, or where it is
    refused, the process runs as it is.
    """
    if policy != "batch" or not hasattr(os, "SCHED_BATCH"):
        return False
    try:
        os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))
    except OSError:
        return False
    return True


def prepared_bodies(plan: WorkerPlan) -> int:
    """How many valid bodies a process makes before the start: what its share of the run is
    expected to send, at most ``_PREPARED_MOST``."""
    if plan.count is not None:
        expected = float(plan.count)
    elif plan.duration is None:
        expected = _PREPARED_MOST
    elif plan.rate is not None:
        expected = plan.rate * plan.duration
    else:
        expected = _PREPARED_PER_SECOND * plan.duration
    return min(_PREPARED_MOST, math.ceil(expected))


class _Worker:
    def __init__(self, plan: WorkerPlan, out: Queue[Any]) -> None:
        self._plan = plan
        self._out = out
        self._bodies = BodyFactory(
            plan.run_id, plan.offset, plan.process, plan.processes, plan.mix, plan.seed
        )
        self._random = random.Random(plan.seed * 7919 + plan.process)
        self._seconds: dict[int, Second] = {}
        self._start = 0.0
        self._end = float("inf")
        self._issued = 0
        self._last_answer_at = 0.0
        self._polls: set[asyncio.Task[None]] = set()
        self._decode = msgspec.json.Decoder().decode
        # Client pools open their connections lazily, so they can be built before the start.
        self._client: HttpClient = make_client(
            plan.client, plan.url, plan.connections, plan.timeout
        )
        self._poller: HttpClient = make_client(
            plan.client, plan.url, POLL_CONNECTIONS, plan.timeout
        )

    async def run(self, go: Event, start_at: Synchronized[float]) -> None:
        plan = self._plan
        self._bodies.prepare(prepared_bodies(plan))
        self._out.put(("ready", plan.process))
        await asyncio.get_running_loop().run_in_executor(None, go.wait)
        self._start = start_at.value
        if plan.duration is not None:
            self._end = self._start + plan.duration
        await asyncio.sleep(max(0.0, self._start - time.monotonic()))
        flusher = asyncio.create_task(self._flush_every_second())
        try:
            if plan.rate is not None:
                await self._open_loop(plan.rate)
            else:
                await asyncio.gather(*(self._closed_loop() for _ in range(plan.concurrency)))
            if self._polls:
                await asyncio.wait(self._polls)
        finally:
            flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await flusher
            await self._client.aclose()
            await self._poller.aclose()
        self._out.put(("seconds", plan.process, self._take_seconds(None)))
        self._out.put(("done", WorkerDone(plan.process, self._last_answer_at)))

    def _second(self, when: float) -> Second:
        index = int(when - self._start)
        second = self._seconds.get(index)
        if second is None:
            second = self._seconds[index] = Second()
        return second

    def _take_seconds(self, before: int | None) -> dict[int, Second]:
        """Remove and return the finished seconds (all of them when ``before`` is None)."""
        taken = {i: s for i, s in self._seconds.items() if before is None or i < before}
        for index in taken:
            del self._seconds[index]
        return taken

    async def _flush_every_second(self) -> None:
        tick = 1
        while True:
            # A little after the boundary, so answers finishing right at it are included.
            await asyncio.sleep(max(0.0, self._start + tick + 0.05 - time.monotonic()))
            self._out.put(("seconds", self._plan.process, self._take_seconds(tick)))
            tick += 1

    def _may_issue(self, at: float) -> bool:
        plan = self._plan
        if plan.count is not None:
            return self._issued < plan.count
        return at < self._end

    async def _closed_loop(self) -> None:
        while self._may_issue(time.monotonic()):
            self._issued += 1
            kind, body, claim = self._bodies.next()
            await self._post(kind, body, claim, time.monotonic())

    async def _open_loop(self, rate: float) -> None:
        interval = 1 / rate
        in_flight: set[asyncio.Task[None]] = set()
        backlog = self._plan.connections * _BACKLOG_PER_CONNECTION
        n = 0
        while True:
            due = self._start + n * interval
            if not self._may_issue(due):
                break
            now = time.monotonic()
            if due > now:
                await asyncio.sleep(due - now)
                continue
            n += 1
            self._issued += 1
            self._second(due).launch_delay.add(now - due)
            kind, body, claim = self._bodies.next()
            if len(in_flight) >= backlog:
                self._second(due).errors["generator_backlog"] += 1  # never sent
                continue
            task = asyncio.create_task(self._post(kind, body, claim, due))
            in_flight.add(task)
            task.add_done_callback(in_flight.discard)
        if in_flight:
            await asyncio.wait(in_flight)

    async def _post(self, kind: str, body: bytes, claim: Claim | None, started: float) -> None:
        self._second(started).sent += 1
        client = self._client_address()
        try:
            status, answer = await self._client.request("POST", "/registrations", body, client)
        except RequestFailed as error:
            now = time.monotonic()
            self._second(now).errors[error.kind] += 1
            self._last_answer_at = now
            if error.kind == "connect":
                # The server is gone or refusing: do not spin, and do not flood it when back.
                await asyncio.sleep(0.05)
            return
        now = time.monotonic()
        self._last_answer_at = now
        second = self._second(now)
        second.statuses[status] += 1
        by_kind = second.by_kind.get(kind)
        if by_kind is None:
            by_kind = second.by_kind[kind] = Counter()
        by_kind[status] += 1
        if status != 202:
            return
        second.accept_latency.add(now - started)
        if claim is not None:
            self._bodies.accepted(claim)
        plan = self._plan
        if plan.poll_completion and self._random.random() < plan.poll_completion:
            task = asyncio.create_task(self._poll(answer, now, client))
            self._polls.add(task)
            task.add_done_callback(self._polls.discard)

    def _client_address(self) -> str | None:
        """A client in 100.64.0.0/10, the carrier-grade NAT range most mobile signups come from."""
        if not self._plan.client_addresses:
            return None
        n = self._random.randrange(self._plan.client_addresses) % (1 << 22)
        return f"100.{64 + (n >> 16)}.{(n >> 8) & 255}.{n & 255}"

    async def _poll(self, answer: bytes, accepted_at: float, client: str | None) -> None:
        """Poll the registration's status until it is final; record how long that took.

        The interval starts at 10 ms and grows to 250 ms, so a registration completed within
        a few tens of milliseconds is timed closely and a slow one costs few requests; the
        time recorded is when completion was *seen*, at most one interval late. It polls from
        the client that signed up, as a person would (the server limits polls per client).
        """
        try:
            registration_id = self._decode(answer)["registration_id"]
        except (msgspec.DecodeError, KeyError, TypeError):
            self._second(accepted_at).completion_outcomes["bad_answer"] += 1
            return
        path = f"/registrations/{registration_id}"
        interval = _FIRST_POLL_INTERVAL
        deadline = accepted_at + self._plan.poll_timeout
        outcome = "timed_out"
        while time.monotonic() < deadline:
            try:
                status, body = await self._poller.request("GET", path, forwarded_for=client)
            except RequestFailed:
                status, body = 0, b""
            if status == 200:
                state = self._decode(body).get("status")
                if state in ("completed", "failed"):
                    now = time.monotonic()
                    if state == "completed":
                        self._second(now).completion.add(now - accepted_at)
                    outcome = state
                    break
            # 404 is tolerated: the status read model may not have the registration yet.
            await asyncio.sleep(interval)
            interval = min(interval * 1.5, _MAX_POLL_INTERVAL)
        self._second(time.monotonic()).completion_outcomes[outcome] += 1
