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
from domain.verification import (
    AlreadyVerified,
    RegistrationExpired,
    ResendRefused,
    TooManyVerificationAttempts,
    VerificationCodeExpired,
    VerificationCodeInvalid,
)

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
    verification = _verification_problem(error)
    if verification is not None:
        return verification
    return problem(422, error.code, str(error))


def _verification_problem(error: DomainError) -> ProblemDetailsException | None:
    if isinstance(error, VerificationCodeInvalid):
        return problem(
            422,
            error.code,
            "The code is not this registration's (or no code was sent yet).",
            attempts_left=error.attempts_left,
        )
    if isinstance(error, VerificationCodeExpired):
        detail = (
            "The registration expired before its email was verified; sign up again."
            if error.registration_expired
            else "The code has expired; ask for a new one (POST .../verification/resend)."
        )
        return problem(410, error.code, detail, registration_expired=error.registration_expired)
    if isinstance(error, TooManyVerificationAttempts):
        return problem(
            429,
            error.code,
            "Too many wrong codes; ask for a new one (POST .../verification/resend).",
            headers={"Retry-After": str(error.retry_after)},
        )
    if isinstance(error, ResendRefused):
        return problem(
            429,
            error.code,
            f"A new code cannot be sent yet; retry in {error.retry_after} seconds.",
            headers={"Retry-After": str(error.retry_after)},
        )
    if isinstance(error, AlreadyVerified):
        return problem(409, error.code, str(error))
    if isinstance(error, RegistrationExpired):
        return problem(410, error.code, str(error))
    return None


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
