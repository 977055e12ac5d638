"""What the bench learns from the target besides its answers to the load.

Plain ``urllib`` in a thread: a few requests a second do not need the generator's clients,
and the parent process stays free of an event loop.

- reachability and which optional endpoints exist (``GET /registrations/{id}``, ``/metrics``);
- ``/metrics`` once a second: projection lag per projection and the event-store batch-size
  histogram, when the server exports them;
- CPU used by the server's processes, found by the port they listen on, so the report can
  say whether the server or the generator ran out of CPU.
"""

from __future__ import annotations

import contextlib
import json
import re
import threading
import time
import urllib.error
import urllib.request
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Final
from urllib.parse import urlsplit

import psutil

LAG_METRIC: Final = "signup_projection_lag_events"
BATCH_METRIC: Final = "signup_event_store_batch_size"
UNAVAILABLE: Final = "unavailable"

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


class Unreachable(Exception):
    """No HTTP answer at all from the target."""


def get(url: str, timeout: float = 2.0) -> tuple[int, bytes]:
    """Status and body of ``GET url``; any HTTP status is an answer, only no answer raises."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return int(response.status), bytes(response.read())
    except urllib.error.HTTPError as error:
        return int(error.code), bytes(error.read())
    except (urllib.error.URLError, OSError) as error:
        raise Unreachable(f"{url}: {getattr(error, 'reason', error)}") from None


def wait_until_answering(url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            status, _ = get(f"{url}/health/live", timeout=1.0)
            if status == 200:
                return
        except Unreachable:
            if time.monotonic() > deadline:
                raise
        if time.monotonic() > deadline:
            raise Unreachable(f"{url}/health/live did not answer 200 in {timeout}s")
        time.sleep(0.1)


def has_status_endpoint(url: str) -> bool:
    """Whether the target documents ``GET /registrations/{id}`` in its OpenAPI schema.

    The endpoint answers 404 for an unknown id, and so does a server without the endpoint,
    so only the schema tells them apart.
    """
    try:
        status, body = get(f"{url}/schema/openapi.json", timeout=5.0)
    except Unreachable:
        return False
    if status != 200:
        return False
    paths = json.loads(body).get("paths", {})
    return any(
        path.startswith("/registrations/{") and "get" in operations
        for path, operations in paths.items()
    )


def parse_prometheus(text: str) -> list[tuple[str, dict[str, str], float]]:
    """The samples of a Prometheus text exposition: (name, labels, value)."""
    samples = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = _SAMPLE.match(line)
        if match is None:
            continue
        name, labels, value = match.groups()
        try:
            number = float(value)
        except ValueError:
            continue
        samples.append((name, dict(_LABEL.findall(labels or "")), number))
    return samples


@dataclass(frozen=True, slots=True)
class Scrape:
    at: float
    """Seconds since the start of the run."""
    lag: dict[str, float]
    batch_buckets: dict[float, float]
    """Cumulative count per upper bound (``le``), summed over any other labels."""
    batch_sum: float
    batch_count: float


def read_scrape(text: str, at: float) -> Scrape:
    lag: dict[str, float] = {}
    buckets: dict[float, float] = defaultdict(float)
    total = count = 0.0
    for name, labels, value in parse_prometheus(text):
        if name == LAG_METRIC:
            projection = labels.get("projection", "")
            lag[projection] = lag.get(projection, 0.0) + value
        elif name == f"{BATCH_METRIC}_bucket" and "le" in labels:
            buckets[float(labels["le"])] += value
        elif name == f"{BATCH_METRIC}_sum":
            total += value
        elif name == f"{BATCH_METRIC}_count":
            count += value
    return Scrape(at, lag, dict(buckets), total, count)


@dataclass
class Scraper:
    """Scrapes ``/metrics`` once a second in a thread while the load runs."""

    url: str
    start: float
    scrapes: list[Scrape] = field(default_factory=list)
    status: str = "pending"
    """``measured``, or ``unavailable`` when /metrics does not answer 200."""
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def begin(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="bench-scraper", daemon=True)
        self._thread.start()

    def finish(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        self.scrape_once()  # the final state, after the load stopped

    def scrape_once(self) -> None:
        if self.status == UNAVAILABLE:
            return
        try:
            code, body = get(f"{self.url}/metrics", timeout=2.0)
        except Unreachable:
            return  # a busy server may miss one scrape; the next one is a second away
        if code != 200:
            self.status = UNAVAILABLE
            return
        self.status = "measured"
        self.scrapes.append(
            read_scrape(body.decode(errors="replace"), time.monotonic() - self.start)
        )

    def _loop(self) -> None:
        while not self._stop.is_set():
            began = time.monotonic()
            self.scrape_once()
            self._stop.wait(max(0.0, 1.0 - (time.monotonic() - began)))


def _serving(listening: list[psutil.Process]) -> list[psutil.Process]:
    """Of the processes listening on a port, those that serve it: with no listening
    descendant. A supervisor holds the socket it hands to its API processes without serving
    from it, and ``signup up``'s own process also runs the embedded SMTP sink: counted as an
    API process, the mail it took in was put down to the API (~8 % of the figure at c64)."""
    pids = {process.pid for process in listening}
    supervisors: set[int] = set()
    for process in listening:
        with contextlib.suppress(psutil.Error):
            supervisors.update(parent.pid for parent in process.parents() if parent.pid in pids)
    return [process for process in listening if process.pid not in supervisors]


def _listening_processes(url: str) -> list[psutil.Process]:
    """Every process listening on the URL's port: the API processes and the supervisor that
    shares their socket, not the worker or the databases. The system's table names one
    process per socket, so its relatives are asked too."""
    port = urlsplit(url).port or 80

    def listens(process: psutil.Process) -> bool:
        with contextlib.suppress(psutil.Error):
            return any(
                c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port
                for c in process.net_connections(kind="tcp")
            )
        return False

    found: dict[int, psutil.Process] = {}
    try:
        for connection in psutil.net_connections(kind="tcp"):
            if (
                connection.status == psutil.CONN_LISTEN
                and connection.laddr
                and connection.laddr.port == port
                and connection.pid
            ):
                found.setdefault(connection.pid, psutil.Process(connection.pid))
    except (psutil.AccessDenied, psutil.NoSuchProcess):
        return []
    # Up to the topmost process sharing the socket, then down to all who share it.
    tops = []
    for process in list(found.values()):
        top = process
        with contextlib.suppress(psutil.Error):
            while (parent := top.parent()) is not None and listens(parent):
                top = parent
        tops.append(top)
    for top in tops:
        found.setdefault(top.pid, top)
        with contextlib.suppress(psutil.Error):
            for child in top.children(recursive=True):
                if child.pid not in found and listens(child):
                    found[child.pid] = child
    return sorted(found.values(), key=lambda process: process.pid)


def _root(processes: list[psutil.Process]) -> psutil.Process | None:
    """The one of them the others descend from (the first if none does)."""
    pids = {process.pid for process in processes}
    for process in processes:
        with contextlib.suppress(psutil.Error):
            if process.ppid() not in pids:
                return process
    return processes[0] if processes else None


def _tree(root: psutil.Process) -> list[psutil.Process]:
    processes = [root]
    with contextlib.suppress(psutil.Error):
        processes += root.children(recursive=True)
    return processes


_BUSY_FIELDS: Final = ("user", "nice", "system", "irq", "softirq", "steal")


def _machine_busy() -> float:
    """CPU seconds the whole machine spent busy (guest time is already inside user)."""
    times = psutil.cpu_times()
    return sum(getattr(times, name, 0.0) for name in _BUSY_FIELDS)


def _cpu_by_process() -> dict[int, tuple[str, float]]:
    """Every process's name and CPU seconds so far."""
    found = {}
    for process in psutil.process_iter(["name", "cpu_times"]):
        times = process.info["cpu_times"]
        if times is not None:
            found[process.pid] = (process.info["name"] or "?", times.user + times.system)
    return found


