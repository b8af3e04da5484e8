#!/usr/bin/env bash
# Development secrets for docker-compose.yml: a self-signed certificate for Envoy and one API key.
# NOT for production (there, use a real certificate and keep keys in a secret store).
#
#   deploy/docker/dev-secrets.sh [OUT_DIR]      # default: deploy/docker/secrets (git-ignored)
#
# Writes OUT_DIR/tls/tls.{crt,key}, OUT_DIR/keys/keys.yaml (Envoy's api_key_auth config, made by
# deploy/envoy/render.py keys) and OUT_DIR/client-key.txt (the key to send as x-api-key).
# Existing files are kept; delete OUT_DIR to start over.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
out="${1:-$here/secrets}"
render="$here/../envoy/render.py"
python="${PYTHON:-python3}"

mkdir -p "$out/tls" "$out/keys"
if [[ ! -s "$out/tls/tls.crt" ]]; then
  openssl req -x509 -newkey rsa:2048 -nodes -days 365 -subj "/CN=localhost" \
    -addext "subjectAltName=DNS:localhost,DNS:envoy,IP:127.0.0.1" \
    -keyout "$out/tls/tls.key" -out "$out/tls/tls.crt" 2>/dev/null
  echo "dev-secrets: self-signed certificate for localhost in $out/tls"
fi
if [[ ! -s "$out/client-key.txt" ]]; then
  (umask 077; openssl rand -hex 24 > "$out/client-key.txt")
  echo "dev-secrets: API key in $out/client-key.txt"
fi
if [[ ! -s "$out/keys/keys.yaml" ]]; then
  echo "dev $(cat "$out/client-key.txt")" | "$python" "$render" keys -o "$out/keys/keys.yaml"
  echo "dev-secrets: Envoy keys file in $out/keys/keys.yaml (client name: dev)"
fi
# Envoy runs as uid 101 and reads these through bind mounts: readable by all (dev only).
chmod 0644 "$out/tls/tls.crt" "$out/tls/tls.key" "$out/keys/keys.yaml"
chmod 0755 "$out/tls" "$out/keys"
