"""POST /registrations/{id}/verification and POST /registrations/{id}/verification/resend.

Plain ASGI handlers under the /registrations mount, as the POST and the status query are
(``interfaces/http/plain.py`` says why); ``documented_*`` declare the operations the OpenAPI
document shows. Thin: read the body, call one use case, map its answer. Nothing a person typed
(the code) is logged.
"""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import post
from litestar._multipart import parse_content_header
from litestar.exceptions import NotFoundException
from litestar.params import FromPath, JSONBody
from litestar.types import Receive, Scope, Send

from application.services import Services
from domain.errors import DomainError
from domain.verification import (
    TooManyVerificationAttempts,
    VerificationCodeExpired,
    VerificationCodeInvalid,
)
from infrastructure import metrics
from interfaces.http.client_address import client_of
from interfaces.http.openapi import RESEND_RESPONSES, VERIFY_RESPONSES
from interfaces.http.plain import only, read_headers, send_answer
from interfaces.http.problems import problem
from interfaces.http.shapes import VerificationRequest, VerificationResent
from interfaces.http.status import RegistrationStatusView

VERIFY_TEMPLATE = "/registrations/{registration_id}/verification"
RESEND_TEMPLATE = "/registrations/{registration_id}/verification/resend"
# A code is six digits and a link's token 43 characters: a body is never near this.
MAX_BODY_BYTES = 1024
_READ = frozenset({b"content-type", b"content-length", b"x-forwarded-for"})
_encode = msgspec.json.Encoder().encode
_JSON = {"content-type": "application/json"}


async def route(scope: Scope, receive: Receive, send: Send, services: Services, rest: str) -> None:
    """``rest``: the path under /registrations, as the mount leaves it ("/ID/verification/")."""
    parts = rest.strip("/").split("/")
    if parts[1:] == ["verification"]:
        scope["path_template"] = VERIFY_TEMPLATE
        if await only("POST", scope, send):
            await verify(scope, receive, send, services, parts[0])
        return
    if parts[1:] == ["verification", "resend"]:
        scope["path_template"] = RESEND_TEMPLATE
        if await only("POST", scope, send):
            await resend(scope, receive, send, services, parts[0])
        return
    raise NotFoundException()


def _not_found() -> Exception:
    return problem(404, "registration_not_found", "No registration has this id.")


async def _body(receive: Receive, declared: str | None) -> bytes:
    too_large = problem(413, "body_too_large", f"The body is over {MAX_BODY_BYTES} bytes.")
    if declared is not None and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise too_large
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise problem(400, "bad_request", "The client went away before sending its body.")
        chunk: bytes = message.get("body", b"")  # type: ignore[assignment]
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise too_large
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _offered_code(content_type: str | None, body: bytes) -> str:
    media_type, _ = parse_content_header(content_type or "")
    if media_type != "application/json":
        raise problem(415, "unsupported_media_type", 'Send {"code": "..."} as application/json.')
    try:
        decoded: Any = msgspec.json.decode(body)
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
        raise problem(400, "malformed_json", "The body is not valid JSON.") from None
    errors = []
    if not isinstance(decoded, dict):
        errors.append({"field": "code", "code": "required", "message": "Send an object."})
    else:
        for name in list(decoded)[:10]:
            if name != "code":
                errors.append(
                    {"field": str(name)[:64], "code": "unknown_field", "message": "Unknown."}
                )
        code = decoded.get("code")
        if code is None:
            errors.insert(0, {"field": "code", "code": "required", "message": "Required."})
        elif not isinstance(code, str):
            errors.insert(0, {"field": "code", "code": "wrong_type", "message": "A string."})
        elif not errors:
            return code
    raise problem(422, "validation_failed", "One or more fields are invalid.", errors=errors)


async def verify(
    scope: Scope, receive: Receive, send: Send, services: Services, registration_id: str
) -> None:
    headers = read_headers(scope["headers"], _READ)
    body = await _body(receive, headers.get("content-length"))
    offered = _offered_code(headers.get("content-type"), body)
    client = client_of(scope, headers.get("x-forwarded-for"), services.trusted_proxies)
    try:
        found = await services.verify_email(registration_id, offered, client)
    except DomainError as error:
        metrics.VERIFICATIONS.labels(_OUTCOMES.get(type(error), "refused")).inc()
        raise
    if found is None:
        raise _not_found()
    metrics.VERIFICATIONS.labels("verified").inc()
    view = RegistrationStatusView(
        registration_id=found.registration_id,
        status=found.status,  # type: ignore[arg-type]
        requested_at=found.requested_at,
        updated_at=found.updated_at,
        user_id=found.user_id,
        reason=found.reason,
    )
    await send_answer(send, 200, _encode(view), _JSON)


_OUTCOMES: dict[type, str] = {
    VerificationCodeInvalid: "invalid",
    VerificationCodeExpired: "expired",
    TooManyVerificationAttempts: "attempts_exceeded",
}


async def resend(
    scope: Scope, receive: Receive, send: Send, services: Services, registration_id: str
) -> None:
    headers = read_headers(scope["headers"], _READ)
    # Whatever was sent (nothing, or {}), it is read and bounded, never interpreted.
    await _body(receive, headers.get("content-length"))
    client = client_of(scope, headers.get("x-forwarded-for"), services.trusted_proxies)
    queued = await services.resend_verification(registration_id, client)
    if queued is None:
        raise _not_found()
    await send_answer(send, 202, _encode(VerificationResent(registration_id=queued)), _JSON)


@post(
    VERIFY_TEMPLATE.replace("{registration_id}", "{registration_id:str}"),
    status_code=200,
    summary="Verify a registration's email",
    responses=VERIFY_RESPONSES,
    description=(
        "With the code from the message (or the token from its link). 200 with the status"
        " (`verified`); a registration already verified answers the same, adding nothing."
    ),
    tags=["registrations"],
)
async def documented_verify(
    registration_id: FromPath[str], data: JSONBody[VerificationRequest]
) -> RegistrationStatusView:
    """The operation as the OpenAPI document tells it; ``verify`` serves it."""
    raise NotImplementedError


@post(
    RESEND_TEMPLATE.replace("{registration_id}", "{registration_id:str}"),
    status_code=202,
    summary="Send a new verification code",
    responses=RESEND_RESPONSES,
    description=(
        "Queues a message with a new code (the previous one stops working). Limited: one"
        " every SIGNUP_VERIFICATION_RESEND_INTERVAL, SIGNUP_VERIFICATION_MAX_SENDS in all."
    ),
    tags=["registrations"],
)
async def documented_resend(registration_id: FromPath[str]) -> VerificationResent:
    """The operation as the OpenAPI document tells it; ``resend`` serves it."""
    raise NotImplementedError
