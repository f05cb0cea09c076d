#!/usr/bin/env bash
# otpgate side by side with nginx and a bare hyper server, on loopback.
#
#   benches/compare.sh            # everything, about 17 minutes
#   QUICK=1 benches/compare.sh    # cache hits only, about 5 minutes
#
# 1. Cache hits of /api/v2/services (with x-apikey) served by otpgate, by
#    nginx proxy_cache (benches/nginx.conf.template) and by examples/ceiling.rs
#    (the same bytes from memory): wrk at saturation and at ~1,000 req/s.
#    otpgate runs without its access log, as nginx's config does; a second
#    otpgate with the default log filter (info: one line per request, to a
#    file) shows what the log costs.
# 2. Memory: VmRSS idle and with 10,000 idle keep-alive connections.
# 3. Pacing: a flood of uncached calls through otpgate and through nginx
#    limit_req, each against a simulator at the real limit (5 calls per 10 s).
# 4. Poll storm: STORM_CLIENTS clients polling the status of STORM_ORDERS
#    orders every STORM_PERIOD s through otpgate (benches/poll_storm.py), at the
#    real limit: upstream calls against the budget, status age, gateway CPU.
#
# Installs nginx and wrk from Debian's packages when missing. Everything runs on
# 127.0.0.1 and is stopped on exit. Servers run on one CPU, the load generator
# on another, when the machine has two and allows pinning. The table is printed
# and written to benches/out/compare-<date>.txt.
#
# Settings (environment): CONNECTIONS=64 DURATION=10 RATE=1000 REPEAT=3 (cache-hit
# rounds, interleaved; each figure is the median) IDLE_CONNECTIONS=10000
# PACING_SECONDS=60 STORM_ORDERS=100 STORM_CLIENTS=1000 STORM_PERIOD=2
# STORM_SECONDS=600 (the first ORDERS x 2.6 s are the warm-up: every order's
# first status) PORT_BASE=18100 SERVER_CPU=1 LOAD_CPU=0 NO_BUILD=0
# ONLY=hits,memory,pacing,storm (the parts to run; memory needs hits) QUICK=0
# (QUICK=1 is ONLY=hits).

set -euo pipefail

CONNECTIONS=${CONNECTIONS:-64}
DURATION=${DURATION:-10}
RATE=${RATE:-1000}
IDLE_CONNECTIONS=${IDLE_CONNECTIONS:-10000}
PACING_SECONDS=${PACING_SECONDS:-60}
STORM_ORDERS=${STORM_ORDERS:-100}
STORM_CLIENTS=${STORM_CLIENTS:-1000}
STORM_PERIOD=${STORM_PERIOD:-2}
STORM_SECONDS=${STORM_SECONDS:-600}
PORT_BASE=${PORT_BASE:-18100}
SERVER_CPU=${SERVER_CPU:-1}
LOAD_CPU=${LOAD_CPU:-0}
QUICK=${QUICK:-0}
ONLY=${ONLY:-hits,memory,pacing,storm}
[ "$QUICK" = 1 ] && ONLY=hits
NO_BUILD=${NO_BUILD:-0}
REPEAT=${REPEAT:-3}

# The pacing both gateways must respect: 5 calls per 10 s, as otpgate plans it
# (window / (limit - 1) + margin). nginx's closest safe setting: see RESULTS.md.
PACING_PERIOD=2.6
NGINX_PACING_RATE=23r/m
KEY=demo-key-1
ROUTE=/api/v2/services
HOST=127.0.0.1

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=$ROOT/target/release/otpgate
CEILING=$ROOT/target/release/examples/ceiling
WORK=$(mktemp -d /tmp/otpgate-compare.XXXXXX)
chmod 755 "$WORK" # nginx workers run as another user when started by root
OUT_DIR=$ROOT/benches/out
OUT=$OUT_DIR/compare-$(date -u +%Y%m%d-%H%M%S).txt