class CpuMeter:
    """Where the machine's CPU went between ``begin`` and ``end``.

    Per process rather than only the server's tree: an embedded or local PostgreSQL is not a
    child of the API (it daemonises), and on a shared machine other work shows up too. The
    server's tree is found by the port it listens on.
    """

    def __init__(self, url: str, generator_pids: list[int]) -> None:
        listening = _listening_processes(url)
        self._api = _serving(listening)
        self._server = _root(listening)
        self._generators = set(generator_pids)
        self._url = url
        self._before: dict[int, tuple[str, float]] = {}
        self._machine_start = 0.0
        self._wall_start = 0.0

    def begin(self) -> None:
        self._before = _cpu_by_process()
        self._machine_start = _machine_busy()
        self._wall_start = time.monotonic()

    def end(self) -> dict[str, object]:
        wall = max(time.monotonic() - self._wall_start, 1e-9)
        busy = _machine_busy() - self._machine_start
        after = _cpu_by_process()
        server = {p.pid for p in _tree(self._server)} if self._server is not None else set()
        # Listening now, or at the start: API processes may be started or replaced meanwhile.
        api = {p.pid for p in self._api} | {
            p.pid for p in _serving(_listening_processes(self._url))
        }

        def percent(seconds: float) -> float:
            # Percent of one core, like top: 200 means two cores fully busy.
            return round(100 * seconds / wall, 1)

        used: dict[int, float] = {}
        by_name: dict[str, float] = defaultdict(float)
        for pid, (name, seconds) in after.items():
            # A process born during the run started from zero.
            delta = seconds - self._before.get(pid, (name, 0.0))[1]
            used[pid] = delta
            if pid in api:
                label = f"api {name} {pid}"
            elif pid in server:
                label = f"server {name} {pid}"
            elif pid in self._generators:
                label = "bench generator"
            else:
                label = name
            by_name[label] += delta
        top = sorted(by_name.items(), key=lambda item: -item[1])[:8]
        return {
            "cores": psutil.cpu_count(),
            "wall_s": round(wall, 2),
            "machine_busy_percent": percent(busy),
            "generator_percent_per_process": [
                percent(used.get(pid, 0.0)) for pid in sorted(self._generators)
            ],
            "server_percent": (
                percent(sum(used.get(pid, 0.0) for pid in server)) if server else UNAVAILABLE
            ),
            "server_pid": self._server.pid if self._server is not None else None,
            # CPU seconds of the processes serving the port: what the API itself costs.
            "api_cpu_s": round(sum(used.get(pid, 0.0) for pid in api), 3) if api else None,
            "api_processes": len(api),
            "top_percent_by_process": {label: percent(seconds) for label, seconds in top},
            # Busy time no live process accounts for: processes that ended during the run
            # (another test suite, a shell loop) and the kernel's own work.
            "unaccounted_percent": percent(max(0.0, busy - sum(used.values()))),
        }
