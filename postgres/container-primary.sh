#!/bin/sh
# docker-entrypoint-initdb.d hook of the official postgres image, run once on a new primary:
# applies postgres/init.sql (database, roles, schemas) with the passwords from the
# environment, and installs Switchboard's settings and access rules.
set -eu
cp /etc/switchboard/postgresql.conf "$PGDATA/switchboard.conf"
echo "include_if_exists = 'switchboard.conf'" >> "$PGDATA/postgresql.conf"
echo "listen_addresses = '*'" >> "$PGDATA/switchboard.conf"
cp /etc/switchboard/pg_hba.container.conf "$PGDATA/pg_hba.conf"
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" -d postgres \
  -v db="${PG_DATABASE:-switchboard}" \
  -v auth_password="$AUTH_DB_PASSWORD" \
  -v messaging_password="$MESSAGING_DB_PASSWORD" \
  -v replication_password="$REPLICATION_PASSWORD" \
  -f /etc/switchboard/init.sql
