#!/usr/bin/env bash
# Runs every check and test: formatting, clippy, unit tests, and the integration suites
# against a real stack (PostgreSQL primary + streaming replica, both services, NGINX) that
# this script starts on its own ports and data folder (.data/test, recreated each run) and
# stops at the end. Installs what is missing (Debian packages) on first use.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(dirname "$here")"

# The test stack lives beside any running local stack, never on its ports.
export SWITCHBOARD_DATA="${TEST_DATA:-$repo/.data/test}"
export NGINX_PORT="${TEST_NGINX_PORT:-18080}"
# HTTPS as browsers use it (the local CA under .data/test/tls), with Secure cookies: the
# browser test and tests/api/edge.rs refresh through it. Plain HTTP stays for the rest.
export NGINX_TLS_PORT="${TEST_NGINX_TLS_PORT:-18443}"
export COOKIE_SECURE=true
# HSTS on HTTPS answers (tests use 127.0.0.1 and switchboard.test, no shared host name).
export NGINX_HSTS="max-age=63072000; includeSubDomains"
# The loopback address stands in for a trusted load balancer; tests/api/edge.rs connects
# from 127.0.0.2 as an untrusted client.
export NGINX_TRUSTED_PROXIES=127.0.0.1
# Test clients name themselves with loopback addresses (X-Forwarded-For): the edge continues
# their traces; tests/api/telemetry.rs's untrusted client comes from 198.51.100.7.
export NGINX_TRACE_CLIENTS="127.0.0.0/8 ::1"
export AUTH_PORT="${TEST_AUTH_PORT:-18081}"
export MESSAGING_PORT="${TEST_MESSAGING_PORT:-18082}"
export MESSAGING_INSTANCES=2
# Below Linux's ephemeral range (ip_local_port_range, 32768–60999): the fault tests stop and
# start the primary, and while it is down any outgoing connection may be given its port as
# a source port, after which the restarted server cannot bind it.
export PG_PRIMARY_PORT="${TEST_PG_PRIMARY_PORT:-25432}"
export PG_REPLICA_PORT="${TEST_PG_REPLICA_PORT:-25433}"
export PG_REPLICAS=2
export SMTP_PORT=11025
# A relay that is down is retried after 1 s, then 2 s at most (the default grows to 5 min).
export MAIL_RETRY_MAX_SECS=2
# Pushes go to the test push service (scripts/push_service.py, which verifies and decrypts
# them) besides the real push services; a refused push is retried after 1 s at most.
export PUSH_PORT=18320
export PUSH_ENDPOINT_ORIGINS="https://fcm.googleapis.com,https://updates.push.services.mozilla.com,https://*.push.apple.com,https://*.notify.windows.com,http://127.0.0.1:${PUSH_PORT}"
export PUSH_RETRY_MAX_SECS=1
# Digests of missed messages after 2 s of being away (the default waits 15 minutes).
export EMAIL_DIGEST_DELAY_SECS=2
export AUTH_METRICS_PORT=19181
export MESSAGING_METRICS_PORT=19182
# Traces go to the OTLP receiver tests/api/telemetry.rs runs on this port (nothing listens
# otherwise; the exporter drops its batches quietly). Small batches, sent at once.
export OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:18318
export OTEL_BSP_SCHEDULE_DELAY=100
export OTEL_EXPORTER_OTLP_TIMEOUT=1000
export PROFILE=debug
# Admission control's queueing-delay target for these debug builds: a debug build's batch
# statement takes several times a release build's, and the suites' tests share two
# instances, so at the release default (20 ms) one test's burst could cut the limit under
# another test's lone send (a 503 in the real-time suite, CI of 2026-12-02). The fault tests
# that exercise admission control pass their own target.
export SEND_QUEUE_MAX_WAIT_MS=200
# Replica pools of their own size (DB_REPLICA_POOL_SIZE), not the primary's 16: the
# telemetry test reads both pools' sizes back from /metrics.
export DB_REPLICA_POOL_SIZE=12
# bcrypt's cost is a production setting (12); 8 keeps the suite fast while a hash still
# takes long enough (~15 ms) that the login timing test measures something real.
export BCRYPT_COST=8
# JSON logs (the JWKS test counts fetches in them); a short JWKS refresh interval so that
# test need not wait long.
export LOG_FORMAT=json
export JWKS_MIN_REFRESH_SECS=1
# Small upload limits keep the over-limit tests quick; the defaults are 10 MiB and 1 MiB.
export ATTACHMENT_MAX_BYTES=1048576
export AVATAR_MAX_BYTES=65536
# Short real-time timings so tests wait on events, not on defaults meant for people.
export PRESENCE_GRACE_SECS=1
export TYPING_TTL_SECS=1
export RESUME_MAX_EVENTS=50
# A send budget large enough for the flood a slow-consumer test needs; the rate-limit test
# reads these two and sends past them.
export SEND_RATE_LIMIT=500
export SEND_RATE_WINDOW_SECS=60
# Replica health: checked every 250 ms; lagging past 3 s of replay or 1 MiB of WAL.
export REPLICA_CHECK_INTERVAL_MS=250
export REPLICA_MAX_LAG_SECS=3
export REPLICA_MAX_LAG_BYTES=1048576
# Secrets as production has them: no development switch, real-looking values
# (src/platform/secrets.rs refuses placeholders, short keys and the dev database passwords
# without it).
export ALLOW_INSECURE_DEV_SECRETS=false
export CONSISTENCY_TOKEN_SECRET=test-consistency-token-secret-0123456789
export REFRESH_TOKEN_SECRET=test-refresh-token-secret-0123456789abcdef
export AUTH_DB_PASSWORD=test-auth-db-7Qx2
export MESSAGING_DB_PASSWORD=test-messaging-db-9Vw4
# Small budgets the adversarial suite attacks: 60 rows per resume frame, 12 sockets per
# user, and uploads of at most 4 MiB stored and 6 MiB per window per user (the defaults:
# 5000, 32, 2 GiB, 200 MiB/h).
export RESUME_MAX_EVENTS_PER_FRAME=60 WS_MAX_SOCKETS_PER_USER=12
export UPLOAD_QUOTA_TOTAL_BYTES=4194304
export UPLOAD_QUOTA_WINDOW_BYTES=6291456
# shellcheck source=scripts/common.sh
source "$here/common.sh"

