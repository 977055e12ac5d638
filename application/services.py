"""What the entry points (HTTP, CLI) are given by the composition root."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from application.idempotency import IdempotencyStore
from application.registering import RegisterUser
from application.status import GetRegistrationStatus


@dataclass(frozen=True, slots=True)
class Services:
    register_user: RegisterUser
    idempotency: IdempotencyStore
    get_status: GetRegistrationStatus
    # Each backing server's name and whether it answers.
    readiness: Callable[[], Awaitable[dict[str, bool]]]
