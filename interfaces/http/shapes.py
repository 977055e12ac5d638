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
