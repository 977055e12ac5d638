"""What a plain ASGI handler needs to answer: the response, and the methods it takes.

Litestar's per-request machinery (a ``Request``, keyword models, a ``Response`` rendered into
an ``ASGIResponse``) was a quarter of a signup's CPU under load, so ``POST /registrations``
and ``GET /registrations/{id}`` are served by plain ASGI handlers, still routed by Litestar
and still inside its middleware and exception handlers (problem details). Their OpenAPI
operations are declared by handlers that are never served (``interfaces/http/openapi.py``'s
``document_operations``). Litestar 2.25 cannot route a plain handler with a path parameter
(every method answers 500), so one mount serves the /registrations tree
(``interfaces/http/registrations.py``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from litestar.exceptions import MethodNotAllowedException
from litestar.types import HTTPResponseBodyEvent, HTTPResponseStartEvent, Scope, Send


def read_headers(raw: Iterable[tuple[bytes, bytes]], wanted: frozenset[bytes]) -> dict[str, str]:
    """The request headers a handler reads (``wanted``, lower-case), decoded as HTTP does
    (latin-1); a repeated one (X-Forwarded-For) is joined in order, as RFC 9110 allows for
    list-valued fields."""
    found: dict[str, str] = {}
    for name, value in raw:
        if name in wanted:
            text = value.decode("latin-1")
            key = name.decode()
            found[key] = f"{found[key]}, {text}" if key in found else text
    return found


async def send_answer(send: Send, status: int, body: bytes, headers: Mapping[str, str]) -> None:
    encoded = [(name.encode("latin-1"), value.encode("latin-1")) for name, value in headers.items()]
    encoded.append((b"content-length", str(len(body)).encode()))
    await send(HTTPResponseStartEvent(type="http.response.start", status=status, headers=encoded))
    await send(HTTPResponseBodyEvent(type="http.response.body", body=body, more_body=False))


async def only(method: str, scope: Scope, send: Send) -> bool:
    """Whether to go on with the request: OPTIONS is answered here (as Litestar answers it
    for its own routes), any method but ``method`` refused with 405."""
    allowed = f"{method}, OPTIONS"
    asked = scope["method"]  # type: ignore[typeddict-item]
    if asked == method:
        return True
    if asked == "OPTIONS":
        await send_answer(send, 204, b"", {"allow": allowed})
        return False
    raise MethodNotAllowedException(headers={"Allow": allowed})
