"""structlog set-up: JSON lines in production, readable lines in a terminal."""

from __future__ import annotations

import logging
import sys
from typing import Any

import msgspec
import structlog

_encoder = msgspec.json.Encoder(enc_hook=repr)


def _json(event: Any, **_: Any) -> bytes:
    """One JSON line, encoded in C; a value JSON has no type for is written as its repr."""
    return _encoder.encode(event)


def configure_logging(log_format: str = "auto", level: str = "INFO") -> None:
    pretty = sys.stderr.isatty() if log_format == "auto" else log_format == "console"
    renderer: structlog.types.Processor = (
        structlog.dev.ConsoleRenderer() if pretty else structlog.processors.JSONRenderer(_json)
    )
    # The console renderer makes text, the JSON one bytes (written without re-encoding).
    factory: Any = (
        structlog.PrintLoggerFactory(sys.stderr)
        if pretty
        else structlog.BytesLoggerFactory(sys.stderr.buffer)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
        ),
        logger_factory=factory,
        cache_logger_on_first_use=True,
    )
