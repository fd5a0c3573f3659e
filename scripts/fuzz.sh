#!/usr/bin/env bash
# Fuzzes both services with Schemathesis against their OpenAPI documents, through NGINX,
# with real authentication (openapi/hooks.py registers a user and supplies its token, and a
# fresh session cookie to /auth/refresh and /auth/logout). Fails on any 5xx or any answer
# the documents do not allow (status, content type, headers, body schema).
#
#   scripts/fuzz.sh            # bounded (CI, run by scripts/test.sh): 25 examples per operation
#   scripts/fuzz.sh long       # 300 examples per operation, every phase, stateful links too
#
# Against the stack scripts/test.sh starts (SWITCHBOARD_URL, AUTH_DIRECT_URL) or, by
# default, the local one (scripts/run.sh on :8080).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(dirname "$here")"
mode="${1:-bounded}"
url="${SWITCHBOARD_URL:-http://127.0.0.1:8080}"
export AUTH_DIRECT_URL="${AUTH_DIRECT_URL:-http://127.0.0.1:${AUTH_PORT:-8081}}"

venv="$repo/.data/tools/fuzz-venv"
if [ ! -x "$venv/bin/schemathesis" ]; then
  echo "fuzz: installing schemathesis into $venv" >&2
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check "schemathesis==4.32.5"
fi

checks=not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance
case "$mode" in
  bounded) examples=25; phases=examples,coverage,fuzzing ;;
  long) examples=300; phases=examples,coverage,fuzzing,stateful ;;
  *) echo "usage: scripts/fuzz.sh [bounded|long]" >&2; exit 2 ;;
esac

# One worker: with two, Schemathesis 4.32.5 once crashed while building a multipart body
# generator ("SystemError: AST constructor recursion depth mismatch" in a worker thread) — a
# fault of the tool, not of the API, that would fail the run at random.
status=0
for spec in auth/openapi.json api/openapi.json; do
  echo "fuzz: $url/$spec ($mode, $examples examples per operation)" >&2
  PYTHONPATH="$repo/openapi" SCHEMATHESIS_HOOKS=hooks \
    "$venv/bin/schemathesis" run "$url/$spec" --url "$url" \
      --checks "$checks" --phases "$phases" --max-examples "$examples" \
      --workers 1 --request-timeout 15 --seed 20261121 \
      --suppress-health-check all --no-color \
      --report junit --report-dir "$repo/target/fuzz/$(dirname "$spec")" || status=$?
done
exit "$status"
