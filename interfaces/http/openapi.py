"""The contract of POST /registrations in the OpenAPI document.

The handler reads the raw body itself (to report every invalid field at once, which a
decoder that stops at the first error cannot), so the request body is described here, from
the domain's own constants, and attached with ``operation_class``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import msgspec
from litestar import Litestar
from litestar.handlers import HTTPRouteHandler
from litestar.openapi import OpenAPIConfig
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import OpenAPIMediaType, OpenAPIType, Operation, RequestBody, Schema

from domain.address import CEP_SHAPE, UFS
from domain.contact import EMAIL_MAX_LENGTH
from domain.documents import CNPJ_SHAPE, CPF_SHAPE
from domain.form import NAME_LENGTH, NUMBER_LENGTH, TEXT_LENGTH
from interfaces.http.problems import PROBLEM_JSON
from interfaces.http.shapes import RegistrationAccepted


def _text(lengths: tuple[int, int], description: str, *, nullable: bool = False) -> Schema:
    kind = [OpenAPIType.STRING, OpenAPIType.NULL] if nullable else OpenAPIType.STRING
    return Schema(type=kind, min_length=lengths[0], max_length=lengths[1], description=description)


def _trimmed(shape: re.Pattern[str]) -> str:
    """The domain's own shape of a value, as a JSON Schema pattern (surrounding blanks are
    trimmed before it is checked)."""
    return rf"^\s*{shape.pattern}\s*$"


def _pattern(pattern: str, description: str, *, nullable: bool = False) -> Schema:
    kind = [OpenAPIType.STRING, OpenAPIType.NULL] if nullable else OpenAPIType.STRING
    return Schema(type=kind, pattern=pattern, description=description)


_ADDRESS = Schema(
    type=OpenAPIType.OBJECT,
    additional_properties=False,
    required=["cep", "street", "number", "neighborhood", "city", "state"],
    properties={
        "cep": _pattern(_trimmed(CEP_SHAPE), "8 digits, masked (01310-100) or not"),
        "street": _text(TEXT_LENGTH, "trimmed"),
        "number": _text(NUMBER_LENGTH, '"S/N" allowed'),
        "complement": _text((0, TEXT_LENGTH[1]), "optional", nullable=True),
        "neighborhood": _text(TEXT_LENGTH, "trimmed"),
        "city": _text(TEXT_LENGTH, "trimmed"),
        "state": Schema(
            type=OpenAPIType.STRING,
            pattern=r"^\s*[A-Za-z]{2}\s*$",
            description="one of the 27 UFs, any case: " + ", ".join(sorted(UFS)),
        ),
    },
)

REGISTRATION_REQUEST = Schema(
    title="RegistrationRequest",
    type=OpenAPIType.OBJECT,
    additional_properties=False,
    required=[
        "person_type",
        "cpf",
        "name",
        "mobile_phone",
        "email",
        "email_confirmation",
        "address",
        "accepted_terms",
    ],
    properties={
        "person_type": Schema(type=OpenAPIType.STRING, enum=["PF", "PJ"]),
        "cpf": _pattern(
            _trimmed(CPF_SHAPE),
            "11 digits, masked or not, with valid check digits; for PJ the responsible person",
        ),
        "cnpj": _pattern(
            _trimmed(CNPJ_SHAPE),
            "required for PJ, absent or null for PF; numeric or alphanumeric (since July 2026)",
            nullable=True,
        ),
        "name": _text(NAME_LENGTH, "trimmed"),
        "mobile_phone": _pattern(
            r"^[0-9+()\s.-]+$", "a Brazilian mobile: area code and 9 digits starting with 9"
        ),
        "phone": Schema(
            type=[OpenAPIType.STRING, OpenAPIType.NULL],
            description="optional; a Brazilian landline",
        ),
        "email": Schema(
            type=OpenAPIType.STRING,
            max_length=EMAIL_MAX_LENGTH + 64,  # surrounding spaces are trimmed before the limit
            description=f"stored trimmed, NFC, lower-cased; at most {EMAIL_MAX_LENGTH} characters",
        ),
        "email_confirmation": Schema(
            type=OpenAPIType.STRING, description="must equal email after normalisation"
        ),
        "address": _ADDRESS,
        "accepted_terms": Schema(type=OpenAPIType.BOOLEAN, const=True),
    },
)


@dataclass
class RegistrationOperation(Operation):
    def __post_init__(self) -> None:
        self.request_body = RequestBody(
            required=True,
            description="The signup form. Every invalid field is reported at once (422).",
            content={"application/json": OpenAPIMediaType(schema=REGISTRATION_REQUEST)},
        )


class FieldProblem(msgspec.Struct):
    field: str
    code: str
    message: str


class Problem(msgspec.Struct, omit_defaults=True):
    """RFC 9457 problem details, with a stable machine-readable ``code``."""

    status: int
    title: str
    detail: str
    code: str
    errors: list[FieldProblem] | None = None
    field: str | None = None
    limit: str | None = None
    attempts_left: int | None = None
    registration_expired: bool | None = None


def _problem(description: str) -> ResponseSpec:
    return ResponseSpec(data_container=Problem, description=description, media_type=PROBLEM_JSON)


REGISTRATION_RESPONSES = {
    202: ResponseSpec(
        data_container=RegistrationAccepted,
        description="Recorded (durable); poll the Location header's URL for the status",
    ),
    400: _problem("Not JSON, malformed JSON, or an invalid Idempotency-Key"),
    409: _problem(
        "Email, PF CPF or PJ CNPJ already registered (`field` names which), or a request "
        "with this Idempotency-Key still in flight"
    ),
    413: _problem("Body over 16 KiB"),
    415: _problem("Not application/json"),
    422: _problem(
        "Invalid fields (`errors` lists every one), or an Idempotency-Key reused with another body"
    ),
    429: _problem("Rate limit hit; see Retry-After"),
    503: _problem(
        "The event store is unavailable; retry after Retry-After (never a second registration)"
    ),
}

VERIFY_RESPONSES = {
    400: _problem("Not JSON"),
    404: _problem("Unknown or malformed registration id"),
    410: _problem(
        "`verification_code_expired`: the code expired (ask for a new one), or the registration did"
    ),
    413: _problem("Body over 1 KiB"),
    415: _problem("Not application/json"),
    422: _problem(
        "`verification_code_invalid`: a wrong code (`attempts_left` says how many this code"
        " may still take); `validation_failed`: no `code` string"
    ),
    429: _problem(
        "`verification_attempts_exceeded`: every attempt of this code is spent (ask for a"
        " new one), or `rate_limited`; see Retry-After"
    ),
    503: _problem("The databases cannot be reached; retry after a moment"),
}

RESEND_RESPONSES = {
    404: _problem("Unknown or malformed registration id"),
    409: _problem("`registration_already_verified`"),
    410: _problem("`registration_expired`: not verified in time; sign up again"),
    413: _problem("Body over 1 KiB"),
    429: _problem(
        "`verification_resend_limited`: too soon after the last message, or every message"
        " spent; or `rate_limited`; see Retry-After"
    ),
    503: _problem("The databases cannot be reached; retry after a moment"),
}

STATUS_RESPONSES = {
    404: _problem("Unknown or malformed registration id"),
    429: _problem("Too many status queries from this client; see Retry-After"),
    503: _problem("The databases cannot be reached; retry after a moment"),
}


def document_operations(
    app: Litestar, handlers: Sequence[HTTPRouteHandler], config: OpenAPIConfig
) -> None:
    """Add to ``app``'s OpenAPI document the operations of ``handlers``, which describe
    routes that plain ASGI handlers serve (Litestar documents only its HTTP handlers).

    The operations are generated by Litestar from the handlers, in an app of their own that
    is never served, then copied with the schemas they refer to. The app builds its
    document once; this runs before anything can ask for it."""
    # No logging config: Litestar's default would take over the process's root logger.
    app_of_their_own = Litestar(
        route_handlers=list(handlers), openapi_config=config, logging_config=None
    )
    described = app_of_their_own.openapi_schema
    document = app.openapi_schema
    assert document.paths is not None and described.paths is not None
    document.paths.update(described.paths)
    document.components.schemas.update(described.components.schemas or {})
