#!/bin/sh
# Entrypoint of the replica container (docker-compose): on an empty data volume, clones the
# primary with pg_basebackup -R (streaming replication through slot $SLOT), then runs
# postgres as a hot standby. Started as root, it hands the volume to the postgres user first.
#
# The slot lives on the primary and outlives this volume: after `docker compose rm -v
# postgres-replica` (or a lost volume) the slot is still there, so it is created only when
# missing (pg_receivewal --create-slot --if-not-exists) and then reused; `pg_basebackup -C`
# would refuse an existing slot and the replica would never come back.
# scripts/replay_compose.py runs this script twice against a scratch primary.
set -eu
if [ "$(id -u)" = 0 ]; then
  mkdir -p "$PGDATA"
  chown -R postgres:postgres "$PGDATA"
  exec gosu postgres "$0" "$@"
fi
port="${PRIMARY_PORT:-5432}"
slot="${SLOT:-replica_1}"
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  until PGPASSWORD="$REPLICATION_PASSWORD" pg_isready -q -h "$PRIMARY_HOST" -p "$port" -U replicator; do
    sleep 1
  done
  rm -rf "${PGDATA:?}"/*
  PGPASSWORD="$REPLICATION_PASSWORD" pg_receivewal -h "$PRIMARY_HOST" -p "$port" -U replicator \
    --create-slot --if-not-exists -S "$slot"
  PGPASSWORD="$REPLICATION_PASSWORD" pg_basebackup -h "$PRIMARY_HOST" -p "$port" -U replicator \
    -D "$PGDATA" -R -X stream -S "$slot" --checkpoint=fast
  chmod 0700 "$PGDATA"
fi
exec postgres -D "$PGDATA"