ensure_packages
ensure_rust
cd "$repo"

log "cargo fmt --check"
cargo fmt --all -- --check
log "cargo clippy"
cargo clippy --locked --all-targets -- -D warnings
cargo build --locked --bins
log "deployment files (docker-compose, k8s, nginx, env names from each binary's --help)"
SWITCHBOARD_BIN_DIR="$CARGO_TARGET_DIR/debug" "$here/validate-deploy.sh"
start_stack_background
start_push_service "$PUSH_PORT"
export SWITCHBOARD_PUSH_URL="http://127.0.0.1:${PUSH_PORT}"

export SWITCHBOARD_URL="http://127.0.0.1:${NGINX_PORT}"
export SWITCHBOARD_HTTPS_URL="https://127.0.0.1:${NGINX_TLS_PORT}"
export SWITCHBOARD_CA_FILE="$SWITCHBOARD_DATA/tls/ca.pem"
# Where tests read mail (the SMTP server's Maildir) and how they restart that server.
export SWITCHBOARD_MAILDIR="$SWITCHBOARD_DATA/mail"
SWITCHBOARD_SMTP_SERVER="$(ensure_smtp_server)"
export SWITCHBOARD_SMTP_SERVER
SWITCHBOARD_MESSAGING_INSTANCES="$(for n in $(seq 1 "$MESSAGING_INSTANCES"); do printf 'messaging-%s=http://127.0.0.1:%s,' "$n" $((MESSAGING_PORT + n - 1)); done)"
export SWITCHBOARD_MESSAGING_INSTANCES="${SWITCHBOARD_MESSAGING_INSTANCES%,}"
export SWITCHBOARD_PRIMARY_ADMIN_URL="postgres://postgres:${PG_SUPERUSER_PASSWORD}@127.0.0.1:${PG_PRIMARY_PORT}/${PG_DATABASE}"
export SWITCHBOARD_REPLICA_ADMIN_URL="postgres://postgres:${PG_SUPERUSER_PASSWORD}@127.0.0.1:${PG_REPLICA_PORT}/${PG_DATABASE}"
export SWITCHBOARD_REPLICA2_ADMIN_URL="postgres://postgres:${PG_SUPERUSER_PASSWORD}@127.0.0.1:$((PG_REPLICA_PORT + 1))/${PG_DATABASE}"
export AUTH_SIGNING_KEY_FILES="$SWITCHBOARD_DATA/keys/signing-key.pem"
export SWITCHBOARD_MESSAGING_DB_URL="postgres://switchboard_messaging:${MESSAGING_DB_PASSWORD}@127.0.0.1:${PG_PRIMARY_PORT}/${PG_DATABASE}$(db_tls_query)"
export SWITCHBOARD_AUTH_DB_URL="postgres://switchboard_auth:${AUTH_DB_PASSWORD}@127.0.0.1:${PG_PRIMARY_PORT}/${PG_DATABASE}$(db_tls_query)"