SIM_FAST=$((PORT_BASE + 1))
SIM_REAL=$((PORT_BASE + 2))
GATEWAY=$((PORT_BASE + 3))
GATEWAY_ADMIN=$((PORT_BASE + 4))
PACED_GATEWAY=$((PORT_BASE + 5))
PACED_GATEWAY_ADMIN=$((PORT_BASE + 6))
NGINX_CACHE=$((PORT_BASE + 7))
NGINX_PACING=$((PORT_BASE + 8))
CEILING_PORT=$((PORT_BASE + 9))
STORM_SIM=$((PORT_BASE + 10))
STORM_GATEWAY=$((PORT_BASE + 11))
STORM_GATEWAY_ADMIN=$((PORT_BASE + 12))
LOGGED_GATEWAY=$((PORT_BASE + 13))
LOGGED_GATEWAY_ADMIN=$((PORT_BASE + 14))

PIDS=()
REPORT=()

log() { printf '%s\n' "compare: $*" >&2; }
want() { [[ ",$ONLY," == *",$1,"* ]]; }
die() { log "$*"; exit 1; }
row() { REPORT+=("$(printf "$@")"); }

cleanup() {
    local status=$? pid
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    if [ "$status" -eq 0 ]; then
        rm -rf "$WORK"
    else
        log "failed; logs kept in $WORK"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- tools -------------------------------------------------------------------

install_missing() {
    local missing=()
    command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || missing+=(nginx)
    command -v wrk >/dev/null || missing+=(wrk)
    [ ${#missing[@]} -eq 0 ] && return
    command -v apt-get >/dev/null || die "missing ${missing[*]} and no apt-get to install them"
    local sudo=()
    [ "$(id -u)" -eq 0 ] || sudo=(sudo)
    log "installing ${missing[*]} from Debian's packages"
    "${sudo[@]}" apt-get update -qq
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq "${missing[@]}" >/dev/null
    # Debian's package may start a system nginx on :80; this script does not use it.
}

build() {
    if [ "$NO_BUILD" = 1 ] && [ -x "$BIN" ] && [ -x "$CEILING" ]; then
        return
    fi
    log "building release binaries"
    (cd "$ROOT" && cargo build --release --bins --examples --quiet)
}

# Pinning: servers on SERVER_CPU, load generators on LOAD_CPU.
setup_pinning() {
    PIN_SERVER=()
    PIN_LOAD=()
    PINNING="none (fewer than 2 CPUs or taskset refused)"
    if [ "$(nproc)" -ge 2 ] && command -v taskset >/dev/null \
        && taskset -c "$SERVER_CPU" true 2>/dev/null \
        && taskset -c "$LOAD_CPU" true 2>/dev/null; then
        PIN_SERVER=(taskset -c "$SERVER_CPU")
        PIN_LOAD=(taskset -c "$LOAD_CPU")
        PINNING="servers on CPU $SERVER_CPU, load generator on CPU $LOAD_CPU"
    fi
}

# --- processes ---------------------------------------------------------------

port_free() { ! (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null; }

wait_http() {
    local url=$1 tries=100
    until curl -s -o /dev/null --max-time 1 "$url"; do
        tries=$((tries - 1))
        [ $tries -gt 0 ] || die "no answer from $url"
        sleep 0.1
    done
}

# start NAME CMD...: runs CMD in the background, logs to $WORK/NAME.log.
start() {
    local name=$1
    shift
    "$@" >"$WORK/$name.log" 2>&1 &
    PIDS+=($!)
    LAST_PID=$!
}

stop() {
    kill "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
}

start_sim() { # name port limit [sim options...]
    local name=$1 port=$2 limit=$3
    shift 3
    start "$name" "${PIN_LOAD[@]}" "$BIN" sim --listen "$HOST:$port" --limit "$limit" \
        --window-seconds 10 "$@"
    wait_http "http://$HOST:$port/__sim/stats"
}

start_gateway() { # name port admin_port upstream_port [log filter, warn: no access log]
    local filter=${5:-warn}
    start "$1" env OTPGATE__LIMITS__CLIENT_REQUESTS_PER_SECOND=0 \
        OTPGATE__STORE__PATH="$WORK/$1.db" OTPGATE__LOG__FILTER="$filter" RUST_LOG="$filter" \
        "${PIN_SERVER[@]}" "$BIN" serve --listen "$HOST:$2" --admin-listen "$HOST:$3" \
        --upstream "http://$HOST:$4/api"
    wait_http "http://$HOST:$3/healthz"
}

start_nginx() {
    local nginx conf=$WORK/nginx/nginx.conf
    nginx=$(command -v nginx || echo /usr/sbin/nginx)
    mkdir -p "$WORK/nginx"
    sed -e "s|@PREFIX@|$WORK/nginx|g" \
        -e "s|@WORKERS@|$SERVER_CPUS|g" \
        -e "s|@NOFILE@|$(ulimit -Hn)|g" \
        -e "s|@WORKER_CONNECTIONS@|$((IDLE_CONNECTIONS + 1024))|g" \
        -e "s|@PACING_RATE@|$NGINX_PACING_RATE|g" \
        -e "s|@FAST_ORIGIN@|$HOST:$SIM_FAST|g" \
        -e "s|@REAL_ORIGIN@|$HOST:$SIM_REAL|g" \
        -e "s|@CACHE_ADDR@|$HOST:$NGINX_CACHE|g" \
        -e "s|@PACING_ADDR@|$HOST:$NGINX_PACING|g" \
        -e "s|@CACHE_PORT@|$NGINX_CACHE|g" \
        -e "s|@PACING_PORT@|$NGINX_PACING|g" \
        "$ROOT/benches/nginx.conf.template" >"$conf"
    start nginx "${PIN_SERVER[@]}" "$nginx" -p "$WORK/nginx" -c "$conf" -e stderr
    NGINX_PID=$LAST_PID
    wait_http "http://$HOST:$NGINX_CACHE/"
}

# RSS in KiB of a process, or of a process and its children (nginx workers).
rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }
rss_tree_kib() {
    local total pid
    total=$(rss_kib "$1")
    for pid in $(pgrep -P "$1"); do
        total=$((total + $(rss_kib "$pid")))
    done
    echo "$total"
}
mib() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }

sim_stat() { # port field
    curl -s "http://$HOST:$1/__sim/stats" |
        python3 -c "import json,sys; print(json.load(sys.stdin)['$2'])"
}

# --- measurements -------------------------------------------------------------

# wrk_run LABEL URL SCRIPT [script args...]: prints "rps p50_ms p99_ms non2xx errors".
wrk_run() {
    local label=$1 url=$2 script=$3
    shift 3
    local out=$WORK/wrk-$label.txt
    "${PIN_LOAD[@]}" wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" --timeout 5s \
        -H "x-apikey: $KEY" -s "$ROOT/benches/wrk/$script" "$url" -- "$@" \
        >"$out" 2>&1 || die "wrk failed: $(cat "$out")"
    awk '/^RESULT/ { printf "%.0f %.3f %.3f %d %d\n", $4, $5 / 1000, $6 / 1000, $7, $8 }' "$out"
}

expect_hit() { # url header-name
    local header
    header=$(curl -s -D - -o /dev/null -H "x-apikey: $KEY" "$1" | tr -d '\r' |
        grep -i "^$2:" || true)
    case "$header" in
        *HIT*) ;;
        *) die "$1 is not a cache hit ($2: ${header:-absent})" ;;
    esac
}

