#!/usr/bin/env bash
# Instructions per cache hit, counted by valgrind's callgrind: repeatable for
# the same binary whatever else the machine is doing (wall-clock figures are
# not, on a shared 2-core machine).
#
#   benches/instructions.sh                 # builds the release binary first
#   BIN=path/to/otpgate benches/instructions.sh
#
# Starts the simulator and the gateway (under callgrind) on 127.0.0.1, fills
# the /api/v2/services cache, sends 200 warm-up requests, zeroes the counters,
# sends N (2000) keep-alive cache hits with x-apikey (pass-through), dumps and
# prints the gateway's instructions per request. Settings: N, PORT_BASE=18500,
# FILTER=warn (the log filter; info adds the access log line), OUT=path keeps
# the callgrind profile (callgrind_annotate --inclusive=yes OUT) for a look at
# where the instructions go (build with CARGO_PROFILE_RELEASE_DEBUG=line-tables-only
# for function names with lines).

set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
N=${N:-2000}
PORT_BASE=${PORT_BASE:-18500}
FILTER=${FILTER:-warn}
HOST=127.0.0.1
SIM=$((PORT_BASE + 1))
GATEWAY=$((PORT_BASE + 3))
ADMIN=$((PORT_BASE + 4))

command -v valgrind >/dev/null || { echo "instructions: valgrind is needed (apt-get install valgrind)" >&2; exit 1; }
if [ -z "${BIN:-}" ]; then
    (cd "$ROOT" && cargo build --release --bin otpgate --quiet)
    BIN=$ROOT/target/release/otpgate
fi
WORK=$(mktemp -d /tmp/otpgate-instructions.XXXXXX)
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

wait_http() {
    local tries=600
    until curl -s -o /dev/null --max-time 2 "$1"; do
        tries=$((tries - 1))
        [ $tries -gt 0 ] || { echo "instructions: no answer from $1" >&2; exit 1; }
        sleep 0.2
    done
}

hits() { # count
    python3 - "$HOST" "$GATEWAY" "$1" <<'EOF'
import http.client, sys
host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
connection = http.client.HTTPConnection(host, port, timeout=60)
for _ in range(n):
    connection.request("GET", "/api/v2/services", headers={"x-apikey": "demo-key-1"})
    response = connection.getresponse()
    response.read()
    assert response.status == 200 and response.getheader("x-cache") == "HIT", response.status
EOF
}

"$BIN" sim --listen "$HOST:$SIM" --limit 100000 --window-seconds 10 >"$WORK/sim.log" 2>&1 &
PIDS+=($!)
wait_http "http://$HOST:$SIM/__sim/stats"
env OTPGATE__LIMITS__CLIENT_REQUESTS_PER_SECOND=0 OTPGATE__STORE__PATH="$WORK/gw.db" \
    OTPGATE__LOG__FILTER="$FILTER" RUST_LOG="$FILTER" \
    valgrind --tool=callgrind --callgrind-out-file="$WORK/cg.out" "$BIN" serve \
    --listen "$HOST:$GATEWAY" --admin-listen "$HOST:$ADMIN" \
    --upstream "http://$HOST:$SIM/api" >"$WORK/gw.log" 2>&1 &
GW=$!
PIDS+=("$GW")
wait_http "http://$HOST:$ADMIN/healthz"
curl -sf -o /dev/null -H "x-apikey: demo-key-1" -H "prefer: wait=30" \
    "http://$HOST:$GATEWAY/api/v2/services"
hits 200
callgrind_control -z "$GW" >/dev/null
hits "$N"
callgrind_control -d "$GW" >/dev/null
sleep 1
total=$(callgrind_annotate "$WORK/cg.out.1" 2>/dev/null | awk '/PROGRAM TOTALS/ { gsub(",", "", $1); print $1; exit }')
[ -z "${OUT:-}" ] || cp "$WORK/cg.out.1" "$OUT"
echo "instructions per cache hit: $((total / N)) ($total over $N requests, log filter $FILTER)"
