"""Per-subject keys on PostgreSQL: sealing with AES-GCM, and the keys table beside the events.

Each registration's personal data is sealed with a random 256-bit key, bound to its
registration id (the id is the associated data, so a sealed blob cannot be passed off as
another registration's). The key is stored in ``signup_subject_keys`` in the same transaction
as the events, wrapped with the event store's cipher key when one is set. Erasing a person
sets their key to NULL: the event stays, and nobody can open it again.
"""

from __future__ import annotations

import os
import uuid
from base64 import b64decode
from collections import Counter
from collections.abc import Sequence
from typing import Any

import msgspec
import psycopg
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from eventsourcing.persistence import ProgrammingError, StoredEvent
from eventsourcing.postgres import PostgresApplicationRecorder, PostgresDatastore
from psycopg import Cursor
from psycopg.rows import DictRow
from psycopg.sql import SQL, Identifier

from application.personal_data import Sealed
from domain.form import RegistrationDetails
from infrastructure.event_store import append_function
from infrastructure.event_store.claims import claims_table, create_statements

_NONCE = 12
_encode = msgspec.json.Encoder().encode
# Typed decoding in C: the data is our own, authenticated by AES-GCM; this was a fifth of a
# rebuild's CPU when done field by field in Python.
_decode = msgspec.json.Decoder(RegistrationDetails).decode


class SubjectVault:
    """Seals and opens personal data; ``master_key`` (base64, the event cipher key) wraps the
    per-subject keys at rest."""

    def __init__(self, master_key: str | None = None) -> None:
        self._master = AESGCM(b64decode(master_key)) if master_key else None

    def seal(self, registration_id: uuid.UUID, details: RegistrationDetails) -> Sealed:
        key = AESGCM.generate_key(bit_length=256)
        # msgspec encodes the dataclasses as to_dict() spells them, without building the dicts.
        personal_data = _encrypt(AESGCM(key), _encode(details), registration_id)
        stored = key if self._master is None else _encrypt(self._master, key, registration_id)
        return Sealed(personal_data, stored)

    def open(
        self, registration_id: uuid.UUID, personal_data: bytes, key: bytes
    ) -> RegistrationDetails:
        """Raises ``cryptography.exceptions.InvalidTag`` for a wrong key or tampered data."""
        raw = key if self._master is None else _decrypt(self._master, key, registration_id)
        data = _decrypt(AESGCM(raw), personal_data, registration_id)
        return _decode(data)


def _encrypt(cipher: AESGCM, plaintext: bytes, registration_id: uuid.UUID) -> bytes:
    nonce = os.urandom(_NONCE)
    return nonce + cipher.encrypt(nonce, plaintext, registration_id.bytes)


def _decrypt(cipher: AESGCM, sealed: bytes, registration_id: uuid.UUID) -> bytes:
    return cipher.decrypt(sealed[:_NONCE], sealed[_NONCE:], registration_id.bytes)


def subject_keys_table(events_table: str) -> str:
    return events_table.removesuffix("_events") + "_subject_keys"


def shreds_table(events_table: str) -> str:
    """One row counting the keys ever shredded, bumped in each shred's own transaction: a
    reader that finds the count unchanged knows every key it saw is still there."""
    return events_table.removesuffix("_events") + "_shreds"


