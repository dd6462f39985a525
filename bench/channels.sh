#!/usr/bin/env bash
# Many channels on one node: for each channel count N, on a fresh dev network,
#   1. creates N channels (korder bench --create-only) and reports the seconds,
#   2. restarts the node and reports its start-up time (the node's own startup_ms,
#      launch → "korder is listening" and launch → /healthz 200 as this script
#      sees them), its threads
#      (/proc/PID/task) and its idle RSS (/proc/PID/status VmRSS),
#   3. runs `korder bench --channels N` and reports throughput and latency.
# One markdown table row per N on stdout; progress on stderr.
#
#   bench/channels.sh [--n "1 10 100 1000"] [--tx 20000] [--clients 4] [--size 1024]
#                     [--rate R --seconds S] [--in-flight 256] [--idle-s 3]
#                     [--kafka BROKERS] [--init-arg ARG]... [--korder PATH] [--keep]
#
#   --rate R --seconds S   open loop: R tx/s for S seconds (R*S envelopes) instead of
#                          a closed-loop run of --tx envelopes
#   --kafka BROKERS        channels on Kafka (`korder init --kafka`; start brokers
#                          with scripts/kafka start); every channel name, the system
#                          channel's included, gets a per-run tag so that topics of
#                          an earlier run are not reused
#   --init-arg ARG         passed to `korder init` (e.g. --init-arg --batch-timeout
#                          --init-arg 200ms)
#   --keep                 keep each data directory (the path is printed)
#
# Uses target/release/korder (build it with `cargo build --release -p korder`)
# unless --korder or $KORDER says otherwise. Needs python3 (free ports, JSON) and curl.
set -euo pipefail

KORDER="${KORDER:-target/release/korder}"
NS="1 10 100 1000"
TX=20000
CLIENTS=4
SIZE=1024
RATE=""
SECONDS_RUN=10
IN_FLIGHT=256
IDLE_S=3
KAFKA=""
KEEP=0
INIT_ARGS=()
START_TIMEOUT_S=300

while [[ $# -gt 0 ]]; do
    case "$1" in
        --n) NS="$2"; shift 2 ;;
        --tx) TX="$2"; shift 2 ;;
        --clients) CLIENTS="$2"; shift 2 ;;
        --size) SIZE="$2"; shift 2 ;;
        --rate) RATE="$2"; shift 2 ;;
        --seconds) SECONDS_RUN="$2"; shift 2 ;;
        --in-flight) IN_FLIGHT="$2"; shift 2 ;;
        --idle-s) IDLE_S="$2"; shift 2 ;;
        --kafka) KAFKA="$2"; shift 2 ;;
        --init-arg) INIT_ARGS+=("$2"); shift 2 ;;
        --korder) KORDER="$2"; shift 2 ;;
        --keep) KEEP=1; shift ;;
        -h|--help) sed -n '2,25p' "$0"; exit 0 ;;
        *) echo "unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done
[[ -x "$KORDER" ]] || { echo "no korder binary at $KORDER (cargo build --release -p korder)" >&2; exit 2; }
KORDER="$(cd "$(dirname "$KORDER")" && pwd)/$(basename "$KORDER")"

log() { echo "[channels.sh] $*" >&2; }

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# A field of a JSON file, or "-".
field() {
    python3 - "$1" "$2" <<'EOF'
import json, sys
try:
    v = json.load(open(sys.argv[1])).get(sys.argv[2])
except Exception:
    v = None
print("-" if v is None else v)
EOF
}

NODE_PID=""
DIR=""
cleanup() {
    if [[ -n "$NODE_PID" ]] && kill -0 "$NODE_PID" 2>/dev/null; then
        kill "$NODE_PID" 2>/dev/null || true
        wait "$NODE_PID" 2>/dev/null || true
    fi
    if [[ -n "$DIR" && "$KEEP" -eq 0 ]]; then rm -rf "$DIR"; fi
}
trap cleanup EXIT