cache_hits() {
    local body=$WORK/body.json
    log "warming the caches"
    curl -sf -o "$body" -H "x-apikey: $KEY" -H "prefer: wait=30" "http://$HOST:$GATEWAY$ROUTE" ||
        die "otpgate did not fill its cache"
    curl -sf -o /dev/null -H "x-apikey: $KEY" "http://$HOST:$NGINX_CACHE$ROUTE" ||
        die "nginx did not fill its cache"
    curl -sf -o /dev/null -H "x-apikey: $KEY" -H "prefer: wait=30" \
        "http://$HOST:$LOGGED_GATEWAY$ROUTE" || die "otpgate (access log) did not fill its cache"
    start ceiling "${PIN_SERVER[@]}" "$CEILING" "$HOST:$CEILING_PORT" "$body"
    CEILING_PID=$LAST_PID
    wait_http "http://$HOST:$CEILING_PORT/"
    expect_hit "http://$HOST:$GATEWAY$ROUTE" x-cache
    expect_hit "http://$HOST:$NGINX_CACHE$ROUTE" x-cache-status
    expect_hit "http://$HOST:$LOGGED_GATEWAY$ROUTE" x-cache
    BODY_BYTES=$(wc -c <"$body")

    local server url round
    declare -gA SAT PACED
    for round in $(seq "$REPEAT"); do
        for server in ceiling nginx otpgate logged; do
            case $server in
                ceiling) url=http://$HOST:$CEILING_PORT$ROUTE ;;
                nginx) url=http://$HOST:$NGINX_CACHE$ROUTE ;;
                otpgate) url=http://$HOST:$GATEWAY$ROUTE ;;
                logged) url=http://$HOST:$LOGGED_GATEWAY$ROUTE ;;
            esac
            log "cache hits, round $round/$REPEAT: $server at saturation"
            SAT[$server]+="$(wrk_run "sat-$server-$round" "$url" report.lua)"$'\n'
            log "cache hits, round $round/$REPEAT: $server at ~$RATE req/s"
            PACED[$server]+="$(wrk_run "paced-$server-$round" "$url" paced.lua \
                "$RATE" "$CONNECTIONS")"$'\n'
        done
    done
    for server in ceiling nginx otpgate logged; do
        SAT[$server]=$(median_columns "${SAT[$server]}")
        PACED[$server]=$(median_columns "${PACED[$server]}")
    done
}

