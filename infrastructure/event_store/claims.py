"""Uniqueness claims: one row per claimed value, in the event store's database.

Every email, PF CPF and PJ CNPJ a registration holds is a row keyed by its claim id (an
HMAC of the value, ``domain.reservations.Claim``), written in the transaction that appends
the registration's event; the primary key makes a second claim of a value impossible, and
releasing a value (erasure) deletes its row. This is Zitadel's ``unique_constraints``: the
claims are an index the command side keeps beside its events, not events themselves.

Until this version each claim was an event of its own (a ``Reservation`` aggregate, two per
registration): encoding, encrypting and inserting them was a third of the append's work and
two thirds of the rows written under the events table's lock. Stores written then keep those
events; ``backfill`` turns them into rows once, when ``signup migrate`` runs.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

from eventsourcing.persistence import StoredEvent
from eventsourcing.postgres import PostgresApplicationRecorder
from eventsourcing.utils import get_topic
from psycopg.sql import SQL, Composed, Identifier

from domain.reservations import Reservation, holder
from infrastructure.event_store.append_function import take_append_lock

_RESERVATION_TOPICS = [
    get_topic(Reservation.Reserved),
    get_topic(Reservation.Released),
    get_topic(Reservation.Reclaimed),
]
# Marks stores whose reservation events have been turned into rows.
_BACKFILL = "claims_from_reservation_events"


def claims_table(events_table: str) -> str:
    return events_table.removesuffix("_events") + "_claims"


def migrations_table(events_table: str) -> str:
    return events_table.removesuffix("_events") + "_migrations"


def create_statements(schema: str, events_table: str) -> Iterator[Composed]:
    claims = SQL("{}.{}").format(Identifier(schema), Identifier(claims_table(events_table)))
    yield SQL(
        "CREATE TABLE IF NOT EXISTS {} ("
        " claim_id uuid PRIMARY KEY,"
        " registration_id uuid NOT NULL,"
        " kind text NOT NULL)"
    ).format(claims)
    # An erasure releases everything the person holds.
    yield SQL("CREATE INDEX IF NOT EXISTS {} ON {} (registration_id)").format(
        Identifier(claims_table(events_table) + "_registration"), claims
    )
    yield SQL(
        "CREATE TABLE IF NOT EXISTS {} (name text PRIMARY KEY, done_at timestamptz NOT NULL"
        " DEFAULT now())"
    ).format(SQL("{}.{}").format(Identifier(schema), Identifier(migrations_table(events_table))))


def backfill(
    recorder: PostgresApplicationRecorder, to_domain_event: Callable[[StoredEvent], object]
) -> int:
    """Turn a store's reservation events into claim rows, once; how many values are held.

    Under the events table's locks, so no append runs meanwhile. Run it (``signup migrate``)
    before API processes of this version start, and after those of the last have stopped:
    they append reservation events this would not see again.
    """
    schema = recorder.datastore.schema
    events = SQL("{}.{}").format(Identifier(schema), Identifier(recorder.events_table_name))
    claims = SQL("{}.{}").format(
        Identifier(schema), Identifier(claims_table(recorder.events_table_name))
    )
    done = SQL("{}.{}").format(
        Identifier(schema), Identifier(migrations_table(recorder.events_table_name))
    )
    with recorder.datastore.transaction(commit=True) as curs:
        # The append lock keeps this version's appends out (they claim before they insert
        # an event), the table lock an older version's; in the appends' order, or the two
        # could wait for each other.
        curs.execute(take_append_lock(schema, recorder.events_table_name))
        curs.execute(SQL("LOCK TABLE {} IN EXCLUSIVE MODE").format(events))
        curs.execute(
            SQL("INSERT INTO {} (name) VALUES (%s) ON CONFLICT DO NOTHING RETURNING name").format(
                done
            ),
            (_BACKFILL,),
        )
        if curs.fetchone() is None:
            return 0  # done before
        # Every reservation event in order: the first says the kind, the last who holds it.
        curs.execute(
            SQL(
                "SELECT originator_id, originator_version, topic, state FROM {}"
                " WHERE topic = ANY(%s) ORDER BY originator_id, originator_version"
            ).format(events),
            (_RESERVATION_TOPICS,),
        )
        kinds: dict[uuid.UUID, str] = {}
        holders: dict[uuid.UUID, uuid.UUID | None] = {}
        for row in curs.fetchall():
            event = to_domain_event(
                StoredEvent(
                    row["originator_id"],
                    row["originator_version"],
                    row["topic"],
                    bytes(row["state"]),
                )
            )
            if isinstance(event, Reservation.Reserved):
                kinds[row["originator_id"]] = event.kind
            holders[row["originator_id"]] = holder(event)
        held = [
            (claim_id, owner, kinds[claim_id])
            for claim_id, owner in holders.items()
            if owner is not None and claim_id in kinds
        ]
        if held:
            curs.execute(
                SQL(
                    "INSERT INTO {} (claim_id, registration_id, kind)"
                    " SELECT * FROM unnest(%s::uuid[], %s::uuid[], %s::text[])"
                    " ON CONFLICT DO NOTHING"
                ).format(claims),
                ([c for c, _, _ in held], [r for _, r, _ in held], [k for _, _, k in held]),
            )
        return len(held)
