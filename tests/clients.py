"""HTTP clients for the tests that put load on a server."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import httpx

# How long the load clients keep an idle connection: less than uvicorn's keep-alive (5 s). A
# connection idle for about that long could be closed by the server just as the client reuses
# it (a ReadError: a race of the client's, not an answer of the API's; the crash test met it
# once, its pooled connections idle while the worker caught up).
KEEPALIVE_SECONDS = 2.0


@contextlib.asynccontextmanager
async def separate_clients(
    count: int, connections: int = 1, **options: Any
) -> AsyncIterator[list[httpx.AsyncClient]]:
    """``count`` clients with a pool of ``connections`` each, one for each concurrent sender.

    Not one client whose pool is shared by all: httpcore hands a pool's queued requests to its
    connections by scanning them all on every request. At 32 senders that cost the test
    process ~3 ms of CPU a request (a third of its samples, py-spy), and the test's own client,
    not the server, was the bottleneck of the load it meant to put on the server.
    """
    limits = httpx.Limits(max_connections=connections, keepalive_expiry=KEEPALIVE_SECONDS)
    async with contextlib.AsyncExitStack() as stack:
        yield [
            await stack.enter_async_context(httpx.AsyncClient(limits=limits, **options))
            for _ in range(count)
        ]
