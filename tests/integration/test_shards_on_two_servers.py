"""Shards on two separate PostgreSQL servers: each user in exactly one of them."""

from __future__ import annotations

import asyncio

from litestar.testing import AsyncTestClient

from infrastructure.composition.operations import migrate
from infrastructure.read_side.parts import ReadSide
from infrastructure.settings import Settings
from interfaces.http.app import build_app
from tests.factories import make_cpf, valid_form
from tests.read_models import all_have_status, eventually, replayed_rows, running_worker, table_rows
from tests.servers import TEST_RESERVATION_KEY, create_database


async def test_users_are_split_over_two_servers_and_each_is_in_exactly_one(
    postgres_url: str, second_postgres_url: str, redis_url: str
) -> None:
    settings = Settings(
        reservation_key=TEST_RESERVATION_KEY,
        database_url=create_database(postgres_url),
        redis_url=redis_url,
        shard_database_urls=(create_database(postgres_url), create_database(second_postgres_url)),
    )
    await asyncio.to_thread(migrate, settings)
    async with AsyncTestClient(app=build_app(settings)) as client:
        ids = []
        for n in range(60):
            email = f"split{n}@example.com"
            form = valid_form(cpf=make_cpf(40_000 + n), email=email, email_confirmation=email)
            response = await client.post("/registrations", json=form)
            ids.append(response.json()["registration_id"])
        async with running_worker(settings) as read_side:
            await eventually(lambda: all_have_status(client, ids, "completed"))
            rows = await table_rows(read_side)
            assert rows == await replayed_rows(read_side)

    first, second = rows["users_shard0"], rows["users_shard1"]
    assert first and second
    user_ids = [dict(user)["user_id"] for user in first | second]
    assert len(user_ids) == len(set(user_ids)) == 60
    assert isinstance(read_side, ReadSide)
