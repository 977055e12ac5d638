"""Each test's databases: copies of the migrated templates, handed on to the next test of the
same process once they are shown to equal their template again.

A copy (``CREATE DATABASE ... TEMPLATE``) writes the template's whole catalog, 8 MB, through
the WAL: three copies a test cost ~0.1 s on a quiet machine and ~0.5 s during a full run, most
of a short test's time. Emptying the few rows a test wrote costs about a quarter of that (on a
quiet machine). A database is handed on only if nothing of the test is left in it:

- no other session is connected to it (a process or a pool the test left running could
  still write);
- its schema is the template's: the same relations, columns, constraints, indexes, views,
  functions, types, privileges and settings (a rebuild's new tables, a test's grants or a
  dropped table fail this);
- then every table is emptied, the template's rows are put back (migrations, projection
  positions) and every sequence is set where the template's stands.

Otherwise the database is left as it is, as every database was before, and the next test gets
a fresh copy.
"""

from __future__ import annotations

import dataclasses
import time
from collections import defaultdict
from dataclasses import dataclass

import psycopg

from infrastructure.event_store import key_checks
from infrastructure.settings import Settings
from tests.servers import create_database

# Everything a test could change in a database's definition, one text line per object. The
# physical state (dead rows, statistics, object ids) is not part of what a test can observe.
_SCHEMA = """
WITH user_namespaces AS (
    SELECT oid, nspname FROM pg_namespace
    WHERE nspname NOT IN ('pg_catalog', 'information_schema')
      AND nspname NOT LIKE 'pg\\_toast%' AND nspname NOT LIKE 'pg\\_temp%'
)
SELECT md5(string_agg(line, E'\\n' ORDER BY line)) FROM (
    SELECT format('namespace %s %s %s', nspname, nspowner, nspacl) AS line
    FROM pg_namespace WHERE oid IN (SELECT oid FROM user_namespaces)
    UNION ALL
    SELECT format('relation %s.%s %s %s %s %s %s %s', n.nspname, c.relname, c.relkind,
                  c.relpersistence, c.relowner, c.relacl, c.reloptions, c.relrowsecurity)
    FROM pg_class c JOIN user_namespaces n ON n.oid = c.relnamespace
    UNION ALL
    SELECT format('column %s.%s %s %s %s %s %s', n.nspname, c.relname, a.attnum, a.attname,
                  format_type(a.atttypid, a.atttypmod), a.attnotnull,
                  pg_get_expr(d.adbin, d.adrelid))
    FROM pg_attribute a
    JOIN pg_class c ON c.oid = a.attrelid
    JOIN user_namespaces n ON n.oid = c.relnamespace
    LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
    WHERE a.attnum > 0 AND NOT a.attisdropped
    UNION ALL
    SELECT format('constraint %s %s %s', conrelid::regclass, conname, pg_get_constraintdef(oid))
    FROM pg_constraint WHERE connamespace IN (SELECT oid FROM user_namespaces)
    UNION ALL
    SELECT format('index %s', pg_get_indexdef(i.indexrelid))
    FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
    WHERE c.relnamespace IN (SELECT oid FROM user_namespaces)
    UNION ALL
    SELECT format('view %s %s', c.oid::regclass, pg_get_viewdef(c.oid))
    FROM pg_class c WHERE c.relkind IN ('v', 'm')
      AND c.relnamespace IN (SELECT oid FROM user_namespaces)
    UNION ALL
    SELECT format('function %s %s %s %s', p.oid::regprocedure, p.proowner, p.proacl,
                  md5(pg_get_functiondef(p.oid)))
    FROM pg_proc p WHERE p.pronamespace IN (SELECT oid FROM user_namespaces)
      AND p.prokind IN ('f', 'p')
    UNION ALL
    SELECT format('aggregate %s', p.oid::regprocedure)
    FROM pg_proc p WHERE p.pronamespace IN (SELECT oid FROM user_namespaces)
      AND p.prokind NOT IN ('f', 'p')
    UNION ALL
    SELECT format('trigger %s %s', tgrelid::regclass, pg_get_triggerdef(oid))
    FROM pg_trigger WHERE NOT tgisinternal
    UNION ALL
    SELECT format('policy %s %s %s', polrelid::regclass, polname, pg_get_expr(polqual, polrelid))
    FROM pg_policy
    UNION ALL
    SELECT format('type %s %s %s', t.oid::regtype, t.typtype, t.typowner)
    FROM pg_type t WHERE t.typnamespace IN (SELECT oid FROM user_namespaces)
    UNION ALL
    SELECT format('enum %s %s %s', enumtypid::regtype, enumsortorder, enumlabel) FROM pg_enum
    UNION ALL
    SELECT format('extension %s %s', extname, extversion) FROM pg_extension
    UNION ALL
    SELECT format('default acl %s %s %s', defaclrole, defaclobjtype, defaclacl) FROM pg_default_acl
    UNION ALL
    SELECT format('setting %s %s', setrole, setconfig) FROM pg_db_role_setting
    WHERE setdatabase = (SELECT oid FROM pg_database WHERE datname = current_database())
    UNION ALL
    SELECT format('database %s %s %s', datacl, datconnlimit, datallowconn)
    FROM pg_database WHERE datname = current_database()
    UNION ALL
    SELECT format('publication %s', pubname) FROM pg_publication
    UNION ALL
    SELECT format('large objects %s', count(*)) FROM pg_largeobject_metadata
) AS definition
"""

