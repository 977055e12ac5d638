"""Rebuilding a projection: every event replayed into a new table beside the live one, then
the view switched to it atomically."""

from __future__ import annotations

import time
from collections.abc import Callable

import structlog
from sqlalchemy import text

from infrastructure.read_side.projector import Projector

log = structlog.get_logger(__name__)


class RebuildInProgress(Exception):
    """Another process is rebuilding this projection."""


async def rebuild(
    projector: Projector, progress: Callable[[int, int], None] | None = None
) -> tuple[str, str]:
    """Replay every event into a new table beside the live one, then switch atomically.

    Returns (old table, new table). Queries read the old table until the switch. One
    rebuild of a projection at a time (``RebuildInProgress`` otherwise); it first drops
    what a killed rebuild left behind.
    """
    store = projector.store
    async with store.engine.connect() as conn:
        # A session lock, on a connection outside any transaction: held for as long as the
        # rebuild runs without keeping a transaction open (which would hold back vacuum),
        # and released by PostgreSQL if this process dies.
        held = await conn.execution_options(isolation_level="AUTOCOMMIT")
        key = {"key": f"signup_rebuild:{projector.name}"}
        taken = await held.execute(text("SELECT pg_try_advisory_lock(hashtext(:key))"), key)
        if not taken.scalar_one():
            raise RebuildInProgress(projector.name)
        try:
            await _drop_leftovers(projector)
            return await _rebuild(projector, progress)
        finally:
            await held.execute(text("SELECT pg_advisory_unlock(hashtext(:key))"), key)


async def _drop_leftovers(projector: Projector) -> None:
    # Under the rebuild lock, a table that is neither active nor being filled by this
    # rebuild is a killed rebuild's half-filled table.
    store = projector.store
    active = await store.active_table()
    async with store.engine.connect() as conn:
        tables = await store.tables(conn)
    for table in tables:
        if table != active:
            log.info("dropping_leftover_table", projection=projector.name, table=table)
            await store.drop(table)


async def _rebuild(
    projector: Projector, progress: Callable[[int, int], None] | None
) -> tuple[str, str]:
    store, source = projector.store, projector.source
    # Milliseconds: two rebuilds within one second must not pick the live table's name.
    new_table = f"{projector.projection.table_version}_r{time.time_ns() // 1_000_000}"
    if new_table == await store.active_table():
        raise RebuildInProgress(projector.name)
    async with store.engine.begin() as conn:
        await store.create_table(conn, new_table)
    head = await source.head()
    while await projector.step(new_table) > 0:
        if progress is not None:
            progress(await store.position(new_table), head)
        head = max(head, await source.head())
    # The switch: lock the catalog row (live batches wait), catch up the last events,
    # and point the view at the new table, in one transaction.
    async with store.engine.begin() as conn:
        await store.lock_catalog(conn)
        while True:
            moved = await projector.step(new_table)
            if moved == 0:
                break
        old_table = await store.switch(conn, new_table)
    projector.stop_reading_ahead()
    await store.drop(old_table)
    if progress is not None:
        progress(await store.position(new_table), await source.head())
    return old_table, new_table
