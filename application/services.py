"""What the entry points (HTTP, CLI) are given by the composition root."""

from __future__ import annotations

import ipaddress
from collections.abc import Awaitable, Callable, Iterable, MutableMapping, Sequence
from typing import Any

from application.idempotency import IdempotencyStore
from application.registering import RegisterUser
from application.status import GetRegistrationStatus
from application.verification import ResendVerification, VerifyEmail

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def trusted_networks(entries: Iterable[str]) -> tuple[Network, ...]:
    """The proxies whose X-Forwarded-For is believed, from their configured spellings."""
    return tuple(ipaddress.ip_network(entry, strict=False) for entry in entries)


class Services:
    # A plain class, not a dataclass: the web framework checks a dependency's type with
    # isinstance, but would try to validate a dataclass field by field.
    __slots__ = (
        "get_status",
        "idempotency",
        "readiness",
        "register_user",
        "resend_verification",
        "trusted_proxies",
        "verify_email",
    )

    def __init__(
        self,
        register_user: RegisterUser,
        idempotency: IdempotencyStore,
        get_status: GetRegistrationStatus,
        readiness: Callable[[], Awaitable[dict[str, bool]]],
        verify_email: VerifyEmail,
        resend_verification: ResendVerification,
        trusted_proxies: Sequence[Network] = (),
    ) -> None:
        self.register_user = register_user
        self.idempotency = idempotency
        self.get_status = get_status
        # Each backing server's name and whether it answers.
        self.readiness = readiness
        self.verify_email = verify_email
        self.resend_verification = resend_verification
        # Proxies whose X-Forwarded-For is believed when telling who the client is.
        self.trusted_proxies = tuple(trusted_proxies)


_KEY = "services"


def keep_services(state: MutableMapping[str, Any], services: Services | None) -> None:
    """Where the entry points find the services while the app runs (its state)."""
    if services is None:
        state.pop(_KEY, None)
    else:
        state[_KEY] = services


def services_of(state: MutableMapping[str, Any]) -> Services:
    found = state[_KEY]
    assert isinstance(found, Services)
    return found
