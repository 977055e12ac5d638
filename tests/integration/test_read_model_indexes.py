"""Erasure and expiry delete a registration's rows from every read model by its id: each such
delete must find them by index, or it reads a table with a row for everyone who signed up
(tens of millions a day), once per erased or expired person."""

from __future__ import annotations

import asyncio
import uuid

import psycopg
from sqlalchemy import text

from infrastructure.composition.operations import migrate
from infrastructure.composition.read_side import open_read_side
from infrastructure.settings import Settings


async def _tables_read_whole(settings: Settings) -> list[str]:
    """The read models' tables where deleting a registration's rows scans the table."""
    read_side = open_read_side(settings)
    scanned = []
    try:
        for projector in read_side.all_projectors:
            async with projector.store.engine.begin() as conn:
                # Any usable index is then taken, however few rows the table holds now.
                await conn.execute(text("SET LOCAL enable_seqscan = off"))
                for table in await projector.store.tables(conn):
                    # As ProjectionStore._keep_out deletes (an erasure's one, a sweep's many).
                    plan = await conn.execute(
                        text(
                            f'EXPLAIN DELETE FROM "{table}"'
                            " WHERE registration_id = ANY(CAST(:ids AS uuid[]))"
                        ),
                        {"ids": [uuid.uuid4(), uuid.uuid4()]},
                    )
                    if any("Seq Scan" in line for line in plan.scalars()):
                        scanned.append(table)
    finally:
        await read_side.close()
    return scanned


async def test_a_registrations_rows_are_found_by_index_in_every_read_model(
    settings: Settings,
) -> None:
    assert await _tables_read_whole(settings) == []


async def test_migrating_a_store_made_before_the_email_lookups_index_adds_it(
    settings: Settings,
) -> None:
    with psycopg.connect(settings.read_url, autocommit=True) as conn:
        conn.execute("DROP INDEX ix_email_lookup_v1_registration_id")
    assert await _tables_read_whole(settings) == ["email_lookup_v1"]

    await asyncio.to_thread(migrate, settings)

    assert await _tables_read_whole(settings) == []
