#!/bin/sh
# Entrypoint of the read-model streaming replica (official postgres image). On first start,
# when its data directory is empty, it clones the primary with `pg_basebackup -R` (which writes
# primary_conninfo and standby.signal, so the server comes up as a hot standby streaming from
# the slot primary-init.sh created); then it hands over to the image's own entrypoint, which
# finds an initialised data directory, skips initdb and runs the server as `postgres`.
set -eu

: "${PRIMARY_HOST:?set PRIMARY_HOST}"
: "${PRIMARY_PORT:=5432}"
: "${REPLICATION_USER:?set REPLICATION_USER}"
: "${REPLICATION_PASSWORD:?set REPLICATION_PASSWORD}"
: "${REPLICATION_SLOT:=read_replica_1}"

if [ ! -s "$PGDATA/PG_VERSION" ]; then
    until pg_isready --quiet --host="$PRIMARY_HOST" --port="$PRIMARY_PORT"; do
        echo "replica: waiting for $PRIMARY_HOST:$PRIMARY_PORT"
        sleep 1
    done
    mkdir -p "$PGDATA"
    chown postgres:postgres "$PGDATA"
    chmod 700 "$PGDATA"
    echo "replica: cloning $PRIMARY_HOST with pg_basebackup"
    # The password goes into primary_conninfo (postgresql.auto.conf) with -R, so the standby
    # can reconnect after a restart.
    PGPASSWORD="$REPLICATION_PASSWORD" gosu postgres pg_basebackup \
        --pgdata="$PGDATA" --host="$PRIMARY_HOST" --port="$PRIMARY_PORT" \
        --username="$REPLICATION_USER" --slot="$REPLICATION_SLOT" \
        --wal-method=stream --write-recovery-conf --checkpoint=fast --no-password
fi

exec docker-entrypoint.sh "$@"
