"""POST /registrations: parse, call the use case, map the answer."""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Request, Response, post
from litestar.di import NamedDependency
from litestar.plugins.problem_details import ProblemDetailsException

from application.idempotency import StoredAnswer
from application.registering import RegisterUser
from application.services import Services
from domain.errors import DomainError
from interfaces.http.client_address import client_address
from interfaces.http.idempotent import answer_once, check_key
from interfaces.http.openapi import REGISTRATION_RESPONSES, RegistrationOperation
from interfaces.http.problems import PROBLEM_JSON, from_domain, problem
from interfaces.http.shapes import RegistrationAccepted

MAX_BODY_BYTES = 16 * 1024
_encode = msgspec.json.Encoder().encode


def _decode_form(request: Request[Any, Any, Any], body: bytes) -> object:
    media_type, _ = request.content_type
    if media_type != "application/json":
        raise problem(415, "unsupported_media_type", "Send the form as application/json.")
    try:
        return msgspec.json.decode(body)
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError) as error:
        raise problem(400, "malformed_json", f"The body is not valid JSON: {error}.") from None


def _problem_answer(
    request: Request[Any, Any, Any], error: ProblemDetailsException
) -> StoredAnswer:
    response = error.to_response(request)
    return StoredAnswer(
        error.status_code,
        _encode(response.content),
        {"content-type": PROBLEM_JSON, **(error.headers or {})},
    )


async def _register(register_user: RegisterUser, form: object, client: str) -> StoredAnswer:
    accepted = await register_user(form, client)
    body = RegistrationAccepted(registration_id=accepted.registration_id, status="pending")
    location = f"/registrations/{accepted.registration_id}"
    return StoredAnswer(
        202, _encode(body), {"content-type": "application/json", "location": location}
    )


@post(
    "/registrations",
    status_code=202,
    request_max_body_size=MAX_BODY_BYTES,
    summary="Request a registration",
    operation_class=RegistrationOperation,
    responses=REGISTRATION_RESPONSES,
    description="Records the request and answers 202; poll the Location for its status.",
    tags=["registrations"],
)
async def register(
    request: Request[Any, Any, Any],
    services: NamedDependency[Services],
) -> Response[bytes]:
    body = await request.body()
    form = _decode_form(request, body)
    key = request.headers.get("idempotency-key")
    peer = request.client.host if request.client else ""
    client = client_address(peer, request.headers.get("x-forwarded-for"), services.trusted_proxies)

    async def produce() -> StoredAnswer:
        try:
            return await _register(services.register_user, form, client)
        except DomainError as error:
            return _problem_answer(request, from_domain(error))

    answer = await (
        produce()
        if key is None
        else answer_once(services.idempotency, check_key(key), body, produce)
    )
    headers = dict(answer.headers)
    media_type = headers.pop("content-type", "application/json")
    return Response(answer.body, status_code=answer.status, headers=headers, media_type=media_type)
