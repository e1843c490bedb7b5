#!/usr/bin/env bash
# kt-router's overhead, side by side in one run (run as root, after `swift build -c release --product kt-router`, as its
# image builds it, and `cd bench && swift build -c release`; KT_BIN=.build/debug measures the test build instead):
#   direct   wrk / h2load → the upstream
#   routed   wrk / h2load → kt-router → the upstream (unrouted: the default upstream; routed: a header's route)
# HTTP/1.1 with wrk (keep-alive, 16 connections, 10 s) against kt-bench's http-upstream (a NIO server answering
# `ok`); HTTP/2 with h2load (16 connections × 10 streams, 200,000 requests) against nghttpd. All in a network
# namespace of its own, on its loopback. Prints requests/s, p50/p99 latency, the ratio to direct, and kt-router's CPU
# seconds per 100,000 requests. `RUNS=3 bench/router.sh`.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bin=${KT_BIN:-$root/.build/release}
bench=${KT_BENCH:-$root/bench/.build/release/kt-bench}
runs=${RUNS:-3}
ns="ktrb$$"
[ "$(id -u)" = 0 ] || { echo "router bench: run as root (it makes a network namespace)" >&2; exit 1; }
for program in "$bin/kt-router" "$bench" "$(command -v wrk)" "$(command -v h2load)" "$(command -v nghttpd)"; do
    [ -x "$program" ] || {
        echo "router bench: $program is missing (swift build -c release --product kt-router;" \
            "cd bench && swift build -c release; make deps)" >&2
        exit 1
    }
done
work=$(mktemp -d)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do
        for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
    done
    ip netns del "$ns" 2>/dev/null || true
    rm -f "$work"/* && rmdir "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
ip netns add "$ns"
ip -n "$ns" link set lo up
run() { ip netns exec "$ns" "$@"; }
start() { ip netns exec "$ns" "$@" > "$work/log-${#pids[@]}" 2>&1 & pids+=($!); }

echo ok > "$work/index.html"
start "$bench" http-upstream 127.0.0.1 9101
start "$bench" http-upstream 127.0.0.3 9201
start nghttpd --no-tls -a 127.0.0.1 -d "$work" 9102
start nghttpd --no-tls -a 127.0.0.3 -d "$work" 9202
start "$bin/kt-router" --port 9201:9101,9202:9102 --default upstream=127.0.0.1 --route 'VERSION:bench=127.0.0.3' \
    --bind 127.0.0.2 --health-port 9299 ${ROUTER_FLAGS:-}
router=${pids[-1]}
for _ in $(seq 1 50); do run curl -sf http://127.0.0.2:9299/healthz >/dev/null 2>&1 && break; sleep 0.1; done
sleep 0.5

cpu() { awk '{ print $14 + $15 }' "/proc/$router/stat"; }
ticks=$(getconf CLK_TCK)
wrk_run() {  # url [header] → "rps p50ms p99ms requests"
    local out
    out=$(run wrk -t1 -c16 -d10s --latency ${2:+-H "$2"} "$1")
    awk '
        /Requests\/sec/ { rps = $2 }
        /^ +50%/ { p50 = $2 } /^ +99%/ { p99 = $2 }
        /requests in/ { n = $1 }
        function ms(t) { if (t ~ /us$/) return t / 1000; if (t ~ /ms$/) return t + 0; if (t ~ /s$/) return t * 1000; return t }
        END { printf "%.0f %.3f %.3f %d\n", rps, ms(p50), ms(p99), n }' <<< "$out"
}
h2_run() {  # url [header] → "rps p50ms p99ms requests"
    local log="$work/h2load.log" out
    rm -f "$log"
    out=$(run h2load -n 200000 -c 16 -m 10 --log-file="$log" ${2:+-H "$2"} "$1")
    local rps
    rps=$(awk '/^finished in/ { gsub(",", "", $4); print $4 }' <<< "$out")
    # The log: start time, status, request time in µs, per request.
    sort -n -k3 "$log" | awk -v rps="$rps" '{ t[NR] = $3 } END {
        printf "%.0f %.3f %.3f %d\n", rps, t[int(NR * 0.5)] / 1000, t[int(NR * 0.99)] / 1000, NR }'
}

echo "kt-router: $bin/kt-router"
printf '| run | protocol | path | requests/s | ratio | p50 ms | p99 ms | +p50 ms | kt-router CPU s / 100k requests |\n'
printf '|---|---|---|---|---|---|---|---|---|\n'
for run_number in $(seq 1 "$runs"); do
    for protocol in http1 h2; do
        if [ "$protocol" = http1 ]; then tool=wrk_run; direct=http://127.0.0.1:9101/; via=http://127.0.0.2:9201/
        else tool=h2_run; direct=http://127.0.0.1:9102/; via=http://127.0.0.2:9202/; fi
        read -r d_rps d_p50 d_p99 _ < <($tool "$direct")
        printf '| %s | %s | direct | %s | 1.00 | %s | %s | | |\n' "$run_number" "$protocol" "$d_rps" "$d_p50" "$d_p99"
        for path in unrouted routed; do
            header=""; [ "$path" = routed ] && header="VERSION: bench"
            before=$(cpu)
            read -r rps p50 p99 n < <($tool "$via" "$header")
            after=$(cpu)
            awk -v r="$run_number" -v p="$protocol" -v path="$path" -v rps="$rps" -v d="$d_rps" -v p50="$p50" \
                -v p99="$p99" -v dp50="$d_p50" -v c=$((after - before)) -v t="$ticks" -v n="$n" 'BEGIN {
                printf "| %s | %s | %s | %s | %.2f | %s | %s | %+.3f | %.2f |\n", r, p, path, rps, rps / d, p50, p99,
                    p50 - dp50, c / t / n * 100000 }'
        done
    done
done
