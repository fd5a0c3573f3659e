#!/usr/bin/env bash
# Creates (once) and starts a PostgreSQL primary and hot-standby replicas fed by streaming
# replication, under an ignored data folder of the repository.
#
#   postgres/setup.sh start        # create what is missing, start all, wait until replicas stream
#   postgres/setup.sh stop         # fast shutdown of all
#   postgres/setup.sh stop NAME    # stop one: primary, replica1, replica2, …
#   postgres/setup.sh status
#
# Idempotent: existing clusters are reused; roles, database and schemas are (re)applied from
# postgres/init.sql on every start. Runs the servers as the `postgres` OS user when invoked as
# root (PostgreSQL refuses to run as root).
#
# Environment (defaults are for local use only):
#   SWITCHBOARD_DATA        data folder               (<repo>/.data)
#   PG_PRIMARY_PORT         primary port on 127.0.0.1 (55432)
#   PG_REPLICA_PORT         first replica's port on 127.0.0.1 (55433); replica N uses +N-1
#   PG_REPLICAS             how many replicas (2)
#   PG_DATABASE             database name             (switchboard)
#   PG_SUPERUSER_PASSWORD   password of `postgres`    (postgres-dev)
#   AUTH_DB_PASSWORD        role switchboard_auth     (auth-dev)
#   MESSAGING_DB_PASSWORD   role switchboard_messaging(messaging-dev)
#   REPLICATION_PASSWORD    role replicator           (replication-dev)
#   PG_SERVER_OPTIONS       more server options at start, e.g. "-c shared_preload_libraries=…"
#                           (scripts/bench.sh loads pg_stat_statements); none by default
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(dirname "$here")"
data="${SWITCHBOARD_DATA:-$repo/.data}"
pgroot="$data/pg"
tls="$data/tls"
primary_port="${PG_PRIMARY_PORT:-55432}"
replica_port="${PG_REPLICA_PORT:-55433}"
replicas="${PG_REPLICAS:-2}"
db="${PG_DATABASE:-switchboard}"
su_password="${PG_SUPERUSER_PASSWORD:-postgres-dev}"
auth_password="${AUTH_DB_PASSWORD:-auth-dev}"
messaging_password="${MESSAGING_DB_PASSWORD:-messaging-dev}"
replication_password="${REPLICATION_PASSWORD:-replication-dev}"
server_options="${PG_SERVER_OPTIONS:-}"

log() { printf '[postgres] %s\n' "$*" >&2; }

bindir=""
for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
  v="$(basename "$(dirname "$d")")"
  if [ "${v%%.*}" -ge 15 ] 2>/dev/null; then bindir="$d"; break; fi
done
if [ -z "$bindir" ]; then
  log "PostgreSQL 15 or newer not found under /usr/lib/postgresql (install: apt-get install postgresql)"
  exit 1
fi

