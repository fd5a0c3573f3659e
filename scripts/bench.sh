#!/usr/bin/env bash
# The benchmark: starts a stack of its own (release build, ports 28080…, data in
# .data/bench, recreated), then runs the load generator (benches/load) against it through
# NGINX, with pgbench's raw limits measured in the same run.
#
#   scripts/bench.sh          # short mode (CI): about a minute and a half of load
#   scripts/bench.sh full     # the published run: report in docs/benchmarks/
#   scripts/bench.sh soak     # ten minutes at 60 % of the sustainable send rate, watching
#                             # latency and memory drift: target/bench/soak.md
#
# The short report goes to target/bench/. Figures are printed, never asserted.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(dirname "$here")"
mode="${1:-short}"
case "$mode" in short|full|soak) ;; *) echo "usage: scripts/bench.sh [short|full|soak]" >&2; exit 2 ;; esac

export SWITCHBOARD_DATA="${BENCH_DATA:-$repo/.data/bench}"
export NGINX_PORT=28080 AUTH_PORT=28081 MESSAGING_PORT=28082 MESSAGING_INSTANCES=2
# Plain HTTP only: the benchmark measures the service path, not TLS.
export NGINX_TLS_PORT=""
export SMTP_PORT=21025
# PostgreSQL below Linux's ephemeral range (32768–60999), as the test stack's (scripts/test.sh).
export PG_PRIMARY_PORT=26432 PG_REPLICA_PORT=26433 PG_REPLICAS=1
# pg_stat_statements in both clusters: the report's "Where the primary's time went"
# (benches/load/statements.rs). Its own cost is in the raw limits as in the scenarios.
export PG_SERVER_OPTIONS="-c shared_preload_libraries=pg_stat_statements"
# Replica pools sized to the replica's 2 cores (README "Configuration", DB_REPLICA_POOL_SIZE):
# 8 connections in all instead of 32. The primary's stay at the default 16.
export DB_REPLICA_POOL_SIZE="${DB_REPLICA_POOL_SIZE:-4}"
export AUTH_METRICS_PORT=29181 MESSAGING_METRICS_PORT=29182
export PROFILE=release
# Bench config: sends limited by the stack, not by the per-user budget; cheap sign-ups (the
# bench registers thousands of users; bcrypt's cost is not what is measured); tokens that
# outlive the run; warnings only in the logs; no trace export.
export SEND_RATE_LIMIT=1000000000 SEND_RATE_WINDOW_SECS=1
export BCRYPT_COST=4 ACCESS_TOKEN_TTL_SECS=7200
# Ended sessions must be remembered as long as those tokens live; many tickets and sockets
# per user (the idle-socket scenario opens 100 per user at once).
export SESSION_END_MEMORY_SECS=7230 WS_TICKETS_PER_MINUTE=1000000 WS_MAX_SOCKETS_PER_USER=1000000
export RUST_LOG=warn LOG_FORMAT=json
export CONSISTENCY_TOKEN_SECRET=bench-consistency-token-secret-0123456789
unset OTEL_EXPORTER_OTLP_ENDPOINT
# No trace at the edge either: it samples nothing, so it writes no edge span (it still decides
# each request's trace context, as in production).
export NGINX_TRACE_RATIO=0
# Thousands of sockets: every process may open as many files as this machine allows, and
# NGINX runs a worker per core.
ulimit -n "$(ulimit -Hn)"
export NGINX_WORKERS=auto NGINX_WORKER_CONNECTIONS=32768
# shellcheck source=scripts/common.sh
source "$here/common.sh"

ensure_packages
ensure_rust
cd "$repo"
log "building (release)"
cargo build --locked --release --bin auth --bin messaging
cargo bench --locked --bench load --no-run
start_stack_background

out="$repo/target/bench"
[ "$mode" = full ] && out="$repo/docs/benchmarks"
mkdir -p "$out"
export BENCH_MODE="$mode" BENCH_OUT="$out"
export SWITCHBOARD_URL="http://127.0.0.1:${NGINX_PORT}"
export BENCH_MESSAGING_DIRECT="http://127.0.0.1:${MESSAGING_PORT}"
BENCH_MESSAGING_PID="$(cat "$SWITCHBOARD_DATA/pids/messaging-1.pid")"
export BENCH_MESSAGING_PID
export SWITCHBOARD_PRIMARY_ADMIN_URL="postgres://postgres:${PG_SUPERUSER_PASSWORD}@127.0.0.1:${PG_PRIMARY_PORT}/${PG_DATABASE}"
export SWITCHBOARD_REPLICA_ADMIN_URL="postgres://postgres:${PG_SUPERUSER_PASSWORD}@127.0.0.1:${PG_REPLICA_PORT}/${PG_DATABASE}"
log "benchmark ($mode) → $out"
# The load generator stands for clients on other machines: where this user may (root, or
# CAP_SYS_NICE), it runs ahead of the stack for the cores, so that an open-loop send it
# issues late on saturated cores is not counted as the stack's latency. The report says
# which priority it had.
if nice -n -10 true 2>/dev/null; then
  nice -n -10 cargo bench --locked --bench load
else
  cargo bench --locked --bench load
fi
