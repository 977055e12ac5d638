"""The enumeration-resistant mode's outbox, in the event store's database.

A duplicate signup is answered like a new one; instead of a 409, a row here tells the holder
of the email or document that someone tried to use it. The worker's mailer takes the rows
into its outbox (``queued_at``) and sends each once its holder has verified their email
(holders that never will are not written to). The row holds ids only: the
owner's registration, which kind of value, and the id the person trying was given (so that
``GET /registrations/{id}`` can answer for it as for any other registration).
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from datetime import datetime

from eventsourcing.postgres import PostgresApplicationRecorder

from application.outages import StoreUnavailable
from application.registering import DuplicateAttempt
from infrastructure.event_store.store import SignupEvents
from infrastructure.postgres_outages import EVENT_STORE_UNAVAILABLE

TABLE = "signup_owner_notifications"

CREATE = f"""
CREATE TABLE IF NOT EXISTS {TABLE} (
    attempt_id uuid PRIMARY KEY,
    registration_id uuid NOT NULL,
    reason text NOT NULL,
    kind text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    sent_at timestamptz
)"""
CREATE_INDEX = (
    f"CREATE INDEX IF NOT EXISTS {TABLE}_unsent ON {TABLE} (created_at) WHERE sent_at IS NULL"
)
# When the mailer took the notice into its outbox (``infrastructure/verification/mailer.py``), which
# sends it once its holder is verified (or drops it: the holder will never be).
ADD_QUEUED = f"ALTER TABLE {TABLE} ADD COLUMN IF NOT EXISTS queued_at timestamptz"
CREATE_QUEUE_INDEX = (
    f"CREATE INDEX IF NOT EXISTS {TABLE}_unqueued ON {TABLE} (created_at) WHERE queued_at IS NULL"
)

DUPLICATE_SIGNUP = "duplicate_signup"


@dataclass
class OwnerNotifications:
    events: SignupEvents

    def migrate(self) -> None:
        with self._recorder.datastore.get_connection() as conn:
            conn.execute(CREATE)
            conn.execute(CREATE_INDEX)
            conn.execute(ADD_QUEUED)
            conn.execute(CREATE_QUEUE_INDEX)

    async def notify(self, attempt: DuplicateAttempt) -> None:
        try:
            await asyncio.to_thread(self._notify, attempt)
        except EVENT_STORE_UNAVAILABLE as error:
            raise StoreUnavailable(str(error)) from error

    def _notify(self, attempt: DuplicateAttempt) -> None:
        owner = self.events.holder_of(attempt.reservation_id)
        if owner is None:
            # Nobody holds the value after all (its holder was erased meanwhile, or it clashed
            # in a batch with a registration whose own save failed): a retry will be accepted.
            raise StoreUnavailable("the value is not held any more; retry")
        with self._recorder.datastore.get_connection() as conn:
            conn.execute(
                f"INSERT INTO {TABLE} (attempt_id, registration_id, reason, kind)"
                " VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING",
                (attempt.attempt_id, owner, DUPLICATE_SIGNUP, attempt.kind),
            )

    def forget(self, registration_id: uuid.UUID) -> int:
        """Remove the notices to an erased holder; how many there were."""
        with self._recorder.datastore.get_connection() as conn:
            deleted = conn.execute(
                f"DELETE FROM {TABLE} WHERE registration_id = %s", (registration_id,)
            )
            return deleted.rowcount

    def attempted_at(self, attempt_id: uuid.UUID) -> datetime | None:
        """When this id was given to a duplicate attempt; None if it never was."""
        with self._recorder.datastore.get_connection() as conn:
            row = conn.execute(
                f"SELECT created_at FROM {TABLE} WHERE attempt_id = %s", (attempt_id,)
            ).fetchone()
        return row["created_at"] if row else None

    @property
    def _recorder(self) -> PostgresApplicationRecorder:
        recorder = self.events.recorder
        assert isinstance(recorder, PostgresApplicationRecorder)
        return recorder
