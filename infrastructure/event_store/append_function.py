"""The batch append as one PostgreSQL function: a whole batch in one round trip.

A batch used to be four round trips under the events table's lock (BEGIN with the lock, the
claims, the keys and events, COMMIT), and each waited a turn of a busy event loop: the lock
was held ~8 ms for well under 1 ms of database work, and every signup waited for it. Called
as a single statement outside a transaction, the function runs in its own implicit
transaction: the lock is taken, held and released (at COMMIT) inside the server, so it is
held for the database's work and the commit, and the API pays one round trip.

It does what ``BatchAppender`` did between the round trips: each registration's values are
claimed where free (the claims table's primary key decides; the lock keeps other appenders
out); a registration that did not get every value gives back the ones it got and is refused;
the others' keys and events are inserted, with the NOTIFY eventsourcing's readers LISTEN for.
A registration already stored (by a try whose acknowledgement was lost) is left as it is.

Not eventsourcing's ``POSTGRES_ENABLE_DB_FUNCTIONS``: that one is not used (see the README).

The append lock. Writers of the events table take turns so that notification ids commit in
the order they are given (a reader never passes an id that commits later). eventsourcing takes
turns with ``LOCK TABLE ... IN EXCLUSIVE MODE``, and that mode conflicts with the lock every
VACUUM takes: when autovacuum came to the events table (a minute into a bench) appends waited
for it, ~1 s at a quarter of the rate, until PostgreSQL cancelled it after
``deadlock_timeout``; so it never finished there under load, and the vacuum against
wraparound, which is not cancelled, would stop every signup for as long as it takes. Every
writer takes a transaction-level advisory lock instead (``append_lock``: this function and
``SignupRecorder``, eventsourcing's recorder), which no vacuum touches. A writer of an older
version still takes the table lock; an insert's own ROW EXCLUSIVE lock conflicts with it, so
the two still take turns while both run (a rolling upgrade).
"""

from __future__ import annotations

from psycopg.sql import SQL, Composed, Identifier, Literal


def append_lock(schema: str, events_table: str) -> Composed:
    """The call that takes the events table's append lock until the transaction ends. Two
    int4 keys: advisory locks with one bigint key (the rebuild's, the migration's) are
    another key space, so no other lock of this code can be taken for it."""
    return SQL("pg_advisory_xact_lock(hashtext('signup events append'), hashtext({}))").format(
        Literal(f"{schema}.{events_table}")
    )


def take_append_lock(schema: str, events_table: str) -> Composed:
    """The statement a writer outside the append function runs to take its turn."""
    return SQL("SELECT {}").format(append_lock(schema, events_table))


def function_name(events_table: str) -> str:
    return events_table.removesuffix("_events") + "_append_batch"


def create_statement(
    schema: str, events_table: str, keys_table: str, claims_table: str
) -> Composed:
    """``CREATE OR REPLACE``: ``signup migrate`` brings an older store's function up to date."""

    def table(name: str) -> Composed:
        return SQL("{}.{}").format(Identifier(schema), Identifier(name))

    # Rows come back for the registrations not newly stored: (id, NULL) when an earlier try
    # stored it, (id, a value it claimed and someone else holds) when it is refused.
    return SQL(
        """CREATE OR REPLACE FUNCTION {function}(
    claim_ids uuid[], claim_registrations uuid[], claim_kinds text[],
    registration_ids uuid[], subject_keys bytea[],
    event_originators uuid[], event_versions bigint[], event_topics text[], event_states bytea[],
    lock_timeout text)
RETURNS TABLE (refused_registration uuid, held_claim uuid)
LANGUAGE plpgsql AS $function$
#variable_conflict use_column
DECLARE
    stored uuid[];
    refused uuid[];
    held uuid[];
BEGIN
    PERFORM set_config('lock_timeout', lock_timeout, true);
    PERFORM {lock};
    SELECT coalesce(array_agg(e.originator_id), ARRAY[]::uuid[]) INTO stored
        FROM {events} e
        WHERE e.originator_id = ANY(registration_ids) AND e.originator_version = 1;
    WITH wanted AS (
        SELECT * FROM unnest(claim_ids, claim_registrations, claim_kinds)
            AS w(claim_id, registration_id, kind)
        WHERE NOT w.registration_id = ANY(stored)
    ), taken AS (
        INSERT INTO {claims} (claim_id, registration_id, kind) SELECT * FROM wanted
        ON CONFLICT (claim_id) DO NOTHING RETURNING claim_id
    )
    SELECT coalesce(array_agg(w.registration_id), ARRAY[]::uuid[]),
           coalesce(array_agg(w.claim_id), ARRAY[]::uuid[])
        INTO refused, held
        FROM wanted w WHERE NOT EXISTS (SELECT 1 FROM taken t WHERE t.claim_id = w.claim_id);
    IF cardinality(refused) > 0 THEN
        -- What the refused took: their ids are new, so every row with them is this batch's.
        DELETE FROM {claims} c WHERE c.registration_id = ANY(refused);
    END IF;
    -- The keys first: an event is never stored without the key that opens it.
    INSERT INTO {keys} (registration_id, key)
        SELECT * FROM unnest(registration_ids, subject_keys) AS k(registration_id, key)
        WHERE NOT (k.registration_id = ANY(stored) OR k.registration_id = ANY(refused));
    INSERT INTO {events} (originator_id, originator_version, topic, state)
        SELECT * FROM unnest(event_originators, event_versions, event_topics, event_states)
            AS e(originator_id, originator_version, topic, state)
        WHERE NOT (e.originator_id = ANY(stored) OR e.originator_id = ANY(refused));
    IF FOUND THEN
        PERFORM pg_notify({channel}, '');
    END IF;
    RETURN QUERY
        SELECT s, NULL::uuid FROM unnest(stored) AS s
        UNION ALL SELECT * FROM unnest(refused, held);
END
$function$"""
    ).format(
        function=table(function_name(events_table)),
        lock=append_lock(schema, events_table),
        events=table(events_table),
        claims=table(claims_table),
        keys=table(keys_table),
        # eventsourcing's readers LISTEN on the events table's name.
        channel=Literal(events_table.replace(".", "_")),
    )
