#!/bin/sh
# /docker-entrypoint-initdb.d script of the read-model primary (official postgres image; runs
# once, when the data directory is first created): the replication role, a physical slot for
# the replica (so the primary keeps the WAL the replica has not streamed yet), and the
# pg_hba.conf line that lets the role connect for replication. The server itself runs with
# wal_level=replica (see docker-compose.yml).
# No `set -u`: the image sources this file when it is not executable.
set -e

: "${REPLICATION_USER:?set REPLICATION_USER}"
: "${REPLICATION_PASSWORD:?set REPLICATION_PASSWORD}"
: "${REPLICATION_SLOT:=read_replica_1}"

psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
    -v role="$REPLICATION_USER" -v password="$REPLICATION_PASSWORD" -v slot="$REPLICATION_SLOT" \
    <<'SQL'
CREATE ROLE :"role" WITH REPLICATION LOGIN PASSWORD :'password';
SELECT pg_create_physical_replication_slot(:'slot');
SQL

echo "host replication $REPLICATION_USER all scram-sha-256" >> "$PGDATA/pg_hba.conf"