status=0
cargo test --locked --no-fail-fast --lib --tests -- "$@" || status=$?

# Restarts the auth service with the current environment (same binary, same ports).
restart_auth() {
  kill -TERM "$(cat "$SWITCHBOARD_DATA/pids/auth.pid")" 2>/dev/null || true
  while kill -0 "$(cat "$SWITCHBOARD_DATA/pids/auth.pid")" 2>/dev/null; do sleep 0.1; done
  BIN_DIR="$CARGO_TARGET_DIR/debug" start_service auth
  wait_ready "http://127.0.0.1:${AUTH_PORT}/auth/readyz" auth
}

# The browser test (web/tests): the web client in Debian's Chromium, driven by
# playwright-core, against this same stack. Auth restarts first with a short access-token
# lifetime, so the test can watch a session outlive its token. Skipped when the arguments
# filter the Rust tests, unless the filter is "e2e". It runs before the fuzzer, whose
# sign-up attempts use up NGINX's per-address sign-up allowance for a minute.
e2e_status=0
if [ "$#" -eq 0 ] || [ "$*" = e2e ]; then
  ensure_browser_tools
  (cd "$repo/web" && npm ci --no-audit --no-fund --loglevel=error)
  ACCESS_TOKEN_TTL_SECS=15 restart_auth
  log "browser test (Chromium over HTTPS, access tokens of 15 s); screenshots in target/e2e"
  spki="$(openssl x509 -in "$SWITCHBOARD_DATA/tls/server.pem" -pubkey -noout | openssl pkey -pubin -outform der \
    | openssl dgst -sha256 -binary | base64)"
  (cd "$repo/web" && ACCESS_TOKEN_TTL_SECS=15 E2E_ARTIFACTS="$CARGO_TARGET_DIR/e2e" \
    SWITCHBOARD_URL="$SWITCHBOARD_HTTPS_URL" NODE_EXTRA_CA_CERTS="$SWITCHBOARD_CA_FILE" E2E_TLS_SPKI="$spki" \
    node --test --test-reporter=spec tests/) || e2e_status=$?
  restart_auth
fi

# The API fuzzer: Schemathesis against both OpenAPI documents through NGINX, bounded.
# Skipped, like the browser test, when the arguments filter the Rust tests (unless "fuzz").
fuzz_status=0
if [ "$#" -eq 0 ] || [ "$*" = fuzz ]; then
  log "API fuzzing (Schemathesis, bounded)"
  AUTH_DIRECT_URL="http://127.0.0.1:${AUTH_PORT}" "$here/fuzz.sh" bounded || fuzz_status=$?
fi

if [ "$status" -ne 0 ] || [ "$fuzz_status" -ne 0 ] || [ "$e2e_status" -ne 0 ]; then
  log "tests failed; service logs are in $SWITCHBOARD_DATA/logs"
  tail -n 30 "$SWITCHBOARD_DATA"/logs/{auth,messaging}.log >&2 2>/dev/null || true
  exit 1
fi
