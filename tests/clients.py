"""HTTP clients for the tests that put load on a server."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import httpx

# One TLS context for every client the tests make. httpx builds one for each client it makes
# (and `httpx.get` makes a client a call), loading the CA bundle each time: ~21 ms of CPU. The
# tests' polling loops paid that every 0.2 s, about a thousand times a full run (py-spy); with
# the shared context the suite's CPU fell 321 -> 307 s on one VM. The servers speak plain HTTP;
# where one speaks TLS (the load-balancer test) the test brings its own context.
TLS = httpx.create_ssl_context()


def get(url: str, **options: Any) -> httpx.Response:
    """``httpx.get`` on the shared TLS context."""
    return httpx.get(url, verify=TLS, **options)


def post(url: str, **options: Any) -> httpx.Response:
    """``httpx.post`` on the shared TLS context."""
    return httpx.post(url, verify=TLS, **options)


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
            await stack.enter_async_context(httpx.AsyncClient(limits=limits, verify=TLS, **options))
            for _ in range(count)
        ]
