"""Runs the status model's changes (``Change`` in projections/registration_status.py) on its
read model: one conditional UPDATE each, through the view queries read, so that the status
is read and changed in one step whoever else writes the row meanwhile."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import RowMapping, text
from sqlalchemy.ext.asyncio import AsyncConnection

from projections.registration_status import LAYOUT, Change


async def apply_change(
    conn: AsyncConnection,
    registration_id: uuid.UUID | Sequence[uuid.UUID],
    change: Change,
    *,
    unless: str = "",
    params: Mapping[str, Any] | None = None,
    returning: Sequence[str] = (),
) -> Sequence[RowMapping]:
    """``change`` on the registration's row (or on each of several registrations' rows, in
    one statement), in the caller's transaction; ``unless``: a further condition, in SQL
    (with ``params``; ``:rid`` is the registration), under which the row stays as it is.
    The changed rows' ``returning`` columns."""
    sets = [f"{column} = :set_{column}" for column in change.values]
    # The written-at columns say when the row last changed.
    sets += [f"{c.name} = now()" for c in LAYOUT.columns if c.written_at]
    froms = [f":from_{i}" for i in range(len(change.from_statuses))]
    many = not isinstance(registration_id, uuid.UUID)
    if many and unless:
        raise ValueError("unless names one registration (:rid)")
    which = "= ANY(CAST(:rid AS uuid[]))" if many else "= :rid"
    statement = (
        f"UPDATE {LAYOUT.view} SET {', '.join(sets)}"
        f" WHERE registration_id {which} AND status IN ({', '.join(froms)})"
    )
    if unless:
        statement += f" AND NOT ({unless})"
    if returning:
        statement += f" RETURNING {', '.join(returning)}"
    values = {
        "rid": list(registration_id) if many else registration_id,  # type: ignore[arg-type]
        **{f"set_{column}": value for column, value in change.values.items()},
        **{f"from_{i}": status for i, status in enumerate(change.from_statuses)},
        **(params or {}),
    }
    result = await conn.execute(text(statement), values)
    return result.mappings().all() if returning else []