_TABLES = """
SELECT format('%I.%I', n.nspname, c.relname)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p')
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%'
ORDER BY 1
"""

_SEQUENCES = """
SELECT format('%I.%I', schemaname, sequencename), coalesce(last_value, start_value),
       last_value IS NOT NULL
FROM pg_sequences
"""

# Client sessions only: an autovacuum worker tidying the copy changes none of its rows.
_OTHER_SESSIONS = """
SELECT (SELECT count(*) FROM pg_stat_activity
        WHERE datname = current_database() AND pid <> pg_backend_pid()
          AND backend_type = 'client backend')
     + (SELECT count(*) FROM pg_prepared_xacts WHERE database = current_database())
"""


# A session its client has just closed can still be listed while its backend exits: the copy
# is waited for that long (seen: a test's own closed connection made its database look in use,
# and the next test got a new copy instead of the one it was promised).
_SESSIONS_END_WITHIN = 0.5


def _alone(conn: psycopg.Connection[tuple[object, ...]]) -> bool:
    """Whether no other session (nor a prepared transaction) is on the database, waiting a
    little for sessions on their way out."""
    deadline = time.monotonic() + _SESSIONS_END_WITHIN
    while True:
        # pg_stat_activity is read once a transaction unless its snapshot is cleared.
        conn.execute("SELECT pg_stat_clear_snapshot()")
        if conn.execute(_OTHER_SESSIONS).fetchone() == (0,):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)


@dataclass(frozen=True)
class _Template:
    """What a migrated template holds, to make a used copy equal to it again."""

    schema: str
    tables: tuple[str, ...]
    rows: dict[str, bytes]  # the tables the migration wrote rows into, in COPY's binary format
    sequences: tuple[tuple[str, int, bool], ...]

    @classmethod
    def read(cls, url: str) -> _Template:
        with psycopg.connect(url, autocommit=True) as conn:
            schema = conn.execute(_SCHEMA).fetchone()
            tables = tuple(row[0] for row in conn.execute(_TABLES))
            rows = {}
            for table in tables:
                if conn.execute(f"SELECT EXISTS (SELECT FROM {table})").fetchone() == (True,):
                    with conn.cursor().copy(f"COPY {table} TO STDOUT (FORMAT binary)") as copy:
                        rows[table] = b"".join(bytes(block) for block in copy)
            sequences = tuple(conn.execute(_SEQUENCES).fetchall())
        assert schema is not None
        return cls(schema[0], tables, rows, sequences)

    def restore(self, url: str) -> bool:
        """Empty the copy at ``url`` back to this template; False if it cannot be shown to
        equal it (it is then left untouched)."""
        try:
            with psycopg.connect(url) as conn:
                if not _alone(conn):
                    return False
                if conn.execute(_SCHEMA).fetchone() != (self.schema,):
                    return False
                # A few rows each: a DELETE costs less than TRUNCATE's new files.
                conn.execute("SET LOCAL lock_timeout = '5s'")
                for table in self.tables:
                    conn.execute(f"DELETE FROM {table}")
                for table, data in self.rows.items():
                    with conn.cursor().copy(f"COPY {table} FROM STDIN (FORMAT binary)") as copy:
                        copy.write(data)
                for sequence, value, called in self.sequences:
                    conn.execute("SELECT setval(%s, %s, %s)", (sequence, value, called))
        except psycopg.Error:
            return False
        return True


class TestDatabases:
    """One test process's copies of the migrated templates, handed from test to test."""

    __test__ = False  # not a test class, for pytest

    def __init__(self, server_url: str, templates: tuple[str, ...]) -> None:
        self._server_url = server_url
        self._templates = {url: _Template.read(url) for url in templates}
        self._idle: dict[str, list[str]] = defaultdict(list)
        self._template_of: dict[str, str] = {}

    def take(self, template: str) -> str:
        """A database equal to ``template``, for one test."""
        if self._idle[template]:
            return self._idle[template].pop()
        url = create_database(self._server_url, template=template)
        self._template_of[url] = template
        return url

    def give_back(self, url: str) -> None:
        """The test is over: the next test may have ``url`` if it equals its template again."""
        template = self._template_of[url]
        if self._templates[template].restore(url):
            self._idle[template].append(url)


def with_cipher_key(settings: Settings, cipher_key: str) -> Settings:
    """These settings with an event cipher key, their store (migrated, still empty) recorded
    as written with it, as `signup migrate` records a new store's keys: a process given a key
    the store was not written with refuses to start (infrastructure/event_store/key_checks.py)."""
    assert settings.database_url
    digest = key_checks.expected(settings.reservation_key, cipher_key)[key_checks.EVENT_CIPHER_KEY]
    table = key_checks.key_checks_table("signup_events")
    with psycopg.connect(settings.database_url) as conn:
        conn.execute(
            f'UPDATE "{table}" SET digest = %s WHERE name = %s',
            (digest, key_checks.EVENT_CIPHER_KEY),
        )
    return dataclasses.replace(settings, event_cipher_key=cipher_key)
