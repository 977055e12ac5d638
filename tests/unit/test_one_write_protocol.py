"""The API's HTTP protocol writes each answer to the socket once: head and body together."""

from __future__ import annotations

import asyncio
from typing import Any

import uvicorn
from uvicorn.server import ServerState

from interfaces.http.server import OneWriteProtocol


class Recorded(asyncio.Transport):
    """A socket's transport that records what is written to it."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: Any) -> None:
        self.writes.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 50000), "sockname": ("127.0.0.1", 8000)}.get(
            name, default
        )

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


async def _app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    headers = [(b"content-type", b"application/json"), (b"content-length", b"11")]
    await send({"type": "http.response.start", "status": 202, "headers": headers})
    await send({"type": "http.response.body", "body": b'{"ok":true}'})


async def _served(request: bytes) -> Recorded:
    config = uvicorn.Config(_app, lifespan="off", log_config=None, access_log=False)
    protocol = OneWriteProtocol(config, ServerState(), {}, asyncio.get_running_loop())
    transport = Recorded()
    protocol.connection_made(transport)
    protocol.data_received(request)
    for _ in range(20):  # the app's task, then the end of its turn of the loop
        await asyncio.sleep(0)
    return transport


async def test_an_answer_is_written_once_with_its_status_line_headers_and_body() -> None:
    transport = await _served(
        b"POST /registrations HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\n\r\n"
    )

    [written] = transport.writes
    assert written.startswith(b"HTTP/1.1 202 Accepted\r\n")
    assert b"content-length: 11\r\n" in written
    assert written.endswith(b'\r\n\r\n{"ok":true}')


async def test_an_answer_without_a_body_still_goes_out_in_the_same_turn() -> None:
    # HEAD: uvicorn writes no body, so the head is written at the end of the loop's turn.
    transport = await _served(b"HEAD /registrations HTTP/1.1\r\nhost: x\r\n\r\n")

    [written] = transport.writes
    assert written.startswith(b"HTTP/1.1 202 Accepted\r\n")
    assert written.endswith(b"\r\n\r\n")


async def test_an_answer_is_written_before_its_connection_is_closed() -> None:
    transport = await _served(b"POST /registrations HTTP/1.0\r\ncontent-length: 0\r\n\r\n")

    [written] = transport.writes
    assert written.endswith(b'{"ok":true}')
    assert transport.closed
