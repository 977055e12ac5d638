"""HTTP clients for the tests that put load on a server."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import httpx


@contextlib.asynccontextmanager
async def separate_clients(
    count: int, connections: int = 1, keepalive_expiry: float = 5.0, **options: Any
) -> AsyncIterator[list[httpx.AsyncClient]]:
    """``count`` clients with a pool of ``connections`` each, one for each concurrent sender.

    Not one client whose pool is shared by all: httpcore hands a pool's queued requests to its
    connections by scanning them all on every request. At 32 senders that cost the test
    process ~3 ms of CPU a request (a third of its samples, py-spy), and the test's own client,
    not the server, was the bottleneck of the load it meant to put on the server.
    """
    limits = httpx.Limits(max_connections=connections, keepalive_expiry=keepalive_expiry)
    async with contextlib.AsyncExitStack() as stack:
        yield [
            await stack.enter_async_context(httpx.AsyncClient(limits=limits, **options))
            for _ in range(count)
        ]
