#!/usr/bin/env bash
# Prepares docker-compose.yml's inputs once: .env from .env.example with every password and
# token secret replaced by a random value, the signing key secrets/signing-key.pem and the
# Web Push (VAPID) key secrets/vapid.pem.
# Leaves existing files alone. Run from anywhere; writes beside docker-compose.yml.
#
# The key: compose bind-mounts a file secret with its host owner and mode, and the auth
# container runs as uid 65532, so the key file must be readable by others (0644) — openssl
# writes private keys 0600. The folder secrets/ is 0700, so on the host only its owner can
# reach the key. scripts/replay_compose.py checks both.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
if [ ! -f .env ]; then
  (umask 077 && while IFS= read -r line; do
    case "$line" in
      *PASSWORD=change-me*|*_SECRET=change-me*) printf '%s=%s\n' "${line%%=*}" "$(openssl rand -hex 32)" ;;
      *) printf '%s\n' "$line" ;;
    esac
  done <.env.example >.env)
  echo "wrote .env with random passwords and secrets"
fi
mkdir -p secrets
chmod 0700 secrets
if [ ! -s secrets/signing-key.pem ]; then
  openssl genpkey -algorithm ed25519 -out secrets/signing-key.pem
  echo "wrote secrets/signing-key.pem"
fi
chmod 0644 secrets/signing-key.pem
if [ ! -s secrets/vapid.pem ]; then
  openssl ecparam -name prime256v1 -genkey -noout -out secrets/vapid.pem
  echo "wrote secrets/vapid.pem"
fi
chmod 0644 secrets/vapid.pem
