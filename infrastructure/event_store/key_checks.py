"""The keys an event store was written with: a process with other keys refuses to start.

Two secrets give a store its meaning, and neither may change under it:

- ``SIGNUP_RESERVATION_KEY``: a claim's id is an HMAC of the claimed value under it
  (``domain/reservations.py``). An API with another key makes other ids for the same email or
  CPF, the claims table no longer sees the duplicate, and the value registers twice.
- ``SIGNUP_EVENT_CIPHER_KEY``: events and the per-person keys are encrypted with it. An API
  with another key writes events no worker can open, and every projection stops at the first
  of them ("Invalid cipher tag"): each later signup stays pending. (Found so: an in-process
  driver of the API started with a stale key.)

So the store keeps a check of each key: an HMAC, under the key, of a fixed text (it helps
nobody find the key). ``signup migrate`` (so ``signup up`` too) records them, and first checks
a store that already holds data against the keys it was given: its newest event must open
with the cipher key, and an email claim must be the HMAC of its holder's email. The API, the
worker, the mailer and ``signup erase`` compare theirs when they first reach the store and
refuse to start on a difference, naming the variable and never the value. A store migrated
before the checks existed has none until ``signup migrate`` runs again: processes then start,
with a warning.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import uuid
from collections.abc import Callable, Mapping

import psycopg
import structlog
from eventsourcing.persistence import ProgrammingError, StoredEvent
from eventsourcing.postgres import PostgresApplicationRecorder
from psycopg import Cursor
from psycopg.rows import DictRow
from psycopg.sql import SQL, Composed, Identifier

from domain.registration import UserRegistrationRequested, claims
from infrastructure.event_store.claims import claims_table
from infrastructure.event_store.store import SignupEvents
from infrastructure.event_store.subject_keys import SubjectVault, subject_keys_table

log = structlog.get_logger(__name__)

RESERVATION_KEY = "SIGNUP_RESERVATION_KEY"
EVENT_CIPHER_KEY = "SIGNUP_EVENT_CIPHER_KEY"

_WHY = {
    RESERVATION_KEY: "its uniqueness claims were made with another key, and with this one the"
    " same email or CPF could register twice",
    EVENT_CIPHER_KEY: "its events are encrypted with another key (or without one), and what"
    " this process writes or reads would not open",
}


class KeysDoNotMatch(Exception):
    """The store was written with other keys than this process was given."""

    def __init__(self, variables: list[str]) -> None:
        self.variables = variables
        reasons = "; ".join(f"{name}: {_WHY[name]}" for name in variables)
        super().__init__(
            f"{', '.join(variables)} {'is' if len(variables) == 1 else 'are'} not the key"
            f" this event store was written with ({reasons}). Start it with the store's key."
        )


def key_checks_table(events_table: str) -> str:
    return events_table.removesuffix("_events") + "_key_checks"


def create_statement(schema: str, events_table: str) -> Composed:
    return SQL(
        "CREATE TABLE IF NOT EXISTS {} (name text PRIMARY KEY, digest bytea NOT NULL,"
        " recorded_at timestamptz NOT NULL DEFAULT now())"
    ).format(Identifier(schema, key_checks_table(events_table)))


def expected(reservation_key: str, cipher_key: str | None) -> dict[str, bytes]:
    """Each key's check: an HMAC under it of a fixed text (a store without a cipher has one
    too, so that a process with a cipher does not take it for its own)."""

    def check(key: bytes, what: str) -> bytes:
        return hmac.new(key, f"signup key check: {what}".encode(), hashlib.sha256).digest()

    return {
        RESERVATION_KEY: check(reservation_key.encode(), "reservation key"),
        EVENT_CIPHER_KEY: check(base64.b64decode(cipher_key), "event cipher key")
        if cipher_key
        else b"no cipher",
    }


def mismatched(recorded: Mapping[str, bytes], wanted: Mapping[str, bytes]) -> list[str]:
    """The variables whose recorded check differs from this process's."""
    return [
        name
        for name, digest in wanted.items()
        if name in recorded and not hmac.compare_digest(recorded[name], digest)
    ]


def check(recorder: PostgresApplicationRecorder, wanted: Mapping[str, bytes]) -> bool:
    """Raise ``KeysDoNotMatch`` if the store recorded other keys; whether it recorded any."""
    recorded = _recorded(recorder)
    if recorded is None:
        return False
    different = mismatched(recorded, wanted)
    if different:
        raise KeysDoNotMatch(different)
    return set(wanted) <= set(recorded)


def verify(events: SignupEvents, reservation_key: str, cipher_key: str | None) -> None:
    """For a process about to serve the store: ``KeysDoNotMatch`` (logged) on a difference,
    a warning where the store has recorded no checks yet."""
    recorder = events.recorder
    assert isinstance(recorder, PostgresApplicationRecorder), "checked on PostgreSQL only"
    try:
        recorded = check(recorder, expected(reservation_key, cipher_key))
    except KeysDoNotMatch as error:
        log.error("keys_do_not_match_store", variables=error.variables, hint=str(error))
        raise
    if not recorded:
        log.warning("key_checks_not_recorded", hint="`signup migrate` records them")


