# Shared by scripts/run.sh and scripts/test.sh. Defaults are for local use; every one can be
# overridden from the environment.
# shellcheck shell=bash

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export SWITCHBOARD_DATA="${SWITCHBOARD_DATA:-$REPO/.data}"
export PG_PRIMARY_PORT="${PG_PRIMARY_PORT:-55432}"
export PG_REPLICA_PORT="${PG_REPLICA_PORT:-55433}"
export PG_REPLICAS="${PG_REPLICAS:-2}"
export PG_DATABASE="${PG_DATABASE:-switchboard}"
export PG_SUPERUSER_PASSWORD="${PG_SUPERUSER_PASSWORD:-postgres-dev}"
export AUTH_DB_PASSWORD="${AUTH_DB_PASSWORD:-auth-dev}"
export MESSAGING_DB_PASSWORD="${MESSAGING_DB_PASSWORD:-messaging-dev}"
export REPLICATION_PASSWORD="${REPLICATION_PASSWORD:-replication-dev}"
export AUTH_PORT="${AUTH_PORT:-8081}"
export MESSAGING_PORT="${MESSAGING_PORT:-8082}"
# Messaging instances behind NGINX (ports MESSAGING_PORT, MESSAGING_PORT + 1, …).
export MESSAGING_INSTANCES="${MESSAGING_INSTANCES:-2}"
export NGINX_PORT="${NGINX_PORT:-8080}"
# HTTPS beside plain HTTP, with a certificate from a local CA made once under
# $SWITCHBOARD_DATA/tls (empty: no HTTPS listener).
export NGINX_TLS_PORT="${NGINX_TLS_PORT-8443}"
# Proxies whose X-Forwarded-For NGINX believes, space-separated addresses or CIDR ranges
# (empty: none; the peer is the client).
export NGINX_TRUSTED_PROXIES="${NGINX_TRUSTED_PROXIES:-}"
# Clients whose W3C traceparent the edge continues (space-separated addresses or CIDR
# ranges); anyone else's request starts a new trace, linked to what it sent.
export NGINX_TRACE_CLIENTS="${NGINX_TRACE_CLIENTS-127.0.0.1 ::1}"
# The share of new traces the edge samples (0–1); the services follow its decision.
export NGINX_TRACE_RATIO="${NGINX_TRACE_RATIO:-1}"
# Internal Prometheus endpoints (not behind NGINX): auth, then one per messaging instance.
export AUTH_METRICS_PORT="${AUTH_METRICS_PORT:-9181}"
export MESSAGING_METRICS_PORT="${MESSAGING_METRICS_PORT:-9182}"
# The SMTP server the stack sends account mail to (aiosmtpd from PyPI), storing every mail
# in the Maildir $SWITCHBOARD_DATA/mail (new/: one file per message).
export SMTP_PORT="${SMTP_PORT:-1025}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$REPO/target}"
LOG_DIR="$SWITCHBOARD_DATA/logs"

log() { printf '[switchboard] %s\n' "$*" >&2; }

