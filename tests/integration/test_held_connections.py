"""The read side's statements outside a transaction run on connections its engines hold open
(``infrastructure/read_side/held_connections.py``): kept between statements, never shared by
two at once, never reused after a statement failed on them, closed with their engine."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from infrastructure.read_side.held_connections import HeldConnections
from infrastructure.read_side.read_store import asyncpg_dsn, make_engine, records

PID = "SELECT pg_backend_pid() AS pid"


async def _pid(held: HeldConnections) -> int:
    async with held.lease() as connection:
        return int(await connection.fetchval(PID))


async def _open_backends(postgres_url: str, pids: set[int]) -> set[int]:
    connection = await asyncpg.connect(asyncpg_dsn(postgres_url))
    try:
        rows = await connection.fetch(
            "SELECT pid FROM pg_stat_activity WHERE pid = ANY($1::int[])", list(pids)
        )
    finally:
        await connection.close()
    return {row["pid"] for row in rows}


async def _still_open(postgres_url: str, pid: int) -> bool:
    """Whether the backend of ``pid`` is still there, once it has had time to read that its
    socket was closed (it leaves then, not at once)."""
    for _ in range(50):
        if not await _open_backends(postgres_url, {pid}):
            return False
        await asyncio.sleep(0.05)
    return True


async def test_one_statement_after_another_runs_on_the_same_open_connection(
    postgres_url: str,
) -> None:
    held = HeldConnections(asyncpg_dsn(postgres_url), most=3, connect_timeout=2)
    try:
        assert await _pid(held) == await _pid(held) == await _pid(held)
    finally:
        held.close()


async def test_statements_beyond_the_limit_wait_for_a_connection_to_come_back(
    postgres_url: str,
) -> None:
    held = HeldConnections(asyncpg_dsn(postgres_url), most=2, connect_timeout=2)
    running = 0
    most_at_once = 0

    async def statement() -> int:
        nonlocal running, most_at_once
        async with held.lease() as connection:
            running += 1
            most_at_once = max(most_at_once, running)
            pid = int(await connection.fetchval("SELECT pg_backend_pid() FROM pg_sleep(0.05)"))
            running -= 1
            return pid

    try:
        pids = await asyncio.gather(*(statement() for _ in range(6)))
    finally:
        held.close()
    assert most_at_once == 2
    assert len(set(pids)) == 2


async def test_a_connection_a_statement_failed_on_is_closed_not_reused(postgres_url: str) -> None:
    held = HeldConnections(asyncpg_dsn(postgres_url), most=1, connect_timeout=2)
    try:
        with pytest.raises(asyncpg.UndefinedTableError):
            async with held.lease() as connection:
                first = int(await connection.fetchval(PID))
                await connection.fetch("SELECT * FROM no_such_table")
        second = await _pid(held)
        assert second != first
        assert not await _still_open(postgres_url, first)
    finally:
        held.close()


async def test_a_cancelled_wait_for_a_connection_leaves_it_to_the_next(postgres_url: str) -> None:
    held = HeldConnections(asyncpg_dsn(postgres_url), most=1, connect_timeout=2)
    try:
        async with held.lease():
            waiter = asyncio.create_task(_pid(held))
            await asyncio.sleep(0.05)
            waiter.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiter
        # The one connection is free again, for whoever asks next.
        assert await asyncio.wait_for(_pid(held), 5)
    finally:
        held.close()


async def test_an_engine_s_statements_share_its_held_connection_and_disposing_it_closes_it(
    postgres_url: str,
) -> None:
    engine = make_engine(postgres_url, pool_size=2)
    first = (await records(engine, PID))[0]["pid"]
    second = (await records(engine, PID))[0]["pid"]
    assert first == second
    await engine.dispose()
    assert not await _still_open(postgres_url, first)
