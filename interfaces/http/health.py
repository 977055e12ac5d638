"""Liveness and readiness probes."""

from __future__ import annotations

from litestar import Response, get
from litestar.di import NamedDependency
from litestar.openapi.datastructures import ResponseSpec

from application.services import Services
from interfaces.http.shapes import Health


@get("/health/live", tags=["operations"], summary="The process is up")
async def live() -> Health:
    return Health(status="ok")


@get(
    "/health/ready",
    tags=["operations"],
    summary="PostgreSQL and Redis answer, and the projections move",
    description=(
        "503 when PostgreSQL or Redis does not answer, or when a projection has had events"
        " waiting without moving for SIGNUP_PROJECTION_STALL_SECONDS (its worker is dead, hung"
        " or cut off: registrations stay pending). Signups are still accepted meanwhile."
    ),
    responses={
        503: ResponseSpec(
            Health, description="A server does not answer, or a projection has stalled"
        )
    },
)
async def ready(services: NamedDependency[Services]) -> Response[Health]:
    checks = await services.readiness()
    healthy = all(checks.values())
    return Response(
        Health(status="ok" if healthy else "unavailable", checks=checks),
        status_code=200 if healthy else 503,
    )
