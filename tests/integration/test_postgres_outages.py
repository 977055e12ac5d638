"""The read side tells a PostgreSQL outage from a bad event through the real driver stack
(SQLAlchemy over asyncpg): an outage is waited out, a bad event spends its attempts.

A server in crash recovery is played by a socket that answers every connection the way
PostgreSQL does then (``57P03 the database system is starting up``): the moment is too short
to hit reliably with a real server, and it is the moment a crash test under load once hit.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from infrastructure.postgres_outages import is_unavailable
from infrastructure.read_side.read_store import async_url, asyncpg_connection

_SSL_REQUEST = 80877103


def _fatal(code: str, message: str) -> bytes:
    fields = b"SFATAL\0VFATAL\0C" + code.encode() + b"\0M" + message.encode() + b"\0\0"
    return b"E" + struct.pack("!I", len(fields) + 4) + fields


async def _starting_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while True:
        length = struct.unpack("!I", await reader.readexactly(4))[0]
        body = await reader.readexactly(length - 4)
        if length == 8 and struct.unpack("!I", body)[0] == _SSL_REQUEST:
            writer.write(b"N")  # no TLS: go on in the clear
            await writer.drain()
            continue
        writer.write(_fatal("57P03", "the database system is starting up"))
        await writer.drain()
        writer.close()
        return


@pytest.fixture
async def recovering_server() -> AsyncIterator[str]:
    server = await asyncio.start_server(_starting_up, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"postgresql://signup:secret@127.0.0.1:{port}/signup"
    finally:
        server.close()
        await server.wait_closed()


async def test_a_server_still_starting_up_is_an_outage_not_a_bad_event(
    recovering_server: str,
) -> None:
    engine = create_async_engine(async_url(recovering_server))
    try:
        with pytest.raises(Exception) as raised:
            async with engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
    finally:
        await engine.dispose()
    assert "starting up" in str(raised.value)
    assert is_unavailable(raised.value)


async def test_a_connection_the_server_terminates_is_an_outage(postgres_url: str) -> None:
    engine = create_async_engine(async_url(postgres_url))
    try:
        async with engine.connect() as victim, engine.connect() as operator:
            pid = (await victim.execute(text("SELECT pg_backend_pid()"))).scalar_one()
            await operator.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
            with pytest.raises(Exception) as raised:
                await victim.execute(text("SELECT 1"))
    finally:
        await engine.dispose()
    assert is_unavailable(raised.value)


async def test_a_statement_the_server_rejects_is_not_an_outage(postgres_url: str) -> None:
    engine = create_async_engine(async_url(postgres_url))
    try:
        with pytest.raises(Exception) as raised:
            async with engine.connect() as conn:
                await conn.execute(text("SELECT 1 / 0"))
    finally:
        await engine.dispose()
    assert "division by zero" in str(raised.value)
    assert not is_unavailable(raised.value)


async def test_a_connection_terminated_under_a_statement_sent_past_sqlalchemy_is_an_outage(
    postgres_url: str,
) -> None:
    # The read side sends some statements on the engine's asyncpg connection itself (the
    # worker's event reads and rows, the mailer's marks): asyncpg's own error, unwrapped.
    engine = create_async_engine(async_url(postgres_url))
    try:
        async with asyncpg_connection(engine) as victim, engine.connect() as operator:
            pid = await victim.fetchval("SELECT pg_backend_pid()")
            # Terminated in the middle of a statement (one sent in the instant the server's
            # goodbye arrives meets asyncpg's own state error instead).
            statement = asyncio.ensure_future(victim.execute("SELECT pg_sleep(30)"))
            for _ in range(500):
                state = await operator.execute(
                    text("SELECT state FROM pg_stat_activity WHERE pid = :pid"), {"pid": pid}
                )
                if state.scalar() == "active":
                    break
                await asyncio.sleep(0.01)
            await operator.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
            with pytest.raises(Exception) as raised:
                await statement
        with pytest.raises(Exception) as refused:
            async with asyncpg_connection(engine) as other:
                await other.execute("SELECT 1 / 0")
    finally:
        await engine.dispose()
    assert is_unavailable(raised.value), repr(raised.value)
    assert not is_unavailable(refused.value), repr(refused.value)
