"""A database error is logged and stored by its class and SQLSTATE, never by its message."""

from __future__ import annotations

import asyncpg
import pytest

from application.error_text import describe
from infrastructure.read_side.read_store import asyncpg_dsn
from tests.servers import create_database


async def test_a_not_null_violation_quoting_a_persons_email_is_described_without_it(
    postgres_url: str,
) -> None:
    conn = await asyncpg.connect(asyncpg_dsn(create_database(postgres_url)))
    try:
        await conn.execute("CREATE TABLE people (email text, cpf text NOT NULL)")
        with pytest.raises(asyncpg.NotNullViolationError) as raised:
            await conn.execute("INSERT INTO people VALUES ('maria.silva@example.com', NULL)")
    finally:
        await conn.close()
    # PostgreSQL itself quotes the row (the reason for this module) ...
    assert "maria.silva@example.com" in str(raised.value.detail)
    described = describe(raised.value)
    # ... the description names the class and the SQLSTATE and nothing of the row.
    assert described.startswith("NotNullViolationError [SQLSTATE 23502]")
    assert "maria" not in described and "example.com" not in described


def test_an_error_of_our_own_code_keeps_its_message_for_the_operator() -> None:
    try:
        raise RuntimeError("the users projection has no table for shard 7")
    except RuntimeError as error:
        described = describe(error)
    assert described.startswith("RuntimeError: the users projection has no table for shard 7 at")
    assert "test_error_text.py:" in described


def test_a_driver_error_without_a_sqlstate_is_told_without_its_message() -> None:
    try:
        raise asyncpg.InterfaceError("cannot use row (maria.silva@example.com)")
    except asyncpg.InterfaceError as error:
        described = describe(error)
    assert described.startswith("InterfaceError at test_error_text.py:")
    assert "maria" not in described