# Installs the Debian packages the stack needs when their commands are missing.
ensure_packages() {
  local missing=()
  command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing+=(nginx-light)
  # njs: the edge's trace context and span (nginx/edge_trace.js).
  [ -f /usr/lib/nginx/modules/ngx_http_js_module.so ] || missing+=(libnginx-mod-http-js)
  # promtool: the alert rules' checks and unit tests (scripts/validate_deploy.py).
  command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
  command -v envsubst >/dev/null 2>&1 || missing+=(gettext-base)
  command -v openssl >/dev/null 2>&1 || missing+=(openssl)
  # The build links OpenSSL (webauthn-rs, for passkeys).
  pkg-config --exists openssl 2>/dev/null || missing+=(pkg-config libssl-dev)
  command -v curl >/dev/null 2>&1 || missing+=(curl)
  command -v docker-compose >/dev/null 2>&1 || missing+=(docker-compose)
  python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || missing+=(python3-venv)
  ls -d /usr/lib/postgresql/*/bin/pg_basebackup >/dev/null 2>&1 || missing+=(postgresql postgresql-contrib)
  [ ${#missing[@]} -eq 0 ] && return
  apt_install "${missing[@]}"
}

# The browser test's tools: Debian's Chromium, and Node.js with npm for playwright-core.
ensure_browser_tools() {
  local missing=()
  [ -x /usr/bin/chromium ] || missing+=(chromium fonts-dejavu-core)
  command -v node >/dev/null 2>&1 || missing+=(nodejs)
  command -v npm >/dev/null 2>&1 || missing+=(npm)
  [ ${#missing[@]} -eq 0 ] && return
  apt_install "${missing[@]}"
}

apt_install() {
  local missing=("$@")
  log "installing: ${missing[*]}"
  local sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # Debian starts a system nginx/postgres on install; ours run on their own ports and
  # folders, so those are left alone.
}

ensure_rust() {
  if ! command -v cargo >/dev/null 2>&1; then
    [ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"
  fi
  command -v cargo >/dev/null 2>&1 || {
    log "cargo not found: install a Rust toolchain (rustup) first"
    exit 1
  }
}

build_services() {
  local flag=()
  [ "${PROFILE:-release}" = release ] && flag=(--release)
  log "building services (${PROFILE:-release})"
  (cd "$REPO" && cargo build --locked "${flag[@]}" --bin auth --bin messaging)
  BIN_DIR="$CARGO_TARGET_DIR/${PROFILE:-release}"
  [ "${PROFILE:-release}" = debug ] && BIN_DIR="$CARGO_TARGET_DIR/debug"
  export BIN_DIR
}

# A development signing key, made once (PKCS#8 PEM Ed25519).
ensure_signing_key() {
  mkdir -p "$SWITCHBOARD_DATA/keys"
  local key="$SWITCHBOARD_DATA/keys/signing-key.pem"
  if [ ! -s "$key" ]; then
    (umask 077 && openssl genpkey -algorithm ed25519 -out "$key")
    log "generated signing key $key"
  fi
  export AUTH_SIGNING_KEY_FILES="${AUTH_SIGNING_KEY_FILES:-$key}"
}

# The VAPID key Web Push is signed with (RFC 8292): a P-256 key, made once per data folder.
ensure_vapid_key() {
  mkdir -p "$SWITCHBOARD_DATA/keys"
  local key="$SWITCHBOARD_DATA/keys/vapid.pem"
  if [ ! -s "$key" ]; then
    (umask 077 && openssl ecparam -name prime256v1 -genkey -noout -out "$key")
    log "generated VAPID key $key"
  fi
  export VAPID_PRIVATE_KEY_FILE="${VAPID_PRIVATE_KEY_FILE:-$key}"
  export VAPID_SUBJECT="${VAPID_SUBJECT:-mailto:push@switchboard.localhost}"
}

# Installs the test stack's push service's tools (http-ece, py-vapid from PyPI) into
# .data/tools/push-venv on first use; prints its Python.
ensure_push_service() {
  local venv="$REPO/.data/tools/push-venv"
  if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import http_ece, py_vapid' 2>/dev/null; then
    log "installing http-ece and py-vapid (the test push service) into $venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check "http-ece==1.2.1" "py-vapid==1.9.6"
  fi
  echo "$venv/bin/python"
}

# Starts scripts/push_service.py on 127.0.0.1:$1 in the background (pid in
# $SWITCHBOARD_DATA/pids/push.pid).
start_push_service() {
  local python
  python="$(ensure_push_service)"
  mkdir -p "$LOG_DIR" "$SWITCHBOARD_DATA/pids"
  "$python" "$REPO/scripts/push_service.py" "$1" >>"$LOG_DIR/push.log" 2>&1 &
  echo "$!" >"$SWITCHBOARD_DATA/pids/push.pid"
  log "push service starting on 127.0.0.1:$1"
}

# The local CA and server certificate (scripts/local-ca.sh) under $SWITCHBOARD_DATA/tls:
# NGINX's HTTPS and PostgreSQL's TLS use the server certificate; clients trust ca.pem.
ensure_tls_cert() {
  "$REPO/scripts/local-ca.sh" "$SWITCHBOARD_DATA/tls"
}

# What every service database URL ends with: TLS, the server verified against the local CA
# (src/platform/db/tls.rs; postgres/pg_hba.conf refuses the service roles without TLS).
db_tls_query() {
  printf '?sslmode=verify-full&sslrootcert=%s' "$SWITCHBOARD_DATA/tls/ca.pem"
}

# Installs aiosmtpd (PyPI) into .data/tools/smtp-venv on first use; prints its command.
ensure_smtp_server() {
  local venv="$REPO/.data/tools/smtp-venv"
  if [ ! -x "$venv/bin/aiosmtpd" ]; then
    log "installing aiosmtpd (the local SMTP server) into $venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check "aiosmtpd==1.4.6"
  fi
  echo "$venv/bin/aiosmtpd"
}

# Starts the SMTP server on 127.0.0.1:$SMTP_PORT in the background (pid in
# $SWITCHBOARD_DATA/pids/smtp.pid); each mail lands in the Maildir $SWITCHBOARD_DATA/mail.
start_smtp() {
  local bin
  bin="$(ensure_smtp_server)"
  mkdir -p "$SWITCHBOARD_DATA/mail/tmp" "$SWITCHBOARD_DATA/mail/new" "$SWITCHBOARD_DATA/mail/cur" \
    "$LOG_DIR" "$SWITCHBOARD_DATA/pids"
  "$bin" -n -l "127.0.0.1:${SMTP_PORT}" -c aiosmtpd.handlers.Mailbox "$SWITCHBOARD_DATA/mail" \
    >>"$LOG_DIR/smtp.log" 2>&1 &
  echo "$!" >"$SWITCHBOARD_DATA/pids/smtp.pid"
  log "smtp starting on 127.0.0.1:${SMTP_PORT} (mail in $SWITCHBOARD_DATA/mail/new)"
}

# Starts one service in the background, logging to $LOG_DIR/<name>.log and recording its pid
# in $SWITCHBOARD_DATA/pids/<name>.pid; $! is its pid. `start_service messaging N` starts
# messaging instance N (1-based) on port MESSAGING_PORT + N - 1, named messaging-N.
start_service() {
  local kind="$1" n="${2:-1}" name port
  mkdir -p "$LOG_DIR" "$SWITCHBOARD_DATA/pids"
  export COOKIE_SECURE="${COOKIE_SECURE:-false}"
  # The local stack and the benchmark run on development secrets (built-in token keys, the
  # dev database passwords); the test stack sets it false, production never sets it
  # (src/platform/secrets.rs).
  export ALLOW_INSECURE_DEV_SECRETS="${ALLOW_INSECURE_DEV_SECRETS:-true}"
  local origins="http://localhost:${NGINX_PORT},http://127.0.0.1:${NGINX_PORT}"
  [ -n "$NGINX_TLS_PORT" ] && origins="$origins,https://localhost:${NGINX_TLS_PORT},https://127.0.0.1:${NGINX_TLS_PORT}"
  export ALLOWED_ORIGINS="${ALLOWED_ORIGINS:-$origins}"
  case "$kind" in
    auth)
      name=auth
      port="$AUTH_PORT"
      AUTH_BIND="127.0.0.1:${port}" \
      METRICS_BIND="127.0.0.1:${AUTH_METRICS_PORT}" \
      SMTP_URL="smtp://127.0.0.1:${SMTP_PORT}" \
      PUBLIC_URL="${PUBLIC_URL:-http://localhost:${NGINX_PORT}}" \
      WEBAUTHN_ORIGINS="${WEBAUTHN_ORIGINS:-$(webauthn_origins)}" \
      AUTH_DATABASE_URL="postgres://switchboard_auth:${AUTH_DB_PASSWORD}@127.0.0.1:${PG_PRIMARY_PORT}/${PG_DATABASE}$(db_tls_query)" \
        "$BIN_DIR/auth" >>"$LOG_DIR/auth.log" 2>&1 &
      ;;
    messaging)
      name="messaging-$n"
      port=$((MESSAGING_PORT + n - 1))
      INSTANCE_ID="$name" \
      MESSAGING_BIND="127.0.0.1:${port}" \
      HTTP_WORKERS="${HTTP_WORKERS:-$(messaging_workers)}" \
      METRICS_BIND="127.0.0.1:$((MESSAGING_METRICS_PORT + n - 1))" \
      MESSAGING_DATABASE_URL="postgres://switchboard_messaging:${MESSAGING_DB_PASSWORD}@127.0.0.1:${PG_PRIMARY_PORT}/${PG_DATABASE}$(db_tls_query)" \
      REPLICA_URLS="$(replica_urls)" \
      AUTH_JWKS_URL="http://127.0.0.1:${AUTH_PORT}/auth/.well-known/jwks.json" \
      SMTP_URL="smtp://127.0.0.1:${SMTP_PORT}" \
      PUBLIC_URL="${PUBLIC_URL:-http://localhost:${NGINX_PORT}}" \
        "$BIN_DIR/messaging" >>"$LOG_DIR/$name.log" 2>&1 &
      ;;
  esac
  echo "$!" >"$SWITCHBOARD_DATA/pids/$name.pid"
  log "$name starting on 127.0.0.1:$port (log: $LOG_DIR/$name.log)"
}

# HTTP workers per messaging instance: the host's cores shared between the instances, at
# least one (HTTP_WORKERS in README "Configuration": more workers than cores cost a thread
# crossing per statement).
messaging_workers() {
  local cores
  cores="$(nproc)"
  echo $(( cores / MESSAGING_INSTANCES > 0 ? cores / MESSAGING_INSTANCES : 1 ))
}

# Origins besides PUBLIC_URL's whose passkey answers auth accepts: the local TLS listener's.
webauthn_origins() {
  [ -n "${NGINX_TLS_PORT:-}" ] && printf 'https://localhost:%s' "$NGINX_TLS_PORT"
  return 0
}

# Comma-separated URLs of every replica, for the messaging role.
replica_urls() {
  local n out=""
  for n in $(seq 1 "$PG_REPLICAS"); do
    out="${out:+$out,}postgres://switchboard_messaging:${MESSAGING_DB_PASSWORD}@127.0.0.1:$((PG_REPLICA_PORT + n - 1))/${PG_DATABASE}$(db_tls_query)"
  done
  echo "$out"
}

# The NGINX upstream lines for every messaging instance.
messaging_servers() {
  local n
  for n in $(seq 1 "$MESSAGING_INSTANCES"); do
    printf 'server 127.0.0.1:%s; ' $((MESSAGING_PORT + n - 1))
  done
}

# Stops every process recorded in $SWITCHBOARD_DATA/pids (including ones a test restarted).
stop_recorded() {
  local f pid
  for f in "$SWITCHBOARD_DATA"/pids/*.pid; do
    [ -f "$f" ] || continue
    pid="$(cat "$f")"
    kill -TERM "$pid" 2>/dev/null || true
  done
  for f in "$SWITCHBOARD_DATA"/pids/*.pid; do
    [ -f "$f" ] || continue
    pid="$(cat "$f")"
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -KILL "$pid" 2>/dev/null || true
    rm -f "$f"
  done
}

# When traces are exported (OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, or OTEL_EXPORTER_OTLP_ENDPOINT
# + /v1/traces), ships NGINX's edge spans there too (scripts/edge_spans.py; pid in
# $SWITCHBOARD_DATA/pids/edge-spans.pid, a previous one stopped first).
start_edge_span_shipper() {
  local url="${OTEL_EXPORTER_OTLP_TRACES_ENDPOINT:-}" pidfile="$SWITCHBOARD_DATA/pids/edge-spans.pid"
  [ -z "$url" ] && [ -n "${OTEL_EXPORTER_OTLP_ENDPOINT:-}" ] && url="${OTEL_EXPORTER_OTLP_ENDPOINT%/}/v1/traces"
  if [ -f "$pidfile" ]; then kill -TERM "$(cat "$pidfile")" 2>/dev/null || true; fi
  rm -f "$pidfile"
  if [ -z "$url" ] || [ "$NGINX_EDGE_SPANS" != on ]; then return 0; fi
  python3 "$REPO/scripts/edge_spans.py" "$NGINX_EDGE_SPAN_LOG" "$url" >>"$LOG_DIR/edge-spans.log" 2>&1 &
  echo "$!" >"$pidfile"
}

# Renders the NGINX config into $SWITCHBOARD_DATA/nginx and starts it in the foreground of a
# background job; $! is its pid.
start_nginx() {
  local runtime="$SWITCHBOARD_DATA/nginx"
  mkdir -p "$runtime/tmp" "$LOG_DIR"
  export NGINX_RUNTIME="$runtime"
  export NGINX_ACCESS_LOG="$LOG_DIR/nginx-access.log"
  export AUTH_SERVERS="server 127.0.0.1:${AUTH_PORT};"
  MESSAGING_SERVERS="$(messaging_servers)"
  export MESSAGING_SERVERS
  if [ "$(id -u)" -eq 0 ]; then
    export NGINX_USER="user nobody nogroup;"
    chown -R nobody:nogroup "$runtime/tmp"
  else
    export NGINX_USER=""
  fi
  export WEB_ROOT="$SWITCHBOARD_DATA/web"
  log "web client version $("$REPO/scripts/build-web.sh" "$WEB_ROOT")"
  export NGINX_WORKERS="${NGINX_WORKERS:-1}"
  export NGINX_WORKER_CONNECTIONS="${NGINX_WORKER_CONNECTIONS:-4096}"
  export NGINX_TLS="" NGINX_REAL_IP_FROM="" NGINX_HSTS="${NGINX_HSTS:-}"
  if [ -n "$NGINX_TLS_PORT" ]; then
    ensure_tls_cert
    NGINX_TLS="listen ${NGINX_TLS_PORT} ssl; ssl_certificate $SWITCHBOARD_DATA/tls/server.pem; ssl_certificate_key $SWITCHBOARD_DATA/tls/server.key;"
  fi
  local proxy
  for proxy in $NGINX_TRUSTED_PROXIES; do
    NGINX_REAL_IP_FROM="${NGINX_REAL_IP_FROM}set_real_ip_from ${proxy}; "
  done
  # The edge span of each sampled request (nginx/edge_trace.js) goes to this file, one
  # OTLP/JSON ExportTraceServiceRequest per line (the OpenTelemetry file exporter format).
  # On when traces are exported (the shipper then sends the file there); off, the file would
  # only grow.
  local spans=off
  [ -n "${OTEL_EXPORTER_OTLP_ENDPOINT:-}${OTEL_EXPORTER_OTLP_TRACES_ENDPOINT:-}" ] && spans=on
  export NGINX_EDGE_SCRIPT="$REPO/nginx/edge_trace.js" NGINX_EDGE_SPANS="${NGINX_EDGE_SPANS:-$spans}"
  export NGINX_EDGE_SPAN_LOG="$LOG_DIR/edge-spans.jsonl" NGINX_TRACE_TRUSTED=""
  [ "$NGINX_EDGE_SPANS" = on ] || NGINX_EDGE_SPAN_LOG=/dev/null
  for proxy in $NGINX_TRACE_CLIENTS; do
    NGINX_TRACE_TRUSTED="${NGINX_TRACE_TRUSTED}${proxy} 1; "
  done
  local vars='${NGINX_PORT} ${AUTH_SERVERS} ${MESSAGING_SERVERS} ${NGINX_RUNTIME} ${NGINX_ACCESS_LOG} ${NGINX_USER} ${WEB_ROOT} ${NGINX_WORKERS} ${NGINX_WORKER_CONNECTIONS} ${NGINX_TLS} ${NGINX_REAL_IP_FROM} ${NGINX_HSTS} ${NGINX_EDGE_SCRIPT} ${NGINX_EDGE_SPANS} ${NGINX_EDGE_SPAN_LOG} ${NGINX_TRACE_TRUSTED} ${NGINX_TRACE_RATIO}'
  envsubst "$vars" <"$REPO/nginx/switchboard.conf.template" >"$runtime/switchboard.conf"
  envsubst "$vars" <"$REPO/nginx/nginx.local.conf.template" >"$runtime/nginx.conf"
  local nginx_bin
  nginx_bin="$(command -v nginx || echo /usr/sbin/nginx)"
  "$nginx_bin" -t -q -p "$runtime" -c "$runtime/nginx.conf"
  start_edge_span_shipper
  "$nginx_bin" -p "$runtime" -c "$runtime/nginx.conf" >>"$LOG_DIR/nginx.log" 2>&1 &
  echo "$!" >"$SWITCHBOARD_DATA/pids/nginx.pid"
  log "nginx starting on 127.0.0.1:${NGINX_PORT}${NGINX_TLS_PORT:+ and https on ${NGINX_TLS_PORT}}"
}

# Waits up to 60 s for a URL to answer 200.
wait_ready() {
  local url="$1" name="$2" i
  for i in $(seq 1 300); do
    if curl -fsS -o /dev/null --max-time 2 "$url" 2>/dev/null; then
      return 0
    fi
    sleep 0.2
  done
  log "$name did not become ready at $url; last log lines:"
  tail -n 30 "$LOG_DIR/$name.log" >&2 2>/dev/null || true
  return 1
}

# Starts a fresh stack (data folder recreated) with scripts/run.sh in the background, stops
# it when the calling script exits, and waits until NGINX answers both readiness checks.
# Used by test.sh and bench.sh, each with its own ports and data folder.
start_stack_background() {
  "$REPO/postgres/setup.sh" stop >/dev/null 2>&1 || true
  rm -rf "$SWITCHBOARD_DATA"
  mkdir -p "$SWITCHBOARD_DATA"
  "$REPO/scripts/run.sh" >"$SWITCHBOARD_DATA/stack.log" 2>&1 &
  STACK_PID=$!
  trap stop_stack_background EXIT
  local url ok
  for url in "/auth/readyz" "/api/readyz"; do
    ok=0
    for _ in $(seq 1 1500); do
      if curl -fsS -o /dev/null --max-time 2 "http://127.0.0.1:${NGINX_PORT}${url}" 2>/dev/null; then ok=1; break; fi
      if ! kill -0 "$STACK_PID" 2>/dev/null; then break; fi
      sleep 0.2
    done
    if [ "$ok" != 1 ]; then
      log "stack did not come up; its output:"
      cat "$SWITCHBOARD_DATA/stack.log" >&2
      tail -n 40 "$SWITCHBOARD_DATA"/logs/*.log >&2 2>/dev/null || true
      exit 1
    fi
  done
  log "stack is up on http://127.0.0.1:${NGINX_PORT}"
}

stop_stack_background() {
  kill -TERM "$STACK_PID" 2>/dev/null || true
  wait "$STACK_PID" 2>/dev/null || true
  stop_recorded
}
