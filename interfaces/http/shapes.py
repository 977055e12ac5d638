"""Request and response shapes of the HTTP contract."""

from __future__ import annotations

import uuid
from typing import Literal

import msgspec


class RegistrationAccepted(msgspec.Struct):
    registration_id: uuid.UUID
    status: Literal["pending"]


class Health(msgspec.Struct):
    status: Literal["ok", "unavailable"]
    checks: dict[str, bool] = {}


class VerificationRequest(msgspec.Struct, forbid_unknown_fields=True):
    """The code from the message (six digits), or the token from its link."""

    code: str


class VerificationResent(msgspec.Struct):
    registration_id: uuid.UUID
