"""POST /registrations: parse, call the use case, map the answer.

A plain ASGI handler (``interfaces/http/plain.py`` says why); ``documented`` below declares
the operation the OpenAPI document shows. ``registrations`` serves the whole /registrations
tree: this POST, the status query (``interfaces/http/status.py``) and email verification
(``interfaces/http/verification.py``).
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable

import msgspec
from litestar import Request, asgi, post
from litestar._multipart import parse_content_header
from litestar.exceptions import NotFoundException
from litestar.plugins.problem_details import ProblemDetailsException
from litestar.types import Receive, Scope, Send

from application.idempotency import StoredAnswer
from application.outages import StoreUnavailable
from application.registering import RegisterUser
from application.services import Services, services_of
from domain.errors import DomainError
from interfaces.http import verification
from interfaces.http.client_address import client_of
from interfaces.http.idempotent import answer_once, check_key
from interfaces.http.openapi import REGISTRATION_RESPONSES, RegistrationOperation
from interfaces.http.plain import only, read_headers, send_answer
from interfaces.http.problems import PROBLEM_JSON, from_domain, problem
from interfaces.http.shapes import RegistrationAccepted
from interfaces.http.status import answer_status

PATH = "/registrations"
MAX_BODY_BYTES = 16 * 1024
_encode = msgspec.json.Encoder().encode


_READ = frozenset({b"content-type", b"content-length", b"idempotency-key", b"x-forwarded-for"})


def _too_large() -> ProblemDetailsException:
    return problem(413, "body_too_large", "The body is over 16 KiB.")


async def _body(receive: Receive, declared: str | None) -> bytes:
    if declared is not None and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise _too_large()
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise problem(400, "bad_request", "The client went away before sending its body.")
        chunk: bytes = message.get("body", b"")  # type: ignore[assignment]
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise _too_large()
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _decode_form(content_type: str | None, body: bytes) -> object:
    media_type, _ = parse_content_header(content_type or "")
    if media_type != "application/json":
        raise problem(415, "unsupported_media_type", "Send the form as application/json.")
    try:
        return msgspec.json.decode(body)
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError) as error:
        raise problem(400, "malformed_json", f"The body is not valid JSON: {error}.") from None


def _problem_answer(scope: Scope, error: ProblemDetailsException) -> StoredAnswer:
    """The problem as Litestar would render it, kept to be replayed byte for byte."""
    response = error.to_response(Request(scope))
    return StoredAnswer(
        error.status_code,
        _encode(response.content),
        {"content-type": PROBLEM_JSON, **(error.headers or {})},
    )


async def _register(register_user: RegisterUser, form: object, client: str) -> StoredAnswer:
    accepted = await register_user(form, client)
    return _accepted(accepted.registration_id)


def _accepted(registration_id: uuid.UUID) -> StoredAnswer:
    body = RegistrationAccepted(registration_id=registration_id, status="pending")
    spelled = str(registration_id)  # once: 0.6 us each time
    return StoredAnswer(
        202,
        _encode(body),
        {"content-type": "application/json", "location": f"{PATH}/{spelled}"},
        subject=spelled,
    )


def _eventually_accepted(error: BaseException) -> Awaitable[StoredAnswer] | None:
    """A signup told 503 because its batch did not commit in time, which may commit yet: the
    202 it will then have had, so that its Idempotency-Key retry is answered with it."""
    if not isinstance(error, StoreUnavailable) or error.outcome is None:
        return None
    outcome, registration_id = error.outcome, error.registration_id
    if registration_id is None:
        return None

    async def accepted() -> StoredAnswer:
        await outcome
        return _accepted(registration_id)

    return accepted()


STATUS_TEMPLATE = f"{PATH}/{{registration_id}}"


# A mount, not two routes: Litestar 2.25 cannot route a plain ASGI handler with a path
# parameter (any method answers 500), and a mount takes the whole tree as one handler.
@asgi(PATH, is_mount=True, copy_scope=False)
async def registrations(scope: Scope, receive: Receive, send: Send) -> None:
    # The mount matches by prefix and leaves the rest of the path, slash-ended:
    # /registrations -> "/", /registrations/ID -> "/ID/", /registrationsX -> "X/".
    rest = scope["path"]
    services: Services = services_of(scope["app"].state)
    if rest == "/":
        scope["path"] = scope["path_template"] = PATH
        await register(scope, receive, send, services)
        return
    registration_id = rest[1:-1]
    scope["path"] = PATH + rest.rstrip("/")
    if not rest.startswith("/") or not registration_id:
        raise NotFoundException()
    if "/" in registration_id:
        # /registrations/ID/verification[/resend], or nothing.
        await verification.route(scope, receive, send, services, rest)
        return
    # One series of request metrics for every id (observability reads the template).
    scope["path_template"] = STATUS_TEMPLATE
    if await only("GET", scope, send):
        await answer_status(scope, send, services, registration_id)


async def register(scope: Scope, receive: Receive, send: Send, services: Services) -> None:
    if not await only("POST", scope, send):
        return
    headers = read_headers(scope["headers"], _READ)
    body = await _body(receive, headers.get("content-length"))
    form = _decode_form(headers.get("content-type"), body)
    key = headers.get("idempotency-key")
    client = client_of(scope, headers.get("x-forwarded-for"), services.trusted_proxies)

    async def produce() -> StoredAnswer:
        try:
            return await _register(services.register_user, form, client)
        except DomainError as error:
            return _problem_answer(scope, from_domain(error))

    answer = await (
        produce()
        if key is None
        else answer_once(services.idempotency, check_key(key), body, produce, _eventually_accepted)
    )
    await send_answer(send, answer.status, answer.body, answer.headers)


@post(
    PATH,
    status_code=202,
    summary="Request a registration",
    operation_class=RegistrationOperation,
    responses=REGISTRATION_RESPONSES,
    description="Records the request and answers 202; poll the Location for its status.",
    tags=["registrations"],
)
async def documented() -> RegistrationAccepted:
    """The operation as the OpenAPI document tells it; ``register`` serves it."""
    raise NotImplementedError
