"""Runs one measurement: spawns the load-generating processes and gathers what they measure.

The parent process generates no load. It starts the workers, gives them a common start time
(``time.monotonic`` is one clock for every process on a machine), merges their per-second
records into one timeline, prints progress once a second on stderr, and meanwhile scrapes the
target's ``/metrics`` and measures CPU.
"""

from __future__ import annotations

import multiprocessing
import queue
import secrets
import sys
import time
from dataclasses import dataclass, field
from typing import Any, TextIO

from bench.bodies import CPF_SPACE, Mix
from bench.config import BenchConfig
from bench.generator import WorkerDone, WorkerPlan, work
from bench.probe import CpuMeter, Scraper
from bench.stats import Histogram, Second

_READY_TIMEOUT = 60.0
_START_DELAY = 0.2
"""Seconds between the start signal and the common start time, so every worker starts on
time rather than when it happens to wake up."""


class WorkerFailed(Exception):
    pass


@dataclass
class Measurement:
    label: str
    url: str
    run_id: str
    timeline: dict[int, Second] = field(default_factory=dict)
    duration_s: float = 0.0
    """From the start to the last POST answer."""
    cpu: dict[str, Any] = field(default_factory=dict)
    scraper: Scraper | None = None
    status_endpoint: bool = False


def _shares(total: int, parts: int) -> list[int]:
    """``total`` split into ``parts`` integers differing by at most one."""
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def _plans(config: BenchConfig, url: str, run_id: str, status_endpoint: bool) -> list[WorkerPlan]:
    processes = config.processes
    concurrency = _shares(max(config.concurrency, processes), processes)
    connections = _shares(config.connections, processes)
    counts = _shares(config.count, processes) if config.count is not None else None
    # A random block of the CPF space per run, so runs against one database do not collide.
    offset = secrets.randbelow(CPF_SPACE)
    mix = Mix(duplicates=config.duplicates, invalid=config.invalid, pj=config.pj)
    return [
        WorkerPlan(
            url=url,
            process=index,
            processes=processes,
            client=config.client,
            concurrency=concurrency[index],
            rate=config.rate / processes if config.rate is not None else None,
            connections=connections[index],
            count=counts[index] if counts is not None else None,
            duration=config.duration,
            mix=mix,
            poll_completion=config.poll_completion if status_endpoint else 0.0,
            poll_timeout=config.poll_timeout,
            timeout=config.timeout,
            run_id=run_id,
            offset=offset,
            seed=config.seed,
            client_addresses=config.client_addresses,
            policy=config.generator_policy,
        )
        for index in range(processes)
    ]


class _Progress:
    """The once-a-second line on stderr."""

    def __init__(self, label: str, stream: TextIO) -> None:
        self._label = label
        self._stream = stream
        self._sent = 0
        self._errors = 0
        self._latency = Histogram()

    def add(self, seconds: dict[int, Second]) -> None:
        for second in seconds.values():
            self._sent += second.sent
            self._errors += sum(second.errors.values()) + sum(
                n for status, n in second.statuses.items() if status >= 500
            )
            self._latency.merge(second.accept_latency)

    def show(self, elapsed: float, timeline: dict[int, Second]) -> None:
        # The last second every worker has flushed is one behind the clock.
        last = timeline.get(int(elapsed) - 1)
        rate = last.accepted if last is not None else 0
        p99 = self._latency.percentile(0.99)
        p99_text = f"{p99 * 1000:7.1f} ms" if p99 is not None else "      - ms"
        self._stream.write(
            f"[{self._label}] {elapsed:6.1f}s  sent {self._sent:>9}  accepted/s {rate:>7}  "
            f"p99 {p99_text}  errors {self._errors}\n"
        )
        self._stream.flush()


def measure(
    config: BenchConfig,
    url: str,
    label: str,
    *,
    status_endpoint: bool,
    scrape: bool,
    stream: TextIO = sys.stderr,
) -> Measurement:
    run_id = secrets.token_hex(4)
    measurement = Measurement(label, url, run_id, status_endpoint=status_endpoint)
    context = multiprocessing.get_context("spawn")
    out: Any = context.Queue()
    go = context.Event()
    start_at: Any = context.Value("d", 0.0)
    workers = [
        context.Process(
            target=work, args=(plan, out, go, start_at), name=f"bench-{plan.process}", daemon=True
        )
        for plan in _plans(config, url, run_id, status_endpoint)
    ]
    for worker in workers:
        worker.start()
    try:
        return _drive(measurement, workers, out, go, start_at, scrape, stream)
    finally:
        for worker in workers:
            if worker.is_alive():
                worker.terminate()
            worker.join(5)


def _drive(
    measurement: Measurement,
    workers: list[Any],
    out: Any,
    go: Any,
    start_at: Any,
    scrape: bool,
    stream: TextIO,
) -> Measurement:
    ready = 0
    deadline = time.monotonic() + _READY_TIMEOUT
    while ready < len(workers):
        message = _next_message(out, deadline - time.monotonic(), workers)
        if message[0] == "ready":
            ready += 1
    cpu = CpuMeter(measurement.url, [worker.pid for worker in workers])
    start = time.monotonic() + _START_DELAY
    start_at.value = start
    scraper = Scraper(measurement.url, start) if scrape else None
    cpu.begin()
    if scraper is not None:
        scraper.begin()
    go.set()

    progress = _Progress(measurement.label, stream)
    done: dict[int, WorkerDone] = {}
    # Just after the workers flush each second (at +0.05 s), so the line shows whole seconds.
    next_tick = start + 1.2
    while len(done) < len(workers):
        timeout = max(0.0, next_tick - time.monotonic())
        message = _next_message(out, timeout, workers, allow_timeout=True)
        if message[0] == "seconds":
            seconds: dict[int, Second] = message[2]
            progress.add(seconds)
            for index, second in seconds.items():
                measurement.timeline.setdefault(index, Second()).merge(second)
        elif message[0] == "done":
            finished: WorkerDone = message[1]
            done[finished.process] = finished
        if time.monotonic() >= next_tick:
            progress.show(time.monotonic() - start, measurement.timeline)
            next_tick += 1.0
    if scraper is not None:
        scraper.finish()
    measurement.scraper = scraper
    measurement.cpu = cpu.end()
    last_answer = max(d.last_answer_at for d in done.values())
    measurement.duration_s = max(last_answer - start, 1e-9)
    return measurement


def _next_message(
    out: Any, timeout: float, workers: list[Any], *, allow_timeout: bool = False
) -> tuple[Any, ...]:
    try:
        message: tuple[Any, ...] = out.get(timeout=max(timeout, 0.0))
    except queue.Empty:
        dead = [w for w in workers if not w.is_alive() and w.exitcode not in (0, None)]
        if dead:
            raise WorkerFailed(f"load generator process exited with {dead[0].exitcode}") from None
        if allow_timeout:
            return ("tick",)
        raise WorkerFailed("load generator processes did not start in time") from None
    if message[0] == "failed":
        raise WorkerFailed(f"load generator process {message[1]} failed:\n{message[2]}")
    return message