class SignupRecorder(PostgresApplicationRecorder):
    """eventsourcing's recorder, also writing the subject keys given to ``save(subject_keys=)``
    in the events' own transaction: an event is never stored without the key that opens it.
    It creates the uniqueness claims' table too (``event_store/claims.py``) and reads it."""

    def __init__(self, datastore: PostgresDatastore, **kwargs: Any) -> None:
        super().__init__(datastore, **kwargs)
        # The append lock every writer takes instead of the library's table lock, which
        # conflicts with VACUUM (``append_function`` says why); after its lock_timeout.
        lock_timeout, _table_lock = self.lock_table_statements
        self.lock_table_statements = [
            lock_timeout,
            append_function.take_append_lock(self.datastore.schema, self.events_table_name),
        ]
        table = SQL("{}.{}").format(
            Identifier(self.datastore.schema),
            Identifier(subject_keys_table(self.events_table_name)),
        )
        self.sql_create_statements.append(
            SQL(
                "CREATE TABLE IF NOT EXISTS {} ("
                " registration_id uuid PRIMARY KEY,"
                " key bytea,"  # NULL once the person has been erased
                " erased_at timestamptz)"
            ).format(table)
        )
        shreds = SQL("{}.{}").format(
            Identifier(self.datastore.schema), Identifier(shreds_table(self.events_table_name))
        )
        self.sql_create_statements.append(
            SQL(
                "CREATE TABLE IF NOT EXISTS {} ("
                " id boolean PRIMARY KEY DEFAULT true CHECK (id),"
                " shredded bigint NOT NULL)"
            ).format(shreds)
        )
        # Counting from the keys a store shredded before the table existed; once (every
        # `signup up` and `signup migrate` runs this, and the keys table has a row a person).
        self.sql_create_statements.append(
            SQL(
                "INSERT INTO {} (shredded)"
                " SELECT (SELECT count(*) FROM {} WHERE key IS NULL)"
                " WHERE NOT EXISTS (SELECT FROM {}) ON CONFLICT (id) DO NOTHING"
            ).format(shreds, table, shreds)
        )
        self.sql_create_statements.extend(
            create_statements(self.datastore.schema, self.events_table_name)
        )
        # How the API appends (``infrastructure.event_store.batch_append``).
        self.sql_create_statements.append(
            append_function.create_statement(
                self.datastore.schema,
                self.events_table_name,
                subject_keys_table(self.events_table_name),
                claims_table(self.events_table_name),
            )
        )
        claims = SQL("{}.{}").format(
            Identifier(self.datastore.schema), Identifier(claims_table(self.events_table_name))
        )
        self._holder = SQL("SELECT registration_id FROM {} WHERE claim_id = %s").format(claims)
        self._release = SQL(
            "DELETE FROM {} WHERE registration_id = ANY(%s::uuid[]) RETURNING registration_id"
        ).format(claims)
        self._insert_keys = SQL(
            "INSERT INTO {} (registration_id, key) SELECT * FROM unnest(%s::uuid[], %s::bytea[])"
        ).format(table)
        shred = (
            "UPDATE {} SET key = NULL, erased_at = now()"
            " WHERE registration_id = ANY(%s::uuid[]) AND key IS NOT NULL"
        )
        # The shred and the count's bump in one transaction: whoever reads the count after
        # it sees the key gone too.
        self._erase = SQL(
            f"WITH shredded AS ({shred} RETURNING 1),"
            " counted AS (UPDATE {} SET shredded = shredded + (SELECT count(*) FROM shredded))"
            " SELECT count(*) AS shredded FROM shredded"
        ).format(table, shreds)
        # A store not migrated since the count came: the shred alone (its readers do not
        # share what they read, see ``EventSource``).
        self._erase_uncounted = SQL(shred).format(table)
        self._key = SQL("SELECT key FROM {} WHERE registration_id = %s").format(table)

    def _insert_events(
        self,
        curs: Cursor[DictRow],
        stored_events: Sequence[StoredEvent],
        **kwargs: Any,
    ) -> None:
        # Before the events' insert, which takes the append lock: the keys do not lengthen it.
        keys: Sequence[tuple[uuid.UUID, bytes]] = kwargs.get("subject_keys", ())
        if keys:
            curs.execute(self._insert_keys, ([k for k, _ in keys], [v for _, v in keys]))
        super()._insert_events(curs, stored_events, **kwargs)

    def erase(self, registration_id: uuid.UUID) -> bool:
        """Shred the key; False when there was no key left to shred."""
        return self.erase_all([registration_id]) == 1

    def erase_all(self, registration_ids: Sequence[uuid.UUID]) -> int:
        """Shred the keys, in one transaction; how many there were left to shred."""
        ids = list(registration_ids)
        try:
            with self.datastore.get_connection() as conn, conn.cursor() as curs:
                curs.execute(self._erase, (ids,))
                row = curs.fetchone()
                return int(row["shredded"]) if row is not None else 0
        except (psycopg.errors.UndefinedTable, ProgrammingError) as error:
            # eventsourcing's connection wraps psycopg's error in its own.
            if not isinstance(error, psycopg.errors.UndefinedTable) and not isinstance(
                error.__cause__, psycopg.errors.UndefinedTable
            ):
                raise
            with self.datastore.get_connection() as conn, conn.cursor() as curs:
                curs.execute(self._erase_uncounted, (ids,))
                return curs.rowcount

    def key_of(self, registration_id: uuid.UUID) -> bytes | None:
        row = self._row(registration_id)
        return bytes(row["key"]) if row is not None and row["key"] is not None else None

    def holder_of(self, claim_id: uuid.UUID) -> uuid.UUID | None:
        """The registration holding a claimed value, None when nobody does."""
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(self._holder, (claim_id,))
            row = curs.fetchone()
        return row["registration_id"] if row is not None else None

    def release(self, registration_id: uuid.UUID) -> int:
        """Free every value the registration holds; how many there were."""
        return self.release_all([registration_id]).get(registration_id, 0)

    def release_all(self, registration_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, int]:
        """Free every value the registrations hold, in one statement; how many each held
        (those that held none are left out)."""
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(self._release, (list(registration_ids),))
            return dict(Counter(row["registration_id"] for row in curs.fetchall()))

    def _row(self, registration_id: uuid.UUID) -> Any:
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(self._key, (registration_id,))
            return curs.fetchone()

    def erased(self, registration_id: uuid.UUID) -> bool:
        return self.key_of(registration_id) is None