async def verify_or_close(
    events: SignupEvents, reservation_key: str, cipher_key: str | None
) -> None:
    """``verify`` from an event loop (its statements block), closing the store when it
    refuses: the caller, which gets the error, never holds the store's pool."""
    try:
        await asyncio.to_thread(verify, events, reservation_key, cipher_key)
    except BaseException:
        await asyncio.to_thread(events.close)
        raise


def record(events: SignupEvents, reservation_key: str, cipher_key: str | None) -> list[str]:
    """Record the checks this store lacks, after checking its data against the keys (see the
    module's text); raise ``KeysDoNotMatch`` for a key the store or its data contradict. The
    variables newly recorded."""
    recorder = events.recorder
    assert isinstance(recorder, PostgresApplicationRecorder), "recorded on PostgreSQL only"
    wanted = expected(reservation_key, cipher_key)
    to_domain_event = events.mapper.to_domain_event
    vault = SubjectVault(cipher_key)
    schema, events_table = recorder.datastore.schema, recorder.events_table_name
    with recorder.datastore.transaction(commit=True) as curs:
        curs.execute(create_statement(schema, events_table))
    recorded = _recorded(recorder) or {}
    different = mismatched(recorded, wanted)
    missing = [name for name in wanted if name not in recorded]
    with recorder.datastore.transaction(commit=True) as curs:
        if EVENT_CIPHER_KEY in missing and not _newest_event_opens(
            curs, schema, events_table, to_domain_event
        ):
            different.append(EVENT_CIPHER_KEY)
        # A claim is checked through its holder's email, so only once the events open.
        if RESERVATION_KEY in missing and EVENT_CIPHER_KEY not in different:
            try:
                matches = _a_claim_matches(
                    curs, schema, events_table, to_domain_event, vault, reservation_key
                )
            except Exception:  # its event or its holder's key did not open with the cipher
                different.append(EVENT_CIPHER_KEY)
            else:
                if not matches:
                    different.append(RESERVATION_KEY)
        if different:
            raise KeysDoNotMatch(sorted(set(different), key=list(wanted).index))
        table = Identifier(schema, key_checks_table(events_table))
        for name in missing:
            curs.execute(
                SQL("INSERT INTO {} (name, digest) VALUES (%s, %s) ON CONFLICT DO NOTHING").format(
                    table
                ),
                (name, wanted[name]),
            )
    # Another process may have recorded its own meanwhile: the rows decide.
    check(recorder, wanted)
    return missing


def _recorded(recorder: PostgresApplicationRecorder) -> dict[str, bytes] | None:
    """The store's checks; None where it has no table for them (not migrated since)."""
    table = Identifier(recorder.datastore.schema, key_checks_table(recorder.events_table_name))
    try:
        with recorder.datastore.transaction(commit=False) as curs:
            curs.execute(SQL("SELECT name, digest FROM {}").format(table))
            return {row["name"]: bytes(row["digest"]) for row in curs.fetchall()}
    except (psycopg.errors.UndefinedTable, ProgrammingError) as error:
        # eventsourcing's connection wraps psycopg's error in its own.
        if isinstance(error, psycopg.errors.UndefinedTable) or isinstance(
            error.__cause__, psycopg.errors.UndefinedTable
        ):
            return None
        raise


def _newest_event_opens(
    curs: Cursor[DictRow],
    schema: str,
    events: str,
    to_domain_event: Callable[[StoredEvent], object],
) -> bool:
    curs.execute(
        SQL(
            "SELECT originator_id, originator_version, topic, state FROM {}"
            " ORDER BY notification_id DESC LIMIT 1"
        ).format(Identifier(schema, events))
    )
    row = curs.fetchone()
    if row is None:
        return True  # an empty store: whatever key comes first is its key
    try:
        to_domain_event(_stored(row))
    except Exception:  # eventsourcing wraps the cipher's error in its own
        return False
    return True


def _a_claim_matches(
    curs: Cursor[DictRow],
    schema: str,
    events: str,
    to_domain_event: Callable[[StoredEvent], object],
    vault: SubjectVault,
    reservation_key: str,
) -> bool:
    """Whether an email claim whose holder's details can still be opened is the HMAC, under
    ``reservation_key``, of that holder's email (true when no such claim exists)."""

    curs.execute(
        SQL(
            "SELECT c.claim_id, e.originator_id, e.originator_version, e.topic, e.state, k.key"
            " FROM {} c JOIN {} k ON k.registration_id = c.registration_id"
            " JOIN {} e ON e.originator_id = c.registration_id AND e.originator_version = 1"
            " WHERE c.kind = 'email' AND k.key IS NOT NULL LIMIT 1"
        ).format(
            Identifier(schema, claims_table(events)),
            Identifier(schema, subject_keys_table(events)),
            Identifier(schema, events),
        )
    )
    row = curs.fetchone()
    if row is None:
        return True
    event = to_domain_event(_stored(row))
    if not isinstance(event, UserRegistrationRequested):
        return True  # a store of an older shape: nothing to compare here
    details = vault.open(event.originator_id, event.personal_data, bytes(row["key"]))
    claim_id: uuid.UUID = row["claim_id"]
    return claim_id in {claim.reservation_id(reservation_key.encode()) for claim in claims(details)}


def _stored(row: DictRow) -> StoredEvent:
    return StoredEvent(
        row["originator_id"], row["originator_version"], row["topic"], bytes(row["state"])
    )
