"""The suite hands a test's databases on to the next test only once they equal their template
again: a test never sees another's rows, tables or positions."""

from __future__ import annotations

import psycopg

from tests.databases import TestDatabases


def _contents(url: str) -> dict[str, list[tuple[object, ...]]]:
    with psycopg.connect(url) as conn:
        tables = [
            row[0]
            for row in conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1"
            )
        ]
        return {
            table: sorted(conn.execute(f'SELECT * FROM "{table}"').fetchall(), key=repr)
            for table in tables
        }


def _append_an_event(conn: psycopg.Connection[tuple[object, ...]]) -> None:
    conn.execute(
        "INSERT INTO signup_events (originator_id, originator_version, topic, state)"
        " VALUES (gen_random_uuid(), 1, 'a topic', 'a state')"
    )


def test_a_used_database_is_handed_on_with_the_templates_rows_and_sequences_again(
    postgres_url: str, migrated_templates: tuple[str, str, str]
) -> None:
    databases = TestDatabases(postgres_url, migrated_templates)
    template = migrated_templates[0]
    used = databases.take(template)
    with psycopg.connect(used) as conn:
        conn.execute("UPDATE projection_tracking SET position = position + 7")
        _append_an_event(conn)
        conn.execute("DELETE FROM signup_migrations")

    databases.give_back(used)
    again = databases.take(template)

    assert again == used
    assert _contents(again) == _contents(template)
    with psycopg.connect(again) as conn:
        _append_an_event(conn)
        assert conn.execute("SELECT notification_id FROM signup_events").fetchone() == (1,)


def test_a_database_whose_schema_a_test_changed_is_not_handed_on(
    postgres_url: str, migrated_templates: tuple[str, str, str]
) -> None:
    databases = TestDatabases(postgres_url, migrated_templates)
    template = migrated_templates[1]
    used = databases.take(template)
    with psycopg.connect(used) as conn:
        conn.execute("CREATE INDEX a_tests_own_index ON projection_tracking (position)")

    databases.give_back(used)

    assert databases.take(template) != used


def test_a_database_a_session_is_still_connected_to_is_not_handed_on(
    postgres_url: str, migrated_templates: tuple[str, str, str]
) -> None:
    databases = TestDatabases(postgres_url, migrated_templates)
    template = migrated_templates[2]
    used = databases.take(template)
    with psycopg.connect(used):  # a pool the test left open
        databases.give_back(used)

    assert databases.take(template) != used