# median_columns LINES: the median of each column of "rps p50 p99 non2xx errors".
median_columns() {
    printf '%s' "$1" | python3 -c '
import statistics, sys
rows = [line.split() for line in sys.stdin if line.strip()]
rps, p50, p99, non2xx, errors = (statistics.median(float(r[i]) for r in rows) for i in range(5))
print(f"{rps:.0f} {p50:.3f} {p99:.3f} {non2xx:.0f} {errors:.0f}")'
}

# idle_rss NAME PORT PID_KIND PID: RSS with IDLE_CONNECTIONS idle connections.
idle_rss() {
    local name=$1 port=$2 pid=$3 tree=$4 out=$WORK/idle-$1.txt
    : >"$out"
    "${PIN_LOAD[@]}" python3 "$ROOT/benches/idle_conns.py" "$HOST" "$port" \
        "$IDLE_CONNECTIONS" "$ROUTE" 25 "$KEY" >"$out" 2>&1 &
    local client=$!
    PIDS+=("$client")
    local tries=600
    until grep -q '^READY' "$out"; do
        tries=$((tries - 1))
        [ $tries -gt 0 ] && kill -0 "$client" 2>/dev/null || die "idle_conns: $(cat "$out")"
        sleep 0.1
    done
    sleep 1
    local rss established
    if [ "$tree" = tree ]; then rss=$(rss_tree_kib "$pid"); else rss=$(rss_kib "$pid"); fi
    established=$(ss -Htn state established "( sport = :$port )" | wc -l)
    stop "$client"
    echo "$rss $established $(awk '/^READY/ { print $2 }' "$out")"
}

memory() {
    log "memory: idle, then $IDLE_CONNECTIONS idle keep-alive connections"
    MEM_GW_IDLE=$(rss_kib "$GATEWAY_PID")
    MEM_NGINX_IDLE=$(rss_tree_kib "$NGINX_PID")
    MEM_CEILING_IDLE=$(rss_kib "$CEILING_PID")
    MEM_CEILING_CONNS=$(idle_rss ceiling "$CEILING_PORT" "$CEILING_PID" single)
    MEM_GW_CONNS=$(idle_rss otpgate "$GATEWAY" "$GATEWAY_PID" single)
    MEM_NGINX_CONNS=$(idle_rss nginx "$NGINX_CACHE" "$NGINX_PID" tree)
}

