"""GET /registrations/{id}: where a registration stands. No personal data in the answer.

A plain ASGI handler, as the POST is (``interfaces/http/plain.py`` says why): status polls
are a tenth of the requests, and through Litestar's route machinery (a ``Request``, the
dependency, the path parameter's model, a ``Response``) each cost more than a signup's
handler. ``documented`` declares the operation the OpenAPI document shows.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

import msgspec
from litestar import get
from litestar.params import FromPath
from litestar.types import Scope, Send

from application.services import Services
from interfaces.http.client_address import client_of
from interfaces.http.openapi import STATUS_RESPONSES
from interfaces.http.plain import read_headers, send_answer
from interfaces.http.problems import problem

_encode = msgspec.json.Encoder().encode
_JSON = {"content-type": "application/json"}
_FORWARDED = frozenset({b"x-forwarded-for"})


class RegistrationStatusView(msgspec.Struct, omit_defaults=True):
    registration_id: uuid.UUID
    # In the order a registration goes through them: pending, then completed (or failed),
    # then verified or expired.
    status: Literal["pending", "completed", "failed", "verified", "expired"]
    requested_at: datetime
    updated_at: datetime
    user_id: uuid.UUID | None = None
    reason: str | None = None


async def answer_status(scope: Scope, send: Send, services: Services, registration_id: str) -> None:
    # Every X-Forwarded-For line, in order, as the POST handler reads them.
    forwarded_for = read_headers(scope["headers"], _FORWARDED).get("x-forwarded-for")
    client = client_of(scope, forwarded_for, services.trusted_proxies)
    found = await services.get_status(registration_id, client)
    if found is None:
        raise problem(404, "registration_not_found", "No registration has this id.")
    view = RegistrationStatusView(
        registration_id=found.registration_id,
        status=found.status,  # type: ignore[arg-type]
        requested_at=found.requested_at,
        updated_at=found.updated_at,
        user_id=found.user_id,
        reason=found.reason,
    )
    await send_answer(send, 200, _encode(view), _JSON)


@get(
    "/registrations/{registration_id:str}",
    summary="A registration's status",
    responses=STATUS_RESPONSES,
    description=(
        "`status`, in order: `pending` until the read models have the user; then `completed`"
        " (a message with a verification code is on its way), or `failed`; then `verified`"
        " (the person proved the email) or `expired` (not verified in time: its values are"
        " free again, its personal data shredded)."
    ),
    tags=["registrations"],
)
async def documented(registration_id: FromPath[str]) -> RegistrationStatusView:
    """The operation as the OpenAPI document tells it; ``answer_status`` serves it."""
    raise NotImplementedError
