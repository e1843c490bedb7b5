#!/usr/bin/env bash
# 1 GiB through ktctl's two directions, side by side in one ktlab lab (run as root, after `make build`):
#   exchange  a pod → an exchanged Service → the shadow → SSH over the port-forward → ktctl → 127.0.0.1 on the laptop
#   connect   the laptop → ktctl connect's TUN → KtStack → SSH over the port-forward → the shadow → a pod
# Each transfer is byte-exact (each MiB numbered, SHA-256 at both ends). Prints seconds, MB/s, and CPU seconds per
# GB of ktctl, kt-shadow and the lab's server (its port-forward relay). `RUNS=3 bench/lab-transfer.sh`.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bin=${KT_BIN:-$root/.build/debug}
runs=${RUNS:-3}
size=$((1 << 30))
lab="ktb$$"
export PATH="$bin:$PATH" KUBECONFIG="/run/ktlab/$lab/kubeconfig" HOME="/run/ktlab/$lab/home-bench"
[ "$(id -u)" = 0 ] || { echo "lab-transfer: run as root (ktlab makes network namespaces)" >&2; exit 1; }
kubectl=${KUBECTL:-$root/.build/tools/kubectl}
for program in ktlab ktctl kt-shadow; do
    command -v "$program" >/dev/null || { echo "lab-transfer: $program is not built in $bin" >&2; exit 1; }
done

pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do
        for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
    done
    ktlab down --name "$lab" >/dev/null 2>&1 || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM

sink='
import hashlib, socket, sys
server = socket.create_server((sys.argv[1], int(sys.argv[2])), reuse_port=True)
while True:
    connection, _ = server.accept()
    digest, count = hashlib.sha256(), 0
    while True:
        chunk = connection.recv(1 << 20)
        if not chunk:
            break
        digest.update(chunk)
        count += len(chunk)
    connection.sendall(("%d %s\n" % (count, digest.hexdigest())).encode())
    connection.close()
'
source='
import hashlib, random, socket, sys, time
total = int(sys.argv[3])
block = random.Random(7).randbytes(1 << 20)
digest = hashlib.sha256()
start = time.time()
connection = socket.create_connection((sys.argv[1], int(sys.argv[2])))
sent = 0
while sent < total:
    piece = ((sent >> 20).to_bytes(8, "big") + block[8:])[: min(len(block), total - sent)]
    connection.sendall(piece)
    digest.update(piece)
    sent += len(piece)
connection.shutdown(socket.SHUT_WR)
answer = b""
while not answer.endswith(b"\n"):
    chunk = connection.recv(256)
    if not chunk:
        break
    answer += chunk
seconds = time.time() - start
if answer.decode().strip() == "%d %s" % (total, digest.hexdigest()):
    print("%.3f" % seconds)
else:
    print("differs")
'

ktlab up --name "$lab" >/dev/null
mkdir -p "$HOME"
ws() { ip netns exec "$lab-ws" "$@"; }
# CPU seconds (user + system) of every process whose command line matches $1.
cpu() {
    local total=0 pid ticks
    for pid in $(pgrep -f "$1" || true); do
        ticks=$(awk '{print $14 + $15}' "/proc/$pid/stat" 2>/dev/null || echo 0)
        total=$((total + ticks))
    done
    echo "$total"
}
hz=$(getconf CLK_TCK)

"$kubectl" run client --image=python:3 --command -- sleep infinity >/dev/null
"$kubectl" run sinkpod --image=python:3 --command -- python3 -c "$sink" 0.0.0.0 7000 >/dev/null
"$kubectl" create service clusterip sink --tcp=7000:7000 >/dev/null
"$kubectl" wait --for=condition=Ready pod/client pod/sinkpod --timeout=60s >/dev/null
sinkIP=$("$kubectl" get pod sinkpod -o jsonpath='{.status.podIP}')

# `ip netns exec` execs the program: $! is its pid (a shell function in between would not pass ^C on).
ip netns exec "$lab-ws" python3 -c "$sink" 0.0.0.0 7000 >/dev/null 2>&1 &
pids+=($!)
for _ in $(seq 1 100); do [ -n "$(ws ss -Htln 'sport = :7000')" ] && break; sleep 0.05; done

state="/run/ktlab/$lab/kt"
ip netns exec "$lab-ws" ktctl exchange sink --expose 7000 -n default --image kt-shadow:dev --state-dir "$state-ex" \
    --kubeconfig "/run/ktlab/$lab/kubeconfig-ws" >"/run/ktlab/$lab/exchange.log" 2>&1 &
exchange=$!
pids+=("$exchange")
ip netns exec "$lab-ws" ktctl connect -n default --image kt-shadow:dev --state-dir "$state-co" \
    --kubeconfig "/run/ktlab/$lab/kubeconfig-ws" >"/run/ktlab/$lab/connect.log" 2>&1 &
connect=$!
pids+=("$connect")
for _ in $(seq 1 600); do
    grep -q "ktctl: exchanging service sink" "/run/ktlab/$lab/exchange.log" \
        && grep -q "ktctl: connected" "/run/ktlab/$lab/connect.log" && break
    sleep 0.1
done
grep -q "ktctl: connected" "/run/ktlab/$lab/connect.log" || { cat "/run/ktlab/$lab/connect.log" >&2; exit 1; }
grep -q "ktctl: exchanging" "/run/ktlab/$lab/exchange.log" || { cat "/run/ktlab/$lab/exchange.log" >&2; exit 1; }

# One transfer: prints "seconds ktctl-cpu shadow-cpu server-cpu" (CPU in ticks).
measure() {
    local direction=$1 pid=$2 before_k before_s before_l seconds
    before_k=$(awk '{print $14 + $15}' "/proc/$pid/stat")
    before_s=$(cpu "kt-shadow --listen")
    before_l=$(cpu "ktlab serve --name $lab")
    case $direction in
        exchange) seconds=$("$kubectl" exec client -- python3 -c "$source" sink 7000 "$size") ;;
        connect) seconds=$(ws python3 -c "$source" "$sinkIP" 7000 "$size") ;;
    esac
    echo "$seconds $(($(awk '{print $14 + $15}' "/proc/$pid/stat") - before_k)) \
$(($(cpu "kt-shadow --listen") - before_s)) $(($(cpu "ktlab serve --name $lab") - before_l))"
}

echo "lab-transfer — $(nproc) cores, $(uname -r), 1 GiB per transfer, $runs runs"
echo
echo "| run | path | seconds | MB/s | ktctl CPU s/GB | kt-shadow CPU s/GB | lab server CPU s/GB |"
echo "|---|---|---|---|---|---|---|"
for run in $(seq 1 "$runs"); do
    for direction in exchange connect; do
        pid=$([ "$direction" = connect ] && echo "$connect" || echo "$exchange")
        read -r seconds k s l < <(measure "$direction" "$pid")
        if [ "$seconds" = differs ]; then
            echo "| $run | $direction | $seconds | | | | |"
            continue
        fi
        awk -v r="$run" -v d="$direction" -v t="$seconds" -v k="$k" -v s="$s" -v l="$l" -v hz="$hz" -v b="$size" \
            'BEGIN { gb = b / 1e9; printf "| %s | %s | %.2f | %.0f | %.2f | %.2f | %.2f |\n", r, d, t, b / t / 1e6,
                k / hz / gb, s / hz / gb, l / hz / gb }'
    done
done
