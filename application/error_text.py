"""What may be said of an error in a log line or a stored note.

A database error is told by its class, its SQLSTATE and where it was raised, never by its
message: that can quote the row it failed on (PostgreSQL's "Failing row contains (...)"), and
so a person's email or CPF. Other errors keep their message, which our code wrote and an
operator needs to fix the fault (a dead letter shows it)."""

from __future__ import annotations

import os
import traceback

_DRIVERS = ("asyncpg", "psycopg", "sqlalchemy", "redis")


def _sqlstate(error: BaseException) -> str | None:
    # asyncpg and psycopg name it sqlstate; SQLAlchemy wraps the driver's error in .orig.
    for candidate in (error, getattr(error, "orig", None), error.__cause__):
        state = getattr(candidate, "sqlstate", None)
        if isinstance(state, str) and state:
            return state
    return None


def _from_a_driver(error: BaseException) -> bool:
    return type(error).__module__.split(".")[0] in _DRIVERS


def describe(error: BaseException) -> str:
    """``NotNullViolationError [SQLSTATE 23502] at file.py:123`` for a database error,
    ``RuntimeError: message at file.py:123`` for any other."""
    text = type(error).__name__
    state = _sqlstate(error)
    if state is not None:
        text += f" [SQLSTATE {state}]"
    elif not _from_a_driver(error):
        text += f": {error}"
    frames = traceback.extract_tb(error.__traceback__)
    if frames:
        last = frames[-1]
        text += f" at {os.path.basename(last.filename)}:{last.lineno}"
    return text
