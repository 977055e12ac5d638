"""Read-model storage on PostgreSQL (SQLAlchemy 2, asyncpg).

Each projection writes into a versioned table (``email_lookup_v1``) through which queries look
via a view of the plain name (``email_lookup``), so a rebuild can fill a new table beside the
live one and switch the view atomically. Each table has its own tracking row in the same
database, written in the same transaction as its rows: exactly-once per database.
"""

from __future__ import annotations

import functools
import uuid
import weakref
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg
import msgspec
import structlog
from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    DateTime,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    event,
    func,
    select,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID, insert
from sqlalchemy.engine import Engine
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.types import TypeEngine

from infrastructure.read_side.held_connections import HeldConnections
from projections.model import Kind, Layout, Projection, Row

log = structlog.get_logger(__name__)

catalog = MetaData()

# Which table each projection currently answers from.
projection_tables = Table(
    "projection_tables",
    catalog,
    Column("projection", String(100), primary_key=True),
    Column("active_table", String(100), nullable=False),
)

projection_tracking = Table(
    "projection_tracking",
    catalog,
    Column("table_name", String(100), primary_key=True),
    Column("position", BigInteger, nullable=False),
)

# Registrations erased (ids only: a random id, linked to nobody once the key is shredded).
# Every write of a projection's rows skips them, under its table's tracking-row lock, which
# an erasure takes too: a batch that opened a person's event before their key was shredded
# either commits before the erasure deletes (and is deleted) or writes after it (and skips
# them), however long it was held in between.
erased_registrations = Table(
    "erased_registrations",
    catalog,
    Column("registration_id", UUID(as_uuid=True), primary_key=True),
    Column("erased_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

# Registrations expired unverified (ids only): their personal data is shredded, and every
# write of a projection that holds personal data skips them, as it skips the erased (the
# status read model does not: it shows them ``expired``).
expired_registrations = Table(
    "expired_registrations",
    catalog,
    Column("registration_id", UUID(as_uuid=True), primary_key=True),
    Column("expired_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

# Events a projection failed on: retried with backoff while ``retrying``, kept as dead
# letters once ``dead``. Lives in the main read database, beside the status read model.
main_catalog = MetaData()

projection_failures = Table(
    "projection_failures",
    main_catalog,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("projection", String(100), nullable=False),
    Column("notification_id", BigInteger, nullable=False),
    Column("registration_id", UUID(as_uuid=True), nullable=False, index=True),
    Column("topic", Text, nullable=False),
    Column("error", Text, nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("state", String(10), nullable=False),
    Column("first_failed_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("last_failed_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("next_attempt_at", DateTime(timezone=True), nullable=False),
    # One row per (projection, event): parking it again after a crash cannot duplicate it.
    UniqueConstraint("projection", "notification_id"),
)

RETRYING = "retrying"
DEAD = "dead"


# PostgreSQL's type for each kind of column a projection declares (projections/model.py).
_TYPES: dict[Kind, Callable[[int | None], TypeEngine[Any]]] = {
    "uuid": lambda _: UUID(as_uuid=True),
    "text": lambda _: Text(),
    "string": String,
    "integer": lambda _: Integer(),
    "timestamp": lambda _: DateTime(timezone=True),
    "json": lambda _: JSONB(),
}


def table_for(projection: Projection, name: str) -> Table:
    return _table(projection.layout, name)


@functools.cache
def _table(layout: Layout, name: str) -> Table:
    # One Table object per name: SQLAlchemy caches compiled statements per table object, and
    # compiling every batch's INSERT again was a fifth of a projector's CPU.
    return Table(
        name,
        MetaData(),
        *(
            Column(
                column.name,
                _TYPES[column.kind](column.length),
                primary_key=column.primary_key,
                nullable=column.nullable,
                unique=column.unique,
                index=column.index,
                server_default=func.now() if column.written_at else None,
            )
            for column in layout.columns
        ),
    )


def _create_missing_indexes(conn: Connection, table: Table) -> None:
    for index in table.indexes:
        index.create(conn, checkfirst=True)


async def active_positions(engine: AsyncEngine) -> dict[str, int]:
    """Each projection of this database and the position of its active table (every API
    process asks every second, for its gauges: past SQLAlchemy's statement layers)."""
    rows = await records(
        engine,
        "SELECT t.projection, k.position FROM projection_tables t"
        " JOIN projection_tracking k ON k.table_name = t.active_table",
    )
    return {row["projection"]: int(row["position"]) for row in rows}


# A json column's values (the users' addresses) as text for jsonb: msgspec's encoder writes the
# same value as ``json.dumps`` in 0.3 us instead of 2.3 (jsonb keeps no spacing nor escapes).
_json = msgspec.json.Encoder().encode

# The array type each kind of column is sent as (``unnest`` takes one array per column);
# PostgreSQL casts each element to the column's own type on insert, so a too-long string is
# refused as it would be row by row.
_ARRAYS: dict[Kind, str] = {
    "uuid": "uuid[]",
    "text": "text[]",
    "string": "text[]",
    "integer": "integer[]",
    "timestamp": "timestamptz[]",
    "json": "jsonb[]",
}


@dataclass(frozen=True, slots=True)
class _BulkInsert:
    """One statement that writes a batch's rows: ``INSERT ... SELECT FROM unnest(arrays)``,
    leaving out the rows of an erased registration (and, in a table of personal data, of an
    expired one), the check costing no round trip."""

    sql: str
    columns: tuple[str, ...]
    # Each column's array type, and the statement's parameters as it casts them.
    types: tuple[str, ...]
    parameters: str
    json_columns: frozenset[str]
    # A replacing table's key: a row may replace one written earlier in the same batch, which
    # one statement cannot do (``ON CONFLICT DO UPDATE`` touches a row once), so such rows go
    # in a statement after it, as they went one after another.
    key: tuple[str, ...] | None

    def arguments(self, rows: Sequence[Row]) -> list[list[Any]]:
        return [
            [_json(row[c]).decode() for row in rows]
            if c in self.json_columns
            else [row[c] for row in rows]
            for c in self.columns
        ]

    def rounds(self, rows: Sequence[Row]) -> list[list[Row]]:
        if self.key is None:
            return [list(rows)]
        seen: dict[tuple[Any, ...], int] = {}
        rounds: list[list[Row]] = []
        for row in rows:
            key = tuple(row[c] for c in self.key)
            turn = seen[key] = seen.get(key, -1) + 1
            if turn == len(rounds):
                rounds.append([])
            rounds[turn].append(row)
        return rounds


@functools.cache
def _bulk_insert(layout: Layout, name: str, columns: tuple[str, ...]) -> _BulkInsert:
    kinds = {column.name: column.kind for column in layout.columns}
    names = ", ".join(f'"{c}"' for c in columns)
    types = tuple(_ARRAYS[kinds[c]] for c in columns)
    arrays = ", ".join(f"${n}::{t}" for n, t in enumerate(types, start=1))
    kept_out = [erased_registrations.name] + (
        [expired_registrations.name] if layout.personal else []
    )
    where = " AND ".join(
        f'NOT EXISTS (SELECT FROM "{t}" k WHERE k.registration_id = r.registration_id)'
        for t in kept_out
    )
    sql = (
        f'INSERT INTO "{name}" ({names}) SELECT {names}'
        f" FROM unnest({arrays}) AS r({names}) WHERE {where}"
    )
    replacement = layout.replaced_by
    key: tuple[str, ...] | None = None
    if replacement is None:
        sql += " ON CONFLICT DO NOTHING"
    else:
        key = tuple(c.name for c in layout.columns if c.primary_key)
        updates = [f'"{c}" = EXCLUDED."{c}"' for c in replacement.columns]
        updates += [f'"{c.name}" = now()' for c in layout.columns if c.written_at]
        values = ", ".join(f"'{value}'" for value in replacement.values)
        target = ", ".join(f'"{c}"' for c in key)
        sql += (
            f" ON CONFLICT ({target})"
            f" DO UPDATE SET {', '.join(updates)}"
            f' WHERE EXCLUDED."{replacement.column}" IN ({values})'
        )
    json_columns = frozenset(c for c in columns if kinds[c] == "json")
    return _BulkInsert(sql, columns, types, arrays, json_columns, key)


@dataclass(frozen=True, slots=True)
class _WriteFunction:
    """A live batch's whole transaction as one function of its table: hold the catalog row (a
    rebuild's switch waits) and the tracking row (an erasure waits), insert the rows
    (``_bulk_insert``'s statement), move the position; false, writing nothing, when the table
    is no longer the active one. Called outside a transaction it is one round trip, where the
    same steps sent one by one were five (begin, the lock, the insert, the position, commit),
    each ~0.15 ms of the worker's CPU on a two-core machine. A PL/pgSQL function takes a new
    snapshot for each statement, as statements sent one by one do: the insert, after the lock,
    sees an erasure that held it."""

    ddl: str
    # By its signature: a name alone is refused once a changed layout has left two.
    drop: str
    call: str
    insert: _BulkInsert


@functools.cache
def _write_function(projection: str, layout: Layout, table: str) -> _WriteFunction | None:
    """None for a layout whose rows may replace each other within a batch (the status read
    model: its rows go in rounds, ``_BulkInsert.rounds``)."""
    if layout.replaced_by is not None:
        return None
    columns = tuple(c.name for c in layout.columns if not c.written_at)
    insert = _bulk_insert(layout, table, columns)
    types = ", ".join(insert.types)
    name = f"signup_write_{table}"
    up_to = f"${len(columns) + 1}"
    literal, owner = table.replace("'", "''"), projection.replace("'", "''")
    ddl = (
        f'CREATE OR REPLACE FUNCTION "{name}"({types}, bigint)'
        " RETURNS boolean LANGUAGE plpgsql AS $write$\nBEGIN\n"
        "  PERFORM FROM projection_tables t"
        f" JOIN projection_tracking k ON k.table_name = '{literal}'"
        f" WHERE t.projection = '{owner}' AND t.active_table = '{literal}'"
        " FOR SHARE OF t FOR UPDATE OF k;\n"
        "  IF NOT FOUND THEN RETURN false; END IF;\n"
        f"  {insert.sql};\n"
        f"  UPDATE projection_tracking SET position = greatest(position, {up_to})"
        f" WHERE table_name = '{literal}';\n"
        "  RETURN true;\nEND\n$write$"
    )
    call = f'SELECT "{name}"({insert.parameters}, {up_to}::bigint) AS written'
    drop = f'DROP FUNCTION IF EXISTS "{name}"({types}, bigint)'
    return _WriteFunction(ddl, drop, call, insert)


async def _driver(conn: AsyncConnection) -> Any:
    """The asyncpg connection under ``conn``, inside ``conn``'s transaction: SQLAlchemy begins
    it at the first statement (the callers' is the tracking row's lock), so a statement sent
    past SQLAlchemy before that would commit on its own."""
    raw = await conn.get_raw_connection()
    if raw.dbapi_connection is None or raw.dbapi_connection._transaction is None:
        await conn.execute(text("SELECT 1"))
        if raw.dbapi_connection is None or raw.dbapi_connection._transaction is None:
            raise RuntimeError("projection rows are written only inside a transaction")
    return raw.driver_connection


def view_name(projection: Projection) -> str:
    """Queries read this name; it is a view of the active table."""
    return projection.layout.view


def async_url(url: str) -> str:
    """SQLAlchemy wants the driver in the scheme; operators give plain PostgreSQL URLs."""
    scheme, _, rest = url.partition("://")
    return f"postgresql+asyncpg://{rest}" if scheme in {"postgres", "postgresql"} else url


def asyncpg_dsn(url: str) -> str:
    """asyncpg itself wants a plain PostgreSQL URL."""
    scheme, _, rest = url.partition("://")
    return f"postgresql://{rest}" if "+" in scheme else url


@asynccontextmanager
async def reading(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """A connection for one read statement, outside any transaction.

    SQLAlchemy's asyncpg dialect otherwise wraps every statement in BEGIN ... ROLLBACK: three
    round trips for one query, paid by every projector batch (its read, the held failures)
    and every gauge refresh. One statement sees one snapshot either way.
    """
    async with engine.connect() as conn:
        yield await conn.execution_options(isolation_level="AUTOCOMMIT")


async def records(engine: AsyncEngine, statement: str, *arguments: Any) -> list[Any]:
    """One statement on the engine's asyncpg connection, outside a transaction: the rows as
    asyncpg's records, past SQLAlchemy's statement and result layers (its bind processing of
    an array parameter is a Python call per element, and a worker's statements carry a
    batch's thousand ids or scan a thousand events)."""
    async with asyncpg_connection(engine) as driver:
        return list(await driver.fetch(statement, *arguments))


@asynccontextmanager
async def asyncpg_connection(engine: AsyncEngine) -> AsyncIterator[Any]:
    """An asyncpg connection to the engine's database, for statements outside a
    transaction, each committing on its own (``records``; the mailer's marks, one a message,
    on one connection a batch): one the engine holds for them (``make_engine``), else one of
    its pool's."""
    held = _held.get(engine.sync_engine)
    if held is not None:
        async with held.lease() as driver:
            yield driver
        return
    async with engine.connect() as conn:
        driver = (await conn.get_raw_connection()).driver_connection
        assert driver is not None
        yield driver


# The connections each engine of ``make_engine`` holds for ``asyncpg_connection``, closed with
# its pool when it is disposed.
_held: weakref.WeakKeyDictionary[Engine, HeldConnections] = weakref.WeakKeyDictionary()


# A server that does not answer costs seconds, not asyncpg's default minute: the pool's
# connections and the held ones alike.
CONNECT_TIMEOUT = 2.0


def make_engine(url: str, pool_size: int = 5) -> AsyncEngine:
    engine = create_async_engine(
        async_url(url),
        pool_size=pool_size,
        max_overflow=pool_size,
        # No ping before every use (a round trip each, a tenth of the worker's time): a
        # connection a restart broke fails its batch, which is retried on a fresh one, as
        # any outage is (infrastructure/read_side/projector.py).
        pool_pre_ping=False,
        connect_args={"timeout": CONNECT_TIMEOUT},
    )
    # As many as the pool may open: the statements outside a transaction use these instead.
    held = _held[engine.sync_engine] = HeldConnections(
        asyncpg_dsn(url), 2 * pool_size, CONNECT_TIMEOUT
    )
    event.listen(engine.sync_engine, "engine_disposed", lambda _: held.close())
    return engine


@dataclass
class ProjectionStore:
    """One projection's tables and tracking in its database."""

    projection: Projection
    engine: AsyncEngine
    # Tables whose write function was found missing (a store not migrated since): their
    # batches go as they did before, until this process restarts. Per table: a live
    # projector may call the function of a table a rebuild has just replaced and dropped,
    # and the new table has its own.
    _without_function: set[str] = field(default_factory=set, init=False)

    async def ensure(self) -> str:
        """Create the catalog, the first table and its view if missing; return the active table."""
        async with self.engine.begin() as conn:
            await conn.execute(text("SELECT pg_advisory_xact_lock(hashtext('signup_migrate'))"))
            await conn.run_sync(catalog.create_all)
            active = await self._active(conn)
            if active is None:
                active = self.projection.table_version
                await self.create_table(conn, active)
                await conn.execute(
                    insert(projection_tables).values(
                        projection=self.projection.name, active_table=active
                    )
                )
                await self._point_view(conn, active)
            # An index a layout gained since its tables were made is made now, on every one
            # of them (``CREATE INDEX`` holds off the projector's writes while it builds):
            # erasure and expiry find a registration's rows by index, not by reading a table
            # of everyone.
            for name in await self.tables(conn):
                await conn.run_sync(_create_missing_indexes, table_for(self.projection, name))
                # Made again: a store from before had none, and the function follows the
                # layout and ``_bulk_insert``'s statement as they are now.
                await self._create_write_function(conn, name)
            return active

    async def create_table(self, conn: AsyncConnection, name: str) -> None:
        await conn.run_sync(table_for(self.projection, name).metadata.create_all)
        await conn.execute(
            insert(projection_tracking).values(table_name=name, position=0).on_conflict_do_nothing()
        )
        await self._create_write_function(conn, name)

    async def _create_write_function(self, conn: AsyncConnection, table: str) -> None:
        function = self._write_function(table)
        if function is not None:
            await conn.execute(text(function.ddl))

    async def _active(self, conn: AsyncConnection) -> str | None:
        result = await conn.execute(
            select(projection_tables.c.active_table).where(
                projection_tables.c.projection == self.projection.name
            )
        )
        return result.scalar_one_or_none()

    async def _point_view(self, conn: AsyncConnection, table: str) -> None:
        view = view_name(self.projection)
        await conn.execute(text(f'DROP VIEW IF EXISTS "{view}"'))
        await conn.execute(text(f'CREATE VIEW "{view}" AS SELECT * FROM "{table}"'))

    async def active_table(self) -> str:
        async with reading(self.engine) as conn:
            active = await self._active(conn)
        assert active is not None, f"{self.projection.name} is not migrated"
        return active

    async def position(self, table: str) -> int:
        async with reading(self.engine) as conn:
            result = await conn.execute(
                select(projection_tracking.c.position).where(
                    projection_tracking.c.table_name == table
                )
            )
            return int(result.scalar_one_or_none() or 0)

    async def lock(self, conn: AsyncConnection, table: str) -> None:
        """Hold ``table``'s tracking row for the caller's transaction; ``write`` needs it
        first (see ``erased_registrations``)."""
        await conn.execute(
            select(projection_tracking.c.position)
            .where(projection_tracking.c.table_name == table)
            .with_for_update()
        )

    @asynccontextmanager
    async def writing(self, table: str) -> AsyncIterator[AsyncConnection]:
        """A transaction that may ``write`` into ``table``: its tracking row held first."""
        async with self.engine.begin() as conn:
            await self.lock(conn, table)
            yield conn

    async def write(
        self, table: str, rows: Sequence[Row], position: int | None, conn: AsyncConnection
    ) -> None:
        """Rows (but none of an erased registration) and, when given, the new position, in
        the caller's transaction, which holds the table's tracking row (``lock``)."""
        if rows:
            # One statement for the batch on the transaction's own asyncpg connection: through
            # SQLAlchemy's executemany each row was a statement of its own, and turning each
            # row's parameters into its bind values was a sixth of the worker's CPU.
            insert = _bulk_insert(self.projection.layout, table, tuple(rows[0]))
            driver = await _driver(conn)
            for batch in insert.rounds(rows):
                await driver.execute(insert.sql, *insert.arguments(batch))
        if position is not None:
            await conn.execute(
                projection_tracking.update()
                .where(projection_tracking.c.table_name == table)
                .values(position=func.greatest(projection_tracking.c.position, position))
            )

    async def write_batch(self, table: str, rows: Sequence[Row], position: int) -> bool | None:
        """A live batch in one round trip (``_WriteFunction``): its rows and the new position,
        in a transaction of their own. False when ``table`` is no longer the active one
        (nothing written); None when it has no write function (a store not migrated since, a
        layout without one): then the caller writes as ``write`` does."""
        function = None if table in self._without_function else self._write_function(table)
        if function is None or (rows and set(rows[0]) != set(function.insert.columns)):
            return None
        try:
            answer = await records(
                self.engine, function.call, *function.insert.arguments(rows), position
            )
        except asyncpg.UndefinedFunctionError:
            self._without_function.add(table)
            log.warning(
                "projection_write_function_missing",
                table=table,
                hint="signup migrate, unless a rebuild has just replaced this table",
            )
            return None
        return bool(answer[0]["written"])

    def _write_function(self, table: str) -> _WriteFunction | None:
        return _write_function(self.projection.name, self.projection.layout, table)

    async def tables(self, conn: AsyncConnection, *, lock: bool = False) -> list[str]:
        """This projection's tables: the active one and any a rebuild is filling; ``lock``
        holds their tracking rows (as ``lock`` does) for the caller's transaction."""
        prefix = f"{self.projection.name}_v"
        statement = (
            select(projection_tracking.c.table_name)
            .where(projection_tracking.c.table_name.startswith(prefix, autoescape=True))
            .order_by(projection_tracking.c.table_name)
        )
        result = await conn.execute(statement.with_for_update() if lock else statement)
        return list(result.scalars())

    async def erase(self, conn: AsyncConnection, registration_id: uuid.UUID) -> bool:
        """Delete a registration's rows from every table of this projection and keep it out
        of them from now on; whether it had any."""
        return await self._keep_out(conn, [registration_id], erased_registrations)

    async def expire(self, conn: AsyncConnection, registration_ids: Sequence[uuid.UUID]) -> bool:
        """Expired registrations: their rows deleted from every table of this projection (one
        that holds personal data) and kept out of them from now on; whether any had rows."""
        return await self._keep_out(conn, registration_ids, expired_registrations)

    async def _keep_out(
        self, conn: AsyncConnection, registration_ids: Sequence[uuid.UUID], kept_out: Table
    ) -> bool:
        """Delete the registrations' rows from every table of this projection and list them in
        ``kept_out``, which every later write of this projection skips; whether any had rows.
        One statement a table for all of them: an expiry sweep passes its whole batch (a
        transaction a registration was most of what an expiry cost)."""
        tables = await self.tables(conn, lock=True)
        ids = list(registration_ids)
        await conn.execute(
            text(
                f'INSERT INTO "{kept_out.name}" (registration_id)'
                " SELECT unnest(CAST(:ids AS uuid[])) ON CONFLICT DO NOTHING"
            ),
            {"ids": ids},
        )
        deleted = 0
        for table in tables:
            result = await conn.execute(
                text(f'DELETE FROM "{table}" WHERE registration_id = ANY(CAST(:ids AS uuid[]))'),
                {"ids": ids},
            )
            deleted += result.rowcount
        return deleted > 0

    async def lock_catalog(self, conn: AsyncConnection) -> None:
        """Hold this projection's catalog row: live batches wait until the transaction ends."""
        await conn.execute(
            select(projection_tables)
            .where(projection_tables.c.projection == self.projection.name)
            .with_for_update()
        )

    async def switch(self, conn: AsyncConnection, new_table: str) -> str:
        """Make ``new_table`` the one queries read; returns the table it replaced."""
        old = await self._active(conn)
        assert old is not None
        await conn.execute(
            projection_tables.update()
            .where(projection_tables.c.projection == self.projection.name)
            .values(active_table=new_table)
        )
        await self._point_view(conn, new_table)
        return old

    async def drop(self, table: str) -> None:
        async with self.engine.begin() as conn:
            # Its tracking row first, as a write, an erasure and an expiry take it before the
            # table: dropping first, then waiting for the row, deadlocked with an erasure that
            # held the row and waited to delete from the table.
            await self.lock(conn, table)
            function = self._write_function(table)
            if function is not None:
                await conn.execute(text(function.drop))
            await conn.execute(text(f'DROP TABLE IF EXISTS "{table}"'))
            await conn.execute(
                projection_tracking.delete().where(projection_tracking.c.table_name == table)
            )


def row_dict(row: Any) -> dict[str, Any]:
    return dict(row._mapping)


@dataclass(frozen=True, slots=True)
class StatusRecord:
    registration_id: uuid.UUID
    status: str
    requested_at: datetime
    updated_at: datetime
    user_id: uuid.UUID | None
    reason: str | None
