"""What the read models hold, and what a fresh replay of the event store says they should."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import text

from infrastructure.composition.read_side import expiry_sweep, open_read_side, run_projections
from infrastructure.read_side.parts import ReadSide
from infrastructure.read_side.projector import Projector
from infrastructure.settings import Settings
from projections.model import Projection, RequestedRegistration, Row


async def table_rows(read_side: ReadSide) -> dict[str, set[tuple[Any, ...]]]:
    """Every projection's rows, as sets of tuples, read through the views queries use."""
    found: dict[str, set[tuple[Any, ...]]] = {}
    for projector in read_side.all_projectors:
        table = await projector.store.active_table()
        async with projector.store.engine.connect() as conn:
            rows = (await conn.execute(text(f'SELECT * FROM "{table}"'))).all()
        found[projector.name] = {_comparable(row._mapping, projector.name) for row in rows}
    return found


async def replayed_rows(read_side: ReadSide) -> dict[str, set[tuple[Any, ...]]]:
    """The rows the pure reducers give for every event in the store, from the first."""
    expected: dict[str, set[tuple[Any, ...]]] = {p.name: set() for p in read_side.all_projectors}
    position = 0
    while True:
        notes, reached = await read_side.source.read(position, 1000, _topics(read_side))
        if reached == position:
            return expected
        for note in notes:
            for projector in read_side.all_projectors:
                for row in projector.projection.reduce(note.registration):
                    expected[projector.name].add(_comparable(row, projector.name))
        position = reached


def _topics(read_side: ReadSide) -> list[str]:
    return sorted({t for p in read_side.all_projectors for t in p.projection.topics})


def _comparable(row: Any, projection: str) -> tuple[Any, ...]:
    # updated_at is when the row was written, not a fact of the event.
    items = {k: v for k, v in dict(row).items() if k != "updated_at"}
    if "address" in items:
        items["address"] = tuple(sorted(items["address"].items()))
    return tuple(sorted(items.items()))


async def catch_up(projector: Projector) -> None:
    """Step ``projector`` until it has nothing left to project."""
    while await projector.step() > 0:
        pass


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 60.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await check():
        if loop.time() > deadline:
            raise AssertionError(f"not true after {timeout}s: {check}")
        await asyncio.sleep(0.1)


@asynccontextmanager
async def running_worker(
    settings: Settings, customise: Callable[[Projection], Projection] | None = None
) -> AsyncIterator[ReadSide]:
    read_side = open_read_side(settings, customise)
    # The worker's expiry sweep too, as `signup worker` runs it.
    sweep = await expiry_sweep(settings, read_side)
    stop = asyncio.Event()
    task = asyncio.create_task(
        run_projections(settings, read_side, stop, retry_every=0.05, beside_status=[sweep.run])
    )
    try:
        yield read_side
    finally:
        stop.set()
        await task
        await sweep.close()
        await read_side.close()


async def status_of(client: Any, registration_id: str) -> dict[str, Any]:
    response = await client.get(f"/registrations/{registration_id}")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def all_have_status(client: Any, ids: Sequence[str], status: str) -> bool:
    statuses = [(await status_of(client, rid))["status"] for rid in ids]
    return all(found == status for found in statuses)


class Poison:
    """Makes the users projections fail for one email, until fixed."""

    def __init__(self, email: str) -> None:
        self.email = email
        self.active = True

    def __call__(self, projection: Projection) -> Projection:
        if not projection.name.startswith("users_shard"):
            return projection

        def reduce(registration: RequestedRegistration) -> Sequence[Row]:
            rows = projection.reduce(registration)
            # Only the shard the user lives in fails, as a real fault in its database would.
            details = registration.details
            if self.active and rows and details is not None and details.email == self.email:
                raise RuntimeError("poisoned by the test")
            return rows

        return dataclasses.replace(projection, reduce=reduce)
