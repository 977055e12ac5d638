"""A COMMIT that reaches PostgreSQL but whose reply never reaches the API.

This is what a crash of the database server (or of the network) right after a commit looks
like to the API: the registration is recorded, but the API does not know. The test puts a
small Unix-socket proxy of its own between the API and a real PostgreSQL server; armed, the
proxy lets one append through and then cuts the connection instead of passing on the reply
that says it committed. Nothing is mocked: the API, asyncpg and the server are the real ones.

The crash test (test_postgres_crash_under_load.py) meets this case now and then: a person is
told ``409 email_already_registered`` although nobody but themselves holds the email.
"""

from __future__ import annotations

import asyncio
import dataclasses
import shutil
import struct
import tempfile
import threading
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from litestar.testing import AsyncTestClient

from infrastructure.settings import Settings
from interfaces.http.app import build_app
from tests.faults.harness import person

_SSL_OR_GSS_REQUEST = {80877103, 80877104}


class CommitReplyDropper:
    """Forwards PostgreSQL's protocol between a Unix socket of its own and the server's.
    While ``armed``, the next statement's end is swallowed and both connections are closed:
    ``CommandComplete COMMIT`` for a transaction the client ends itself, or the
    ``ReadyForQuery`` after a statement run as its own transaction (the append is one: the
    server commits it before that message). The commit happened, the client cannot know.
    """

    def __init__(self, server_socket: str) -> None:
        self.server_socket = server_socket
        self.directory = Path(tempfile.mkdtemp(prefix="pgproxy"))  # short: socket paths
        self.armed = False
        self.dropped = 0
        self._tasks: set[asyncio.Task[None]] = set()
        # Its own thread and event loop: the test's loop may block (the test client's
        # lifespan does) while the API talks to PostgreSQL through the proxy.
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def url(self, database_url: str) -> str:
        base, _, _ = database_url.partition("?")
        return f"{base}?host={self.directory}"

    def __enter__(self) -> CommitReplyDropper:
        self._thread.start()
        listen = asyncio.start_unix_server(self._accept, path=str(self.directory / ".s.PGSQL.5432"))
        self._server = asyncio.run_coroutine_threadsafe(listen, self._loop).result(10)
        return self

    def __exit__(self, *exc: object) -> None:
        async def stop() -> None:
            self._server.close()
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)

        try:
            asyncio.run_coroutine_threadsafe(stop(), self._loop).result(10)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop.close()
            shutil.rmtree(self.directory, ignore_errors=True)

    async def _accept(
        self, client_in: asyncio.StreamReader, client_out: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            server_in, server_out = await asyncio.open_unix_connection(self.server_socket)
        except OSError:
            client_out.close()
            return
        try:
            await asyncio.gather(
                self._upstream(client_in, client_out, server_out),
                self._downstream(server_in, client_out, server_out),
            )
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            for writer in (client_out, server_out):
                writer.close()
            self._tasks.discard(task)

    async def _upstream(
        self,
        client_in: asyncio.StreamReader,
        client_out: asyncio.StreamWriter,
        server_out: asyncio.StreamWriter,
    ) -> None:
        # An SSL or GSS encryption request is answered "no" here; the client goes on in clear.
        while True:
            head = await client_in.readexactly(8)
            length, code = struct.unpack("!ii", head)
            if length == 8 and code in _SSL_OR_GSS_REQUEST:
                client_out.write(b"N")
                await client_out.drain()
                continue
            server_out.write(head)
            break
        while data := await client_in.read(65536):
            server_out.write(data)
            await server_out.drain()
        server_out.close()

    async def _downstream(
        self,
        server_in: asyncio.StreamReader,
        client_out: asyncio.StreamWriter,
        server_out: asyncio.StreamWriter,
    ) -> None:
        ran = False
        while True:
            head = await server_in.readexactly(5)
            kind, length = head[:1], struct.unpack("!i", head[1:])[0]
            payload = await server_in.readexactly(length - 4)
            # A statement ran (preparing one ends in ReadyForQuery too, with no CommandComplete).
            ran = ran or (self.armed and kind == b"C")
            ends = (
                payload == b"COMMIT\x00"
                if kind == b"C"
                else ran and kind == b"Z" and payload == b"I"
            )
            if self.armed and ends:
                self.armed = False
                self.dropped += 1
                server_out.close()
                client_out.close()
                return
            client_out.write(head + payload)
            await client_out.drain()


def _server_socket(database_url: str) -> str:
    parts = urlsplit(database_url)
    directory = parse_qs(parts.query)["host"][0]
    return f"{directory}/.s.PGSQL.{parts.port or 5432}"


@asynccontextmanager
async def _api_behind(
    proxy: CommitReplyDropper, settings: Settings
) -> AsyncIterator[AsyncTestClient]:  # type: ignore[type-arg]
    assert settings.database_url is not None
    # The event store through the proxy; the read models straight to the server.
    proxied = dataclasses.replace(
        settings,
        database_url=proxy.url(settings.database_url),
        read_database_url=settings.database_url,
    )
    async with AsyncTestClient(app=build_app(proxied), timeout=60) as client:
        yield client


async def test_a_registration_whose_commit_reply_is_lost_is_answered_202_not_409(
    postgres_url: str, settings: Settings
) -> None:
    tag = uuid.uuid4().hex
    with CommitReplyDropper(_server_socket(postgres_url)) as proxy:
        async with _api_behind(proxy, settings) as client:
            warm_up = await client.post("/registrations", json=person(1, tag))
            proxy.armed = True
            answer = await client.post("/registrations", json=person(2, tag))
            proxy.armed = False
            again = await client.post("/registrations", json=person(2, tag))
            status = (
                await client.get(f"/registrations/{answer.json()['registration_id']}")
                if answer.status_code == 202
                else None
            )

    assert warm_up.status_code == 202, warm_up.text
    assert proxy.dropped == 1, "the proxy did not see the commit"
    # The first attempt was recorded: a second submission is a duplicate.
    assert again.status_code == 409, again.text
    # What the person should have been told: their registration was recorded, and its id.
    assert answer.status_code == 202, answer.text
    assert status is not None and status.status_code == 200, status
