"""GET /registrations/{id}: where a registration stands. No personal data in the answer."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

import msgspec
from litestar import Request, get
from litestar.di import NamedDependency
from litestar.params import FromPath

from application.services import Services
from interfaces.http.client_address import client_address
from interfaces.http.openapi import STATUS_RESPONSES
from interfaces.http.problems import problem


class RegistrationStatusView(msgspec.Struct, omit_defaults=True):
    registration_id: uuid.UUID
    status: Literal["pending", "completed", "failed"]
    requested_at: datetime
    updated_at: datetime
    user_id: uuid.UUID | None = None
    reason: str | None = None


@get(
    "/registrations/{registration_id:str}",
    summary="A registration's status",
    responses=STATUS_RESPONSES,
    description="pending until the read models have the user; then completed, or failed.",
    tags=["registrations"],
)
async def registration_status(
    registration_id: FromPath[str],
    services: NamedDependency[Services],
    request: Request,  # type: ignore[type-arg]
) -> RegistrationStatusView:
    # Every X-Forwarded-For line, in order, as the POST handler reads them.
    forwarded = ", ".join(request.headers.getall("x-forwarded-for", [])) or None
    peer = request.client.host if request.client else ""
    client = client_address(peer, forwarded, services.trusted_proxies)
    found = await services.get_status(registration_id, client)
    if found is None:
        raise problem(404, "registration_not_found", "No registration has this id.")
    return RegistrationStatusView(
        registration_id=found.registration_id,
        status=found.status,  # type: ignore[arg-type]
        requested_at=found.requested_at,
        updated_at=found.updated_at,
        user_id=found.user_id,
        reason=found.reason,
    )
