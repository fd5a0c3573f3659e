#!/usr/bin/env bash
# Makes, once, a local certificate authority and a server certificate it signs, in DIR:
#   ca.pem      what clients trust (curl --cacert, NODE_EXTRA_CA_CERTS, sslrootcert, a browser)
#   server.pem  the certificate for localhost, 127.0.0.1 and switchboard.test (RFC 6761's
#               reserved name, which tests resolve to 127.0.0.1 to be an origin that is not
#               loopback by name), used by NGINX's HTTPS and PostgreSQL's TLS
#   server.key  its key (0600)
# ECDSA P-256 (Chromium does not take Ed25519 certificates). Existing files are kept; the
# server certificate (one year) is made again from the same CA within 30 days of expiry.
#   scripts/local-ca.sh DIR
set -euo pipefail
dir="${1:?usage: local-ca.sh DIR}"
if [ -s "$dir/server.pem" ] && [ -s "$dir/ca.pem" ] && [ -s "$dir/server.key" ] \
   && openssl x509 -checkend 2592000 -noout -in "$dir/server.pem" >/dev/null; then
  exit 0
fi
mkdir -p "$dir"
(
  umask 077
  if [ ! -s "$dir/ca.pem" ] || [ ! -s "$dir/ca.key" ]; then
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3650 \
      -subj "/CN=Switchboard local CA" -keyout "$dir/ca.key" -out "$dir/ca.pem" \
      -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
  fi
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=localhost" \
    -keyout "$dir/server.key" -out "$dir/server.csr" 2>/dev/null
  printf '%s\n' "subjectAltName=DNS:localhost,DNS:switchboard.test,IP:127.0.0.1" "basicConstraints=CA:FALSE" \
    "keyUsage=critical,digitalSignature" "extendedKeyUsage=serverAuth" >"$dir/server.ext"
  openssl x509 -req -in "$dir/server.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" \
    -CAcreateserial -days 365 -extfile "$dir/server.ext" -out "$dir/server.pem" 2>/dev/null
)
chmod 0644 "$dir/ca.pem" "$dir/server.pem"
chmod 0755 "$dir"
echo "[local-ca] made a local CA ($dir/ca.pem) and a server certificate for localhost, 127.0.0.1, switchboard.test" >&2