# flood NAME PORT: uncached calls for PACING_SECONDS through a gateway whose
# origin allows 5 calls per 10 s; prints "calls elapsed violations blocks answered peak_rss".
flood() {
    local name=$1 port=$2 pid=$3 tree=$4
    local before began ended half=$(((PACING_SECONDS + 1) / 2)) peak=0 rss
    before=$(sim_stat "$SIM_REAL" requests_total)
    began=$(date +%s.%N)
    # Two runs of at most 30 s each, back to back.
    local part answered=0
    for part in 1 2; do
        "${PIN_LOAD[@]}" wrk -t1 -c16 -d"${half}s" --timeout 35s \
            -s "$ROOT/benches/wrk/uncached.lua" "http://$HOST:$port/" \
            >"$WORK/flood-$name-$part.txt" 2>&1 &
        local load=$!
        PIDS+=("$load")
        while kill -0 "$load" 2>/dev/null; do
            if [ "$tree" = tree ]; then rss=$(rss_tree_kib "$pid"); else rss=$(rss_kib "$pid"); fi
            [ "$rss" -gt "$peak" ] && peak=$rss
            sleep 1
        done
        wait "$load" || true
        answered=$((answered + $(awk '/^RESULT/ { print $2 }' "$WORK/flood-$name-$part.txt")))
    done
    ended=$(date +%s.%N)
    local calls
    calls=$(($(sim_stat "$SIM_REAL" requests_total) - before))
    echo "$calls $(awk -v a="$began" -v b="$ended" 'BEGIN { printf "%.2f", b - a }')" \
        "$(sim_stat "$SIM_REAL" window_violations) $(sim_stat "$SIM_REAL" blocks_total)" \
        "$answered $peak"
}

pacing() {
    log "pacing: otpgate under a flood of uncached calls for ${PACING_SECONDS}s"
    start_sim sim-real "$SIM_REAL" 5
    local origin=$LAST_PID
    start_gateway otpgate-paced "$PACED_GATEWAY" "$PACED_GATEWAY_ADMIN" "$SIM_REAL"
    local gateway=$LAST_PID
    PACE_GW=$(flood otpgate "$PACED_GATEWAY" "$gateway" single)
    stop "$gateway"
    stop "$origin"

    log "pacing: nginx limit_req $NGINX_PACING_RATE under the same flood"
    # A fresh origin, so that its windows and counters start again.
    start_sim sim-real-nginx "$SIM_REAL" 5
    origin=$LAST_PID
    PACE_NGINX=$(flood nginx "$NGINX_PACING" "$NGINX_PID" tree)
    stop "$origin"
}

# The poll storm against its own simulator (real limit, a balance for the
# orders, no SMS until the script delivers them) and gateway.
poll_storm() {
    log "poll storm: $STORM_CLIENTS clients, $STORM_ORDERS orders, every ${STORM_PERIOD}s, ${STORM_SECONDS}s"
    start_sim sim-storm "$STORM_SIM" 5 --account "$KEY=1000000000" --sms-delay-seconds 1000000
    local origin=$LAST_PID
    start_gateway otpgate-storm "$STORM_GATEWAY" "$STORM_GATEWAY_ADMIN" "$STORM_SIM"
    local gateway=$LAST_PID
    "${PIN_LOAD[@]}" python3 "$ROOT/benches/poll_storm.py" "$STORM_GATEWAY" "$STORM_SIM" \
        "$gateway" "$KEY" "$STORM_ORDERS" "$STORM_CLIENTS" "$STORM_PERIOD" "$STORM_SECONDS" \
        "$PACING_PERIOD" >"$WORK/storm.json" 2>"$WORK/storm.err" ||
        die "poll storm failed: $(cat "$WORK/storm.err")"
    STORM=$(cat "$WORK/storm.json")
    stop "$gateway"
    stop "$origin"
}

storm() { echo "$STORM" | python3 -c "import json, sys; print(json.load(sys.stdin)['$1'])"; }

# --- the table ----------------------------------------------------------------

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }
field() { echo "$1" | awk -v n="$2" '{ print $n }'; }

report() {
    local cpu kernel
    cpu=$(lscpu 2>/dev/null | awk -F: '/Model name/ { gsub(/^ +/, "", $2); print $2; exit }')
    kernel=$(uname -r)
    row "otpgate compare, %s" "$(date -u '+%Y-%m-%d %H:%M UTC')"
    row "machine: %s, %s CPUs, kernel %s; %s, %s" "${cpu:-unknown CPU}" "$(nproc)" "$kernel" \
        "$(nginx -v 2>&1 | sed 's/.*version: //')" \
        "$(wrk -v 2>&1 | head -1 | awk '{ print $1, $2 }')"
    row "pinning: %s" "$PINNING"
    want hits && report_hits
    want memory && report_memory
    want pacing && report_pacing
    want storm && report_storm
    return 0
}

