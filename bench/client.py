"""HTTP/1.1 keep-alive clients for the load generator.

Two implementations of one small interface:

- ``raw``: a minimal HTTP/1.1 client on asyncio streams (Content-Length and chunked bodies,
  keep-alive, ``Connection: close``). It only has to speak to uvicorn, and it costs a fraction
  of httpx's CPU per request, which matters when the generator shares the machine with the
  server it measures.
- ``httpx``: ``httpx.AsyncClient`` with a bounded keep-alive pool, as a cross-check that the
  raw client measures the same thing.

Both bound the number of connections; a request waits (FIFO) for a free one, and that wait is
part of its latency.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Final, Protocol
from urllib.parse import urlsplit

CLIENTS: Final = ("raw", "httpx")


class RequestFailed(Exception):
    """No HTTP answer: ``kind`` is ``connect``, ``disconnected``, ``timeout`` or ``protocol``."""

    def __init__(self, kind: str, detail: str = "") -> None:
        super().__init__(f"{kind}: {detail}" if detail else kind)
        self.kind = kind


class HttpClient(Protocol):
    async def request(
        self, method: str, path: str, body: bytes | None = None, forwarded_for: str | None = None
    ) -> tuple[int, bytes]:
        """The status code and body of the answer; raises :class:`RequestFailed`.

        ``forwarded_for`` becomes an ``X-Forwarded-For`` header: the client a load balancer
        would name, for a server that trusts the bench as a proxy.
        """
        ...

    async def aclose(self) -> None: ...


def make_client(kind: str, url: str, connections: int, timeout: float) -> HttpClient:
    if kind == "httpx":
        return _HttpxClient(url, connections, timeout)
    return RawClient(url, connections, timeout)


class _Connection:
    __slots__ = ("reader", "started", "timed_out", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.started: float | None = None
        self.timed_out = False

    def close(self) -> None:
        self.writer.transport.abort()


class RawClient:
    """A pool of keep-alive connections to one ``http://host:port``."""

    def __init__(self, url: str, connections: int, timeout: float) -> None:
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"the raw client speaks plain http only: {url}")
        self._host = parts.hostname
        self._port = parts.port or 80
        self._prefix = parts.path.rstrip("/")
        self._host_header = f"{self._host}:{self._port}".encode()
        self._timeout = timeout
        # One slot per allowed connection; None until the slot's connection is opened.
        self._slots: asyncio.Queue[_Connection | None] = asyncio.Queue()
        for _ in range(connections):
            self._slots.put_nowait(None)
        self._busy: set[_Connection] = set()
        self._watchdog: asyncio.Task[None] | None = None

    async def request(
        self, method: str, path: str, body: bytes | None = None, forwarded_for: str | None = None
    ) -> tuple[int, bytes]:
        if self._watchdog is None:
            self._watchdog = asyncio.create_task(self._expire())
        connection = await self._slots.get()
        try:
            if connection is None:
                connection = await self._connect()
            status, answer, keep = await self._exchange(
                connection, method, path, body, forwarded_for
            )
        except BaseException:
            if connection is not None:
                self._busy.discard(connection)
                connection.close()
            self._slots.put_nowait(None)
            raise
        self._busy.discard(connection)
        if keep:
            self._slots.put_nowait(connection)
        else:
            connection.close()
            self._slots.put_nowait(None)
        return status, answer

    async def _connect(self) -> _Connection:
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(self._host, self._port), self._timeout
            )
        except TimeoutError:
            raise RequestFailed("timeout", "connect") from None
        except OSError as error:
            raise RequestFailed("connect", str(error)) from None
        return _Connection(reader, writer)

    async def _exchange(
        self,
        connection: _Connection,
        method: str,
        path: str,
        body: bytes | None,
        forwarded_for: str | None,
    ) -> tuple[int, bytes, bool]:
        head = [
            f"{method} {self._prefix}{path} HTTP/1.1".encode(),
            b"Host: " + self._host_header,
        ]
        if body is not None:
            head += [b"Content-Type: application/json", b"Content-Length: %d" % len(body)]
        if forwarded_for is not None:
            head.append(b"X-Forwarded-For: " + forwarded_for.encode())
        connection.started = time.monotonic()
        self._busy.add(connection)
        try:
            connection.writer.write(b"\r\n".join(head) + b"\r\n\r\n" + (body or b""))
            return await self._read_answer(connection.reader)
        except (ConnectionError, asyncio.IncompleteReadError, OSError) as error:
            if connection.timed_out:
                raise RequestFailed("timeout", f"no answer in {self._timeout}s") from None
            raise RequestFailed("disconnected", repr(error)) from None
        except (ValueError, asyncio.LimitOverrunError) as error:
            raise RequestFailed("protocol", repr(error)) from None

    @staticmethod
    async def _read_answer(reader: asyncio.StreamReader) -> tuple[int, bytes, bool]:
        lines = (await reader.readuntil(b"\r\n\r\n")).split(b"\r\n")
        status = int(lines[0].split(b" ", 2)[1])
        length = -1
        chunked = False
        keep = True
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding":
                chunked = b"chunked" in value.lower()
            elif name == b"connection":
                keep = b"close" not in value.lower()
        if chunked:
            parts = []
            while True:
                size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
                parts.append(await reader.readexactly(size + 2))
                if size == 0:
                    break
            return status, b"".join(part[:-2] for part in parts), keep
        if length >= 0:
            return status, await reader.readexactly(length), keep
        # Neither length nor chunks: the body runs until the server closes the connection.
        return status, await reader.read(), False

    async def _expire(self) -> None:
        """Abort connections whose answer is overdue; cheaper than a timer per request."""
        while True:
            await asyncio.sleep(min(1.0, self._timeout / 4))
            deadline = time.monotonic() - self._timeout
            for connection in list(self._busy):
                if connection.started is not None and connection.started < deadline:
                    connection.timed_out = True
                    connection.close()

    async def aclose(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watchdog
        while not self._slots.empty():
            connection = self._slots.get_nowait()
            if connection is not None:
                connection.close()


class _HttpxClient:
    def __init__(self, url: str, connections: int, timeout: float) -> None:
        import httpx  # only when chosen: the raw client needs nothing beyond asyncio

        self._httpx = httpx
        self._client = httpx.AsyncClient(
            base_url=url,
            limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections),
            # The pool wait is part of the measured latency, so it shares the request's budget.
            timeout=httpx.Timeout(timeout),
            http1=True,
            http2=False,
        )

    async def request(
        self, method: str, path: str, body: bytes | None = None, forwarded_for: str | None = None
    ) -> tuple[int, bytes]:
        httpx = self._httpx
        headers = {"content-type": "application/json"} if body is not None else {}
        if forwarded_for is not None:
            headers["x-forwarded-for"] = forwarded_for
        try:
            response = await self._client.request(method, path, content=body, headers=headers)
        except httpx.TimeoutException as error:
            raise RequestFailed("timeout", repr(error)) from None
        except httpx.ConnectError as error:
            raise RequestFailed("connect", repr(error)) from None
        except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError) as error:
            raise RequestFailed("disconnected", repr(error)) from None
        except httpx.HTTPError as error:
            raise RequestFailed("protocol", repr(error)) from None
        return response.status_code, response.content

    async def aclose(self) -> None:
        await self._client.aclose()
