#!/bin/sh
# Entrypoint of the replica container (docker-compose): on an empty data volume, clones the
# primary with pg_basebackup -R (streaming replication, slot replica_1), then runs postgres
# as a hot standby. Started as root, it hands the volume to the postgres user first.
set -eu
if [ "$(id -u)" = 0 ]; then
  mkdir -p "$PGDATA"
  chown -R postgres:postgres "$PGDATA"
  exec gosu postgres "$0" "$@"
fi
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  until PGPASSWORD="$REPLICATION_PASSWORD" pg_isready -h "$PRIMARY_HOST" -p 5432 -U replicator; do
    sleep 1
  done
  rm -rf "${PGDATA:?}"/*
  PGPASSWORD="$REPLICATION_PASSWORD" pg_basebackup -h "$PRIMARY_HOST" -p 5432 -U replicator \
    -D "$PGDATA" -R -X stream -C -S "${SLOT:-replica_1}" --checkpoint=fast
  chmod 0700 "$PGDATA"
fi
exec postgres -D "$PGDATA"