# Starts the node of $DIR in the background (log appended to $DIR/node.log) and
# waits for its "korder is listening" line, then for /healthz to answer 200; sets
# NODE_PID, LAUNCH_MS (launch → that line) and READY_MS (launch → healthy), as seen
# from here.
start_node() {
    local lines before now
    before=$(grep -c "korder is listening" "$DIR/node.log" 2>/dev/null || true)
    before=${before:-0}
    local t0; t0=$(date +%s%N)
    KORDER_LOG=info "$KORDER" start --data-dir "$DIR" >/dev/null 2>>"$DIR/node.log" &
    NODE_PID=$!
    local deadline=$(( $(date +%s) + START_TIMEOUT_S ))
    while :; do
        lines=$(grep -c "korder is listening" "$DIR/node.log" 2>/dev/null || true)
        if [[ "${lines:-0}" -gt "$before" ]]; then break; fi
        if ! kill -0 "$NODE_PID" 2>/dev/null; then
            echo "korder start exited; log:" >&2; tail -n 30 "$DIR/node.log" >&2; exit 1
        fi
        if [[ $(date +%s) -ge $deadline ]]; then
            echo "the node did not listen within ${START_TIMEOUT_S}s" >&2; exit 1
        fi
        sleep 0.02
    done
    now=$(date +%s%N)
    LAUNCH_MS=$(( (now - t0) / 1000000 ))
    # Every chain runs (on Kafka the consumers start after the node listens).
    while [[ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$OPS_PORT/healthz" || true)" != 200 ]]; do
        if [[ $(date +%s) -ge $deadline ]]; then
            echo "/healthz did not answer 200 within ${START_TIMEOUT_S}s" >&2; exit 1
        fi
        sleep 0.02
    done
    now=$(date +%s%N)
    READY_MS=$(( (now - t0) / 1000000 ))
}

stop_node() {
    kill "$NODE_PID"
    wait "$NODE_PID" || { echo "korder exited non-zero on SIGTERM" >&2; exit 1; }
    NODE_PID=""
}


echo "| channels | create s | start-up ms (node / launch→listening / launch→healthy) | threads | idle RSS MiB | tx/s | latency p50 / p90 / p99 / max ms | delivered per channel min / max | node CPU µs/tx |"
echo "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
for N in $NS; do
    DIR=$(mktemp -d "${TMPDIR:-/tmp}/korder-channels-$N.XXXXXX")
    # On Kafka the topics outlive the node: every channel of this run, the system
    # channel included, gets a name of its own.
    TAG=""
    if [[ -n "$KAFKA" ]]; then TAG="r$(date +%s)n$N-"; fi
    PREFIX="${TAG}bench"
    port=$(free_port)
    OPS_PORT=$(free_port)
    init=(init --data-dir "$DIR" --port "$port" --ops-port "$OPS_PORT" --force)
    if [[ -n "$KAFKA" ]]; then
        init+=(--kafka "$KAFKA" --system-channel "${TAG}system" --channel "${TAG}app")
    fi
    "$KORDER" "${init[@]}" "${INIT_ARGS[@]}" >/dev/null 2>>"$DIR/init.log"
    log "N=$N: data dir $DIR, port $port"
    start_node

    log "N=$N: creating $N channels"
    "$KORDER" bench --data-dir "$DIR" --channels "$N" --channel-prefix "$PREFIX" \
        --create-only --json --timeout-s 3600 >"$DIR/create.json"
    create_s=$(field "$DIR/create.json" channel_create_s)

    log "N=$N: restarting"
    stop_node
    start_node
    startup_ms=$(grep "korder is listening" "$DIR/node.log" | tail -n 1 \
        | grep -o 'startup_ms[^0-9]*[0-9]*' | grep -o '[0-9]*$' || echo "-")
    sleep "$IDLE_S"
    threads=$(ls "/proc/$NODE_PID/task" | wc -l)
    rss_kb=$(awk '/^VmRSS:/ {print $2}' "/proc/$NODE_PID/status")
    rss_mib=$(python3 -c "print(f'{$rss_kb/1024:.1f}')")

    if [[ -n "$RATE" ]]; then
        tx=$(python3 -c "print(max(1, round($RATE * $SECONDS_RUN)))")
        mode=(--rate "$RATE" --tx "$tx")
    else
        mode=(--tx "$TX")
    fi
    log "N=$N: bench ${mode[*]}"
    "$KORDER" bench --data-dir "$DIR" --channels "$N" --channel-prefix "$PREFIX" \
        "${mode[@]}" --clients "$CLIENTS" --size "$SIZE" --in-flight "$IN_FLIGHT" \
        --node-pid "$NODE_PID" --timeout-s 600 --json >"$DIR/bench.json" \
        || log "N=$N: the bench reported problems (see $DIR/bench.json)"
    stop_node

    b() { field "$DIR/bench.json" "$1"; }
    echo "| $N | $create_s | $startup_ms / $LAUNCH_MS / $READY_MS | $threads | $rss_mib | $(b tx_per_s) | $(b latency_ms_p50) / $(b latency_ms_p90) / $(b latency_ms_p99) / $(b latency_ms_max) | $(b channel_delivered_min) / $(b channel_delivered_max) | $(b node_cpu_us_per_tx) |"
    if [[ "$KEEP" -eq 0 ]]; then rm -rf "$DIR"; else log "kept $DIR"; fi
    DIR=""
done
