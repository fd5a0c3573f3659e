#!/usr/bin/env bash
# Runs the whole Switchboard stack in the foreground: PostgreSQL primary + streaming replica,
# the auth and messaging services, and NGINX on http://localhost:8080 and https://localhost:8443
# (a local CA, scripts/local-ca.sh; PostgreSQL serves TLS from it too). Ctrl-C or SIGTERM stops
# every process it started. Installs what is missing (Debian packages) on first use.
#
#   scripts/run.sh                # release build
#   PROFILE=debug scripts/run.sh  # faster build, slower service
#
# Every port and folder can be moved with the variables listed in README.md.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=scripts/common.sh
source "$here/common.sh"

ensure_packages
ensure_rust
export PROFILE="${PROFILE:-release}"
build_services

pids=()
stopping=0
stop_all() {
  [ "$stopping" = 1 ] && return
  stopping=1
  log "stopping"
  local p
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  stop_recorded
  "$REPO/postgres/setup.sh" stop || true
}
trap 'stop_all; exit 0' INT TERM
trap 'stop_all' EXIT

"$REPO/postgres/setup.sh" start
ensure_signing_key
ensure_vapid_key
start_smtp
pids+=("$!")

start_service auth
pids+=("$!")
for n in $(seq 1 "$MESSAGING_INSTANCES"); do
  start_service messaging "$n"
  pids+=("$!")
done
wait_ready "http://127.0.0.1:${AUTH_PORT}/auth/readyz" auth
for n in $(seq 1 "$MESSAGING_INSTANCES"); do
  wait_ready "http://127.0.0.1:$((MESSAGING_PORT + n - 1))/api/readyz" "messaging-$n"
done
start_nginx
pids+=("$!")
wait_ready "http://127.0.0.1:${NGINX_PORT}/api/healthz" nginx

cat <<MSG

Switchboard is up:
  API and WebSocket   http://localhost:${NGINX_PORT}   (/auth/*, /api/*, /ws)
  HTTPS               ${NGINX_TLS_PORT:+https://localhost:${NGINX_TLS_PORT}   (local CA: ${SWITCHBOARD_DATA}/tls/ca.pem)}
  messaging           ${MESSAGING_INSTANCES} instance(s) from 127.0.0.1:${MESSAGING_PORT}
  primary             postgres://127.0.0.1:${PG_PRIMARY_PORT}/${PG_DATABASE}
  replicas            ${PG_REPLICAS} from postgres://127.0.0.1:${PG_REPLICA_PORT}/${PG_DATABASE}
  mail (SMTP)         smtp://127.0.0.1:${SMTP_PORT}; every mail is a file in ${SWITCHBOARD_DATA}/mail/new
  logs                ${LOG_DIR}
Press Ctrl-C to stop.

MSG
# Stay in the foreground until we are told to stop. Services may die and be restarted (the
# failover tests restart messaging instances, the browser test restarts auth with a short
# token lifetime); the stack ends with NGINX or a signal.
wait "${pids[-1]}" || true
log "nginx exited; see ${LOG_DIR}"
exit 1
