"""The two hot requests, served past Litestar's router (``interfaces/http/hot_routes.py``),
answer exactly as Litestar routing them answers: the same app twice, once with the shortcut
and once without, on in-memory fakes of the use cases' ports."""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
from litestar.testing import AsyncTestClient

from application.personal_data import Sealed
from application.registering import RegisterUser, Submission
from application.services import Services
from application.status import GetRegistrationStatus, RegistrationStatus
from domain.form import RegistrationDetails
from interfaces.http.app import create_app
from interfaces.http.hot_routes import SignupApp
from tests.factories import MISSING, valid_form

KNOWN = uuid.UUID("0192f5d2-7c1e-7abc-8def-0123456789ab")
# Fixed, not drawn: test processes must collect the same test ids.
UNKNOWN = uuid.UUID("0192f5d2-7c1e-7abc-8def-0123456789ac")


class Log:
    async def append(self, submission: Submission) -> None:
        pass


class Vault:
    def seal(self, registration_id: uuid.UUID, details: RegistrationDetails) -> Sealed:
        return Sealed(b"sealed", b"key")

    def open(
        self, registration_id: uuid.UUID, personal_data: bytes, key: bytes
    ) -> RegistrationDetails:
        raise NotImplementedError


class Statuses:
    async def find(self, registration_id: uuid.UUID) -> RegistrationStatus | None:
        if registration_id != KNOWN:
            return None
        at = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)
        return RegistrationStatus(KNOWN, "pending", at, at)


async def _never_ready() -> dict[str, bool]:
    return {}


def _app(*, shortcut: bool) -> SignupApp:
    services = Services(
        register_user=RegisterUser(Log(), b"reservation-key-of-these-tests!!", Vault()),
        # Only reached with an Idempotency-Key, or on the verification routes: none is sent.
        idempotency=None,  # type: ignore[arg-type]
        get_status=GetRegistrationStatus(Statuses()),
        readiness=_never_ready,
        verify_email=None,  # type: ignore[arg-type]
        resend_verification=None,  # type: ignore[arg-type]
    )

    @contextlib.asynccontextmanager
    async def open_services() -> AsyncIterator[Services]:
        yield services

    app = create_app(open_services)
    assert isinstance(app, SignupApp)
    if not shortcut:
        app._looked_up, app._hot_route = True, None  # Litestar routes everything
    return app


def _answer(response: Any) -> tuple[int, dict[str, str], str]:
    """Status, headers and body, with what differs by nature (the new registration's id, the
    request id) replaced."""
    headers = {k: v for k, v in response.headers.items() if k not in {"x-request-id", "date"}}
    body = response.text
    if response.status_code == 202:
        new_id = json.loads(body)["registration_id"]
        body = body.replace(new_id, "ID")
        headers = {k: v.replace(new_id, "ID") for k, v in headers.items()}
    return response.status_code, headers, body


JSON = {"content-type": "application/json"}
REQUESTS: list[tuple[str, str, dict[str, str], bytes | None]] = [
    ("POST", "/registrations", JSON, json.dumps(valid_form()).encode()),
    ("POST", "/registrations", JSON, json.dumps(valid_form(email=MISSING, cpf="1")).encode()),
    ("POST", "/registrations", JSON, b'{"person_type": '),
    ("POST", "/registrations", {"content-type": "text/plain"}, b"{}"),
    ("POST", "/registrations", JSON, b" " * (17 * 1024)),
    ("GET", f"/registrations/{KNOWN}", {}, None),
    ("GET", f"/registrations/{UNKNOWN}", {}, None),
    ("GET", "/registrations/not-an-id", {}, None),
    ("GET", "/registrations", {}, None),
    ("OPTIONS", "/registrations", {}, None),
    ("PUT", f"/registrations/{KNOWN}", {}, None),
    ("POST", "/registrations/", JSON, b"{}"),
    ("GET", f"//registrations/{KNOWN}", {}, None),
    ("POST", "/registrations", {**JSON, "host": "bad host/"}, b"{}"),
]


@pytest.mark.parametrize(("method", "path", "headers", "body"), REQUESTS)
async def test_a_request_is_answered_the_same_with_or_without_the_shortcut(
    method: str, path: str, headers: dict[str, str], body: bytes | None
) -> None:
    answers = []
    for shortcut in (True, False):
        app = _app(shortcut=shortcut)
        async with AsyncTestClient(app=app) as client:
            response = await client.request(method, path, headers=headers, content=body)
            answers.append(_answer(response))
    assert answers[0] == answers[1]


async def test_the_shortcut_serves_the_signup_and_the_poll() -> None:
    # Without this the test above could compare Litestar with itself.
    app = _app(shortcut=True)
    async with AsyncTestClient(app=app) as client:
        accepted = await client.post("/registrations", json=valid_form())
        polled = await client.get(f"/registrations/{KNOWN}")
    assert (accepted.status_code, polled.status_code) == (202, 200)
    assert app._hot_route is not None