report_hits() {
    row "route: GET %s with x-apikey, %s-byte JSON body; wrk -t1 -c%s -d%ss, median of %s" \
        "$ROUTE" "$BODY_BYTES" "$CONNECTIONS" "$DURATION" "$REPEAT"
    row ""
    row "%-34s %10s %9s %9s %8s" "cache hits" "req/s" "p50 ms" "p99 ms" "errors"
    local server kind values
    for kind in saturation paced; do
        for server in ceiling nginx otpgate logged; do
            if [ $kind = saturation ]; then values=${SAT[$server]}; else values=${PACED[$server]}; fi
            local name=$server
            [ $server = logged ] && name="otpgate+access log"
            local label="$name, saturation"
            [ $kind = paced ] && label="$name, ~$RATE req/s"
            row "  %-32s %10s %9s %9s %8s" "$label" "$(field "$values" 1)" \
                "$(field "$values" 2)" "$(field "$values" 3)" \
                "$(($(field "$values" 4) + $(field "$values" 5)))"
        done
    done
    row ""
    row "ratios                             value   goal"
    row "  throughput otpgate / nginx       %5s   >= 1.00" \
        "$(ratio "$(field "${SAT[otpgate]}" 1)" "$(field "${SAT[nginx]}" 1)")"
    row "  throughput otpgate / ceiling     %5s   >= 0.70" \
        "$(ratio "$(field "${SAT[otpgate]}" 1)" "$(field "${SAT[ceiling]}" 1)")"
    row "  nginx / ceiling (for reference)  %5s" \
        "$(ratio "$(field "${SAT[nginx]}" 1)" "$(field "${SAT[ceiling]}" 1)")"
    row "  p99 at ~%s req/s otpgate / nginx %4s  <= 1.00" "$RATE" \
        "$(ratio "$(field "${PACED[otpgate]}" 3)" "$(field "${PACED[nginx]}" 3)")"
    row "  p99 at saturation otpgate / nginx %4s" \
        "$(ratio "$(field "${SAT[otpgate]}" 3)" "$(field "${SAT[nginx]}" 3)")"
    row "  throughput, access log on / off  %5s   (nginx's is off)" \
        "$(ratio "$(field "${SAT[logged]}" 1)" "$(field "${SAT[otpgate]}" 1)")"
}

report_memory() {
    row ""
    row "memory (VmRSS, MiB)                 idle   %6s idle conns (open)   goal" "$IDLE_CONNECTIONS"
    row "  otpgate                         %6s   %6s (%s)             < 30 / < 150" \
        "$(mib "$MEM_GW_IDLE")" "$(mib "$(field "$MEM_GW_CONNS" 1)")" "$(field "$MEM_GW_CONNS" 2)"
    row "  bare hyper ceiling              %6s   %6s (%s)" \
        "$(mib "$MEM_CEILING_IDLE")" "$(mib "$(field "$MEM_CEILING_CONNS" 1)")" \
        "$(field "$MEM_CEILING_CONNS" 2)"
    row "  nginx, master + all processes   %6s   %6s (%s)" \
        "$(mib "$MEM_NGINX_IDLE")" "$(mib "$(field "$MEM_NGINX_CONNS" 1)")" \
        "$(field "$MEM_NGINX_CONNS" 2)"
}