# Run a command as the OS user that owns the clusters.
as_pg() {
  if [ "$(id -u)" -eq 0 ]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

sockdir() { echo "$pgroot/$1.sock"; }

is_running() { as_pg "$bindir/pg_ctl" -D "$pgroot/$1" status >/dev/null 2>&1; }

start_cluster() { # name port
  local name="$1" port="$2"
  # Our settings and access rules are copied in on every start so edits in postgres/ apply.
  as_pg cp "$here/postgresql.conf" "$pgroot/$name/switchboard.conf"
  as_pg cp "$here/pg_hba.conf" "$pgroot/$name/pg_hba.conf"
  # TLS (PostgreSQL docs §19.9 "Secure TCP/IP Connections with SSL"): the local CA's server
  # certificate (scripts/local-ca.sh), copied in on every start; the key must belong to the
  # server's OS user with mode 0600. pg_hba.conf admits the service roles only over TLS.
  local owner=()
  [ "$(id -u)" -eq 0 ] && owner=(-o postgres -g postgres)
  install "${owner[@]}" -m 0644 "$tls/server.pem" "$pgroot/$name/server.crt"
  install "${owner[@]}" -m 0600 "$tls/server.key" "$pgroot/$name/server.key"
  if is_running "$name"; then
    log "$name already running on port $port"
    return
  fi
  as_pg mkdir -p "$(sockdir "$name")"
  as_pg "$bindir/pg_ctl" -D "$pgroot/$name" -l "$pgroot/$name.log" -w -t 60 \
    -o "-p $port -k $(sockdir "$name") -c ssl=on${server_options:+ $server_options}" start >/dev/null
  log "$name started on 127.0.0.1:$port (log: $pgroot/$name.log)"
}

port_of() { # name
  case "$1" in
    primary) echo "$primary_port" ;;
    replica*) echo $((replica_port + ${1#replica} - 1)) ;;
  esac
}

psql_su() { # name psql-args...
  local name="$1"; shift
  local port
  port="$(port_of "$name")"
  as_pg "$bindir/psql" -X -q -v ON_ERROR_STOP=1 -h "$(sockdir "$name")" -p "$port" -U postgres "$@"
}

start() {
  mkdir -p "$pgroot"
  "$repo/scripts/local-ca.sh" "$tls"
  if [ "$(id -u)" -eq 0 ]; then
    id postgres >/dev/null 2>&1 || { log "OS user postgres is missing (apt-get install postgresql)"; exit 1; }
    chown postgres: "$pgroot"
    # A checkout under a private folder (mktemp -d is 0700) would hide the data folder from
    # the server's OS user: let it traverse (x only, no read) each parent that blocks it.
    local d="$pgroot"
    while [ "$d" != "/" ]; do
      d="$(dirname "$d")"
      if ! runuser -u postgres -- test -x "$d"; then
        log "allowing the postgres user to traverse $d (chmod o+x)"
        chmod o+x "$d"
      fi
    done
    if ! runuser -u postgres -- test -w "$pgroot"; then
      log "the postgres OS user cannot write $pgroot: set SWITCHBOARD_DATA to a folder it can reach"
      exit 1
    fi
  fi

  if [ ! -f "$pgroot/primary/PG_VERSION" ]; then
    log "initialising primary in $pgroot/primary"
    local pwfile
    pwfile="$(as_pg mktemp "$pgroot/.pw.XXXXXX")"
    printf '%s\n' "$su_password" | as_pg tee "$pwfile" >/dev/null
    as_pg "$bindir/initdb" -D "$pgroot/primary" -U postgres --pwfile="$pwfile" \
      --auth-local=trust --auth-host=scram-sha-256 --encoding=UTF8 --locale=C.UTF-8 >/dev/null
    as_pg rm -f "$pwfile"
    echo "include_if_exists = 'switchboard.conf'" | as_pg tee -a "$pgroot/primary/postgresql.conf" >/dev/null
  fi
  start_cluster primary "$primary_port"

  psql_su primary -d postgres \
    -v db="$db" -v auth_password="$auth_password" -v messaging_password="$messaging_password" \
    -v replication_password="$replication_password" -f "$here/init.sql"

  local n
  for n in $(seq 1 "$replicas"); do
    start_replica "$n"
  done
}

start_replica() { # n
  local n="$1" name="replica$1" slot="replica_$1"
  local port
  port="$(port_of "$name")"
  if [ ! -f "$pgroot/$name/PG_VERSION" ]; then
    log "cloning $name from the primary (pg_basebackup -R, slot $slot)"
    as_pg rm -rf "$pgroot/$name"
    # A slot left by an interrupted earlier clone would make -C fail.
    psql_su primary -d postgres -c \
      "SELECT pg_drop_replication_slot('$slot') FROM pg_replication_slots WHERE slot_name = '$slot' AND NOT active" >/dev/null
    as_pg env PGPASSWORD="$replication_password" "$bindir/pg_basebackup" \
      -h 127.0.0.1 -p "$primary_port" -U replicator -D "$pgroot/$name" \
      -R -X stream -C -S "$slot" --checkpoint=fast
  fi
  # A replica cloned when the primary listened elsewhere follows it to its port now
  # (pg_basebackup -R wrote the port into primary_conninfo).
  as_pg sed -i -E "s/^(primary_conninfo = '.* port=)[0-9]+/\1$primary_port/" \
    "$pgroot/$name/postgresql.auto.conf"
  start_cluster "$name" "$port"

  # Wait until the replica is a hot standby with a streaming WAL receiver.
  local i state=""
  for i in $(seq 1 300); do
    state="$(psql_su "$name" -d postgres -At -c \
      "SELECT pg_is_in_recovery()::text || ':' || coalesce((SELECT status FROM pg_stat_wal_receiver), 'none')" 2>/dev/null || true)"
    [ "$state" = "true:streaming" ] && break
    sleep 0.2
  done
  if [ "$state" != "true:streaming" ]; then
    log "$name is not streaming (state: ${state:-unreachable}); see $pgroot/$name.log"
    exit 1
  fi
  log "$name streaming from primary on 127.0.0.1:$port"
}

all_names() {
  echo primary
  seq 1 "$replicas" | sed 's/^/replica/'
}

stop() { # [name]
  local name names
  names="${1:-$(all_names | sort -r)}"
  for name in $names; do
    if [ -f "$pgroot/$name/PG_VERSION" ] && is_running "$name"; then
      as_pg "$bindir/pg_ctl" -D "$pgroot/$name" -m fast -w stop >/dev/null && log "$name stopped"
    fi
  done
}

status() {
  local name
  for name in $(all_names); do
    if [ -f "$pgroot/$name/PG_VERSION" ] && is_running "$name"; then echo "$name: running"; else echo "$name: stopped"; fi
  done
}

case "${1:-start}" in
  start) start ;;
  stop) stop "${2:-}" ;;
  status) status ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
