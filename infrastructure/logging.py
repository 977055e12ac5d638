"""structlog set-up: JSON lines in production, readable lines in a terminal."""

from __future__ import annotations

import asyncio
import atexit
import datetime
import logging
import sys
import threading
import time
from typing import Any, BinaryIO

import msgspec
import structlog

_encoder = msgspec.json.Encoder(enc_hook=repr)

# Most a line may wait before it is written; and as many bytes as are written at once.
FLUSH_EVERY_SECONDS = 0.1
_FLUSH_AT_BYTES = 64 * 1024


def _json(event: Any, **_: Any) -> bytes:
    """One JSON line, encoded in C; a value JSON has no type for is written as its repr."""
    return _encoder.encode(event)


class LineBuffer:
    """A structlog logger for JSON lines that writes them out a few times a second.

    Every request logs a line, and a write system call for each was a few per cent of what a
    signup costs the API. Lines are kept in memory for at most ``FLUSH_EVERY_SECONDS`` (64 KiB
    at most) and written whole, so they never interleave with another writer's mid-line. What
    a process killed with SIGKILL loses is that last fraction of a second of lines."""

    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream
        self._lines: list[bytes] = []
        self._size = 0
        self._lock = threading.Lock()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_loop: asyncio.AbstractEventLoop | None = None
        atexit.register(self.flush)

    def msg(self, message: bytes) -> None:
        with self._lock:
            self._lines.append(message + b"\n")
            self._size += len(message) + 1
            full = self._size >= _FLUSH_AT_BYTES
        if full:
            self.flush()
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no event loop (a command, a thread): write at once
            self.flush()
            return
        # A timer set on a loop that has since ended would never fire: set one on this loop.
        if self._timer is None or self._timer_loop is not loop:
            self._timer_loop = loop
            self._timer = loop.call_later(FLUSH_EVERY_SECONDS, self.flush)

    info = debug = warning = error = critical = exception = log = msg

    def flush(self) -> None:
        with self._lock:
            lines, self._lines, self._size = self._lines, [], 0
            timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()
        if lines:
            self._stream.write(b"".join(lines))
            self._stream.flush()


_buffers: dict[int, LineBuffer] = {}


def _line_buffer(*_: Any) -> LineBuffer:
    """One buffer per stream, shared by every logger."""
    stream = sys.stderr.buffer
    found = _buffers.get(id(stream))
    if found is None:
        found = _buffers[id(stream)] = LineBuffer(stream)
    return found


# The buffer of JSON lines while INFO lines are written as JSON, for the one line every
# request logs (``fast_lines``); None while lines are for a terminal or INFO is filtered out.
_fast_lines: LineBuffer | None = None


def fast_lines() -> LineBuffer | None:
    """Where a hot path may write a JSON line it encoded itself, past structlog's processor
    chain (9 us a line against 4): None when it must log through structlog."""
    return _fast_lines


# The date and time to the second, formatted once a second: every request's line has a
# timestamp, and formatting a datetime each time cost 1.4 us against 0.5. One tuple, so that a
# thread never reads one second's text with another's number.
_second: tuple[int, str] = (-1, "")


def timestamp(now_ns: int | None = None) -> str:
    """Now (or ``now_ns``, nanoseconds since the epoch), as structlog's
    ``TimeStamper(fmt="iso", utc=True)`` writes it: to the microsecond, which is left out when
    it is zero, and "Z" for UTC."""
    global _second
    seconds, nanoseconds = divmod(time.time_ns() if now_ns is None else now_ns, 1_000_000_000)
    second, text = _second
    if seconds != second:
        moment = datetime.datetime.fromtimestamp(seconds, tz=datetime.UTC)
        text = moment.strftime("%Y-%m-%dT%H:%M:%S")
        _second = (seconds, text)
    microseconds = nanoseconds // 1000
    return f"{text}.{microseconds:06d}Z" if microseconds else f"{text}Z"


def configure_logging(log_format: str = "auto", level: str = "INFO") -> None:
    global _fast_lines
    pretty = sys.stderr.isatty() if log_format == "auto" else log_format == "console"
    threshold = logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
    _fast_lines = None if pretty or threshold > logging.INFO else _line_buffer()
    renderer: structlog.types.Processor = (
        structlog.dev.ConsoleRenderer() if pretty else structlog.processors.JSONRenderer(_json)
    )
    # The console renderer makes text for a person watching, written at once; the JSON one
    # bytes, written a few times a second.
    factory: Any = structlog.PrintLoggerFactory(sys.stderr) if pretty else _line_buffer
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(threshold),
        logger_factory=factory,
        cache_logger_on_first_use=True,
    )
    _route_standard_logging(pretty, threshold)


class _Lines(logging.Handler):
    """Writes a record, formatted as one JSON line, through the process's line buffer, in
    order with structlog's lines and never interleaved with them mid-line.

    Written at once, with whatever the buffer holds: these records are few (a server's start
    and stop, warnings), and an API process spawned by uvicorn ends by raising the SIGTERM it
    was stopped with again, which skips the buffer's exit flush. Its last record ("Finished
    server process") so writes out every line before it."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            lines = _line_buffer()
            lines.msg(self.format(record).encode())
            lines.flush()
        except Exception:  # as logging.StreamHandler does: a log line never raises
            self.handleError(record)


def _route_standard_logging(pretty: bool, threshold: int) -> None:
    """The standard library's records (uvicorn's start and stop, asyncio's, psycopg's pool,
    the embedded servers') in the same shape as the process's own lines.

    Before, Litestar's default logging config printed them as text ("INFO - 2026-... -
    uvicorn.error - ...") among the JSON lines of the API, a line a log pipeline parsing
    JSON could not read; in the worker and the commands, Python printed only warnings, bare.
    Each record becomes ``{"event": message, "logger": name, "level", "timestamp"}`` (and
    ``exception``, its traceback), rendered by structlog's own formatter for foreign records.
    """
    renderer: structlog.types.Processor = (
        structlog.dev.ConsoleRenderer()
        if pretty
        else structlog.processors.JSONRenderer(lambda event, **_: _json(event).decode())
    )
    handler: logging.Handler = logging.StreamHandler(sys.stderr) if pretty else _Lines()
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
            foreign_pre_chain=[
                structlog.stdlib.add_logger_name,
                structlog.processors.add_log_level,
                structlog.processors.TimeStamper(fmt="iso", utc=True),
                structlog.processors.format_exc_info,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(threshold)
