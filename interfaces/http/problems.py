"""RFC 9457 problem details, each with a stable machine-readable ``code``."""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

import structlog
from litestar import Request
from litestar.exceptions import HTTPException
from litestar.plugins.problem_details import (
    ProblemDetailsConfig,
    ProblemDetailsException,
    ProblemDetailsPlugin,
)

from application.error_text import describe
from application.outages import StoreUnavailable
from application.rate_limits import RateLimited
from domain.errors import AlreadyRegistered, DomainError, InvalidRegistration

log = structlog.get_logger(__name__)

PROBLEM_JSON = "application/problem+json"

_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "body_too_large",
    415: "unsupported_media_type",
    429: "rate_limited",
    500: "internal_error",
    503: "service_unavailable",
}

# Clients back off this long when the event store is down; short, since a failover is quick.
UNAVAILABLE_RETRY_AFTER_SECONDS = 5


def problem(
    status: int,
    code: str,
    detail: str,
    *,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> ProblemDetailsException:
    return ProblemDetailsException(
        status_code=status,
        title=HTTPStatus(status).phrase,
        detail=detail,
        headers=headers,
        extra={"code": code, **extra},
    )


def from_domain(error: DomainError) -> ProblemDetailsException:
    if isinstance(error, InvalidRegistration):
        return problem(
            422,
            error.code,
            "One or more fields are invalid.",
            errors=[{"field": e.field, "code": e.code, "message": e.message} for e in error.errors],
        )
    if isinstance(error, AlreadyRegistered):
        return problem(
            409, error.code, f"This {error.field} is already registered.", field=error.field
        )
    return problem(422, error.code, str(error))


def from_http(error: HTTPException) -> ProblemDetailsException:
    if isinstance(error, ProblemDetailsException):
        return error
    status = error.status_code
    detail = error.detail if error.detail and error.detail != HTTPStatus(status).phrase else ""
    return problem(
        status,
        _CODES.get(status, HTTPStatus(status).phrase.lower().replace(" ", "_")),
        detail or HTTPStatus(status).description,
        headers=error.headers,
    )


def unavailable(_: StoreUnavailable) -> ProblemDetailsException:
    return problem(
        503,
        "service_unavailable",
        "The service cannot record registrations right now. Retry later, with the same "
        "Idempotency-Key: a retry never creates a second registration.",
        headers={"Retry-After": str(UNAVAILABLE_RETRY_AFTER_SECONDS)},
    )


def rate_limited(error: RateLimited) -> ProblemDetailsException:
    return problem(
        429,
        "rate_limited",
        f"Too many signup attempts ({error.limit}); retry in {error.retry_after} seconds.",
        headers={"Retry-After": str(error.retry_after)},
        limit=error.limit,
    )


def _internal_error(request: Request[Any, Any, Any], error: Exception) -> Any:
    log.error("unhandled_error", path=request.url.path, error=describe(error))
    return problem(500, "internal_error", "An unexpected error occurred.").to_response(request)


def problem_details_plugin() -> ProblemDetailsPlugin:
    return ProblemDetailsPlugin(
        ProblemDetailsConfig(
            exception_to_problem_detail_map={
                HTTPException: from_http,
                DomainError: from_domain,
                StoreUnavailable: unavailable,
                RateLimited: rate_limited,
            }
        )
    )


exception_handlers = {Exception: _internal_error}
