#!/usr/bin/env bash
# Heap allocations per packet on KtStack's hot path: two runs of an in-memory transfer under valgrind, and the
# difference in allocations over the difference in packets (start-up allocations cancel out).
set -euo pipefail
cd "$(dirname "$0")"
# valgrind 3.19 cannot read the DWARF 5 that this toolchain emits: run a stripped copy.
binary=$(mktemp)
trap 'rm -f "$binary"' EXIT
strip -o "$binary" .build/release/kt-bench
run() {
    local output
    output=$(valgrind --tool=memcheck --leak-check=no "$binary" allocations "$1" 2>&1)
    local packets allocs
    packets=$(grep -oE 'packets [0-9]+' <<<"$output" | awk '{print $2}')
    allocs=$(grep -oE 'total heap usage: [0-9,]+ allocs' <<<"$output" | grep -oE '[0-9,]+' | head -1 | tr -d ,)
    echo "$packets $allocs"
}
read -r p1 a1 < <(run 2000)
read -r p2 a2 < <(run 6000)
awk -v p1="$p1" -v a1="$a1" -v p2="$p2" -v a2="$a2" 'BEGIN {
    printf "in-memory stack pair: %d packets -> %d allocations, %d packets -> %d allocations\n", p1, a1, p2, a2
    printf "allocations per packet on the hot path: %.2f\n", (a2 - a1) / (p2 - p1)
}'
