"""What may be said of an error in a log line or a stored note: its class, its SQLSTATE and
where it was raised, never its message. A database error's message can quote the row it
failed on (PostgreSQL's "Failing row contains (...)"), and so a person's email or CPF."""

from __future__ import annotations

import os
import traceback


def _sqlstate(error: BaseException) -> str | None:
    # asyncpg and psycopg name it sqlstate; SQLAlchemy wraps the driver's error in .orig.
    for candidate in (error, getattr(error, "orig", None), error.__cause__):
        state = getattr(candidate, "sqlstate", None)
        if isinstance(state, str) and state:
            return state
    return None


def describe(error: BaseException) -> str:
    """``ClassName [SQLSTATE 23502] at file.py:123``: enough to find the fault, nothing typed."""
    text = type(error).__name__
    state = _sqlstate(error)
    if state is not None:
        text += f" [SQLSTATE {state}]"
    frames = traceback.extract_tb(error.__traceback__)
    if frames:
        last = frames[-1]
        text += f" at {os.path.basename(last.filename)}:{last.lineno}"
    return text
