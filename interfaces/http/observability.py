"""Each request, observed once: a request id bound for everything logged inside it, the
canonical log line, and the Prometheus request metrics, in one pass around the app.

One layer instead of two (the log line's and Litestar's Prometheus middleware, which builds a
``Request`` and four label sets per request): together they were a tenth of a signup's cost.
What is left of that cost is kept small: the JSON log line is encoded straight from its fields
(structlog's processor chain cost twice as much), and the request metrics are tallied in memory
and added to Prometheus' values a few times a second (in multiprocess mode each value is a locked
write into a shared file, three a request).
"""

from __future__ import annotations

import asyncio
import atexit
import os
import time
from bisect import bisect_left
from collections.abc import Callable, Iterable
from typing import Any

import msgspec
import structlog
from litestar.enums import ScopeType
from litestar.types import ASGIApp, Message, Receive, Scope, Send
from prometheus_client import Counter, Histogram

from infrastructure.logging import fast_lines, timestamp

log = structlog.get_logger("signup.http")
_encode = msgspec.json.Encoder().encode

APP_NAME = "signup"
_LABELS = ("method", "path", "status_code", "app_name")

REQUESTS = Counter("signup_http_requests", "Total requests", _LABELS)
REQUEST_SECONDS = Histogram(
    "signup_http_request_duration_seconds", "Request duration, in seconds", _LABELS
)
ERRORS = Counter("signup_http_requests_error", "Total errors in requests", _LABELS)

# A client's id is echoed in logs and answers: only printable ASCII, and not too much of it.
_REQUEST_ID_MAX = 128


def _request_id(headers: Iterable[tuple[bytes, bytes]]) -> str:
    for name, value in headers:
        if name == b"x-request-id":
            given = value[:_REQUEST_ID_MAX]
            if given and given.isascii() and given.decode().isprintable():
                return given.decode()
            break
    return os.urandom(16).hex()


class _Series:
    """The metric children of one (method, path, status), and what was observed since they
    were last added to. Label lookups cost more than an observation, so each set is looked up
    once per process; observations are tallied here and added by ``flush``."""

    __slots__ = ("bounds", "buckets", "count", "error", "seconds", "tallied", "total")

    def __init__(self, labels: tuple[str, str, str, str]) -> None:
        self.count = REQUESTS.labels(*labels)
        self.seconds = REQUEST_SECONDS.labels(*labels)
        self.error = ERRORS.labels(*labels) if int(labels[2]) >= 500 else None
        # The histogram's own bounds (the last is +Inf): a duration goes in the first bucket
        # whose bound is not below it, as Histogram.observe puts it.
        self.bounds: list[float] = self.seconds._upper_bounds
        self.buckets = [0] * len(self.bounds)
        self.tallied = 0
        self.total = 0.0

    def observe(self, seconds: float) -> None:
        self.tallied += 1
        self.total += seconds
        self.buckets[bisect_left(self.bounds, seconds)] += 1

    def flush(self) -> None:
        """Add the tally to Prometheus' values: what ``observe`` and ``inc`` would have added
        one request at a time (``Histogram.observe`` adds to ``_sum`` and one ``_buckets``
        value; prometheus_client has no call that adds many observations at once)."""
        tallied, self.tallied = self.tallied, 0
        if not tallied:
            return
        total, self.total = self.total, 0.0
        buckets, self.buckets = self.buckets, [0] * len(self.bounds)
        self.count.inc(tallied)
        if self.error is not None:
            self.error.inc(tallied)
        self.seconds._sum.inc(total)
        for value, tally in zip(self.seconds._buckets, buckets, strict=True):
            if tally:
                value.inc(tally)


_series: dict[tuple[str, str, int], _Series] = {}
# Most a tally waits before it is added to the values a scrape reads.
FLUSH_EVERY_SECONDS = 0.5
_flush_timer: asyncio.TimerHandle | None = None


def flush() -> None:
    """Add every tally to Prometheus' values (before a scrape, on a timer, at exit)."""
    global _flush_timer
    if _flush_timer is not None:
        _flush_timer.cancel()
        _flush_timer = None
    for series in list(_series.values()):
        series.flush()


atexit.register(flush)


def _observe(method: str, path: str, status: int, seconds: float) -> None:
    global _flush_timer
    series = _series.get((method, path, status))
    if series is None:
        series = _series[(method, path, status)] = _Series((method, path, str(status), APP_NAME))
    series.observe(seconds)
    if _flush_timer is None:
        _flush_timer = asyncio.get_running_loop().call_later(FLUSH_EVERY_SECONDS, flush)


def observe(app: ASGIApp) -> ASGIApp:
    bind: Callable[..., Any] = structlog.contextvars.bind_contextvars

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await app(scope, receive, send)
            return
        request_id = _request_id(scope["headers"])
        # Each request runs in a task of its own, in a copy of the server's context where
        # nothing is bound: binding is enough, there is nothing to clear.
        bind(request_id=request_id)
        status = 500
        started = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [
                    *message.get("headers", ()),
                    (b"x-request-id", request_id.encode()),
                ]
            await send(message)

        try:
            await app(scope, receive, send_with_id)
        finally:
            seconds = time.perf_counter() - started
            method = scope["method"]
            # The route's template (/registrations/{registration_id}), not the path: one
            # series per route, whatever ids are asked for.
            _observe(method, scope.get("path_template", scope["path"]), status, seconds)
            duration_ms = round(seconds * 1000, 2)
            lines = fast_lines()
            if lines is None:
                log.info(
                    "request",
                    method=method,
                    path=scope["path"],
                    status=status,
                    duration_ms=duration_ms,
                )
            else:
                # The line structlog's JSON chain would write, encoded from its fields.
                lines.msg(
                    _encode(
                        {
                            "method": method,
                            "path": scope["path"],
                            "status": status,
                            "duration_ms": duration_ms,
                            "event": "request",
                            "request_id": request_id,
                            "level": "info",
                            "timestamp": timestamp(),
                        }
                    )
                )

    return middleware