report_pacing() {
    row ""
    row "pacing, flood of uncached calls, origin at 5 calls / 10 s, safe period %s s" "$PACING_PERIOD"
    row "%-26s %6s %9s %11s %11s %7s %9s" "" "calls" "elapsed" "efficiency" "violations" \
        "blocks" "peak RSS"
    local who values calls elapsed
    for who in otpgate nginx; do
        if [ $who = otpgate ]; then values=$PACE_GW; else values=$PACE_NGINX; fi
        calls=$(field "$values" 1)
        elapsed=$(field "$values" 2)
        local label="otpgate (2.6 s period)"
        [ $who = nginx ] && label="nginx limit_req $NGINX_PACING_RATE"
        row "  %-24s %6s %8ss %11s %11s %7s %8s" "$label" "$calls" "$elapsed" \
            "$(awk -v c="$calls" -v e="$elapsed" -v p="$PACING_PERIOD" \
                'BEGIN { printf "%.3f", c / (e / p) }')" \
            "$(field "$values" 3)" "$(field "$values" 4)" "$(mib "$(field "$values" 6)")"
    done
    row "  efficiency = upstream calls / (elapsed / %s s), goal >= 0.98 with 0 violations" \
        "$PACING_PERIOD"
}

report_storm() {
    row ""
    row "poll storm: %s clients polling %s orders every %s s through otpgate, origin at 5 / 10 s" \
        "$STORM_CLIENTS" "$STORM_ORDERS" "$STORM_PERIOD"
    row "  warm-up (until every order answered once)  %6s s  %s polls, %s refused, %s upstream calls" \
        "$(storm warmup_s)" "$(storm warmup_answers)" "$(storm warmup_errors)" \
        "$(storm warmup_upstream_calls)"
    row "  measured after it                          %6s s  %s polls (%s/s), by status %s" \
        "$(storm steady_s)" "$(storm steady_answers)" "$(storm steady_rps)" \
        "$(storm steady_by_status)"
    row "  answers by x-cache                         %s" "$(storm steady_by_cache)"
    row "  upstream calls/s                           %6s   budget %s, %s violations, %s blocks" \
        "$(storm upstream_calls_per_s)" "$(storm budget_calls_per_s)" \
        "$(storm window_violations)" "$(storm blocks)"
    row "  status age seen, s: median %s, p90 %s, max %s   goal: median <= %s (orders x period / 1 egress)" \
        "$(storm age_median_s)" "$(storm age_p90_s)" "$(storm age_max_s)" "$(storm age_goal_s)"
    row "  OTP delivered -> first seen by a poller, s: median %s, max %s (%s of %s seen)" \
        "$(storm otp_delay_median_s)" "$(storm otp_delay_max_s)" "$(storm otp_seen)" \
        "$(storm otp_delivered)"
    row "  gateway CPU %s %% of one core, RSS %s MiB after the storm" \
        "$(storm gateway_cpu_percent)" "$(storm gateway_rss_mib)"
}

# --- main -----------------------------------------------------------------------

main() {
    install_missing
    build
    setup_pinning
    SERVER_CPUS=1
    [ ${#PIN_SERVER[@]} -eq 0 ] && SERVER_CPUS=$(nproc)
    local port
    for port in $SIM_FAST $SIM_REAL $GATEWAY $GATEWAY_ADMIN $PACED_GATEWAY \
        $PACED_GATEWAY_ADMIN $NGINX_CACHE $NGINX_PACING $CEILING_PORT $STORM_SIM \
        $STORM_GATEWAY $STORM_GATEWAY_ADMIN $LOGGED_GATEWAY $LOGGED_GATEWAY_ADMIN; do
        port_free "$port" || die "port $port is in use; set PORT_BASE"
    done

    if want hits || want memory || want pacing; then
        start_sim sim-fast "$SIM_FAST" 100000
        start_gateway otpgate "$GATEWAY" "$GATEWAY_ADMIN" "$SIM_FAST"
        GATEWAY_PID=$LAST_PID
        start_nginx
    fi
    if want hits; then
        # The same gateway with its default log filter: one access log line
        # per request, to a file.
        start_gateway otpgate-logged "$LOGGED_GATEWAY" "$LOGGED_GATEWAY_ADMIN" "$SIM_FAST" info
    fi
    if want hits || want memory; then cache_hits; fi
    if want memory; then memory; fi
    if want pacing; then pacing; fi
    if want storm; then poll_storm; fi

    report
    mkdir -p "$OUT_DIR"
    printf '%s\n' "${REPORT[@]}" | tee "$OUT"
    log "written to ${OUT#"$ROOT"/}"
}

main "$@"
