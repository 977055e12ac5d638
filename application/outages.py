"""The application's word for an outage: a store it needs cannot be reached, so the client
is told to retry (503), not that something broke. Raised by the event store's and the status
read model's adapters (``infrastructure/postgres_outages.py`` says which driver errors mean
it), whichever use case was asking."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable


class StoreUnavailable(Exception):
    """The event store cannot be reached or did not confirm; the client may retry safely.

    Almost always nothing was recorded. When the store did not confirm *in time* but may still
    (its batch is being retried), ``outcome`` resolves once it knows (raising if the submission
    was not recorded) and ``registration_id`` names the registration: whoever told the client
    503 can then keep the answer for its retry (the Idempotency-Key replay).
    """

    def __init__(self, message: str = "", *, outcome: Awaitable[None] | None = None) -> None:
        super().__init__(message)
        self.outcome = outcome
        self.registration_id: uuid.UUID | None = None
