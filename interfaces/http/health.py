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
    summary="PostgreSQL and Redis answer",
    responses={503: ResponseSpec(Health, description="PostgreSQL or Redis does not answer")},
)
async def ready(services: NamedDependency[Services]) -> Response[Health]:
    checks = await services.readiness()
    healthy = all(checks.values())
    return Response(
        Health(status="ok" if healthy else "unavailable", checks=checks),
        status_code=200 if healthy else 503,
    )
