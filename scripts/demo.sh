#!/usr/bin/env bash
# The seed quick start, end to end, against ktlab (the embedded one-machine cluster): tomcat deployed with kubectl
# exactly as the seed does; `ktctl connect` in the lab's workstation network namespace and the five curls; then, with
# a local version of the service on the workstation (`kt-connect local v2`), `ktctl exchange`, `ktctl mesh` (without
# and with the header), `ktctl preview tomcat-v2` and `ktctl forward tomcat-v2 6060:8080`, with `ktctl status` and
# `ktctl birdseye` along the way; then everything torn down and a summary. It exits 0 only if every step printed the
# expected page and the machine is as it was (network namespaces, links, nftables, resolv.conf, processes). A failure
# stops it with the step, the error, and what was cleaned up. Everything it makes is removed on the way out.
#
# Usage: scripts/demo.sh [--quiet]   (the build must be done: `make demo` does it)
set -uo pipefail

quiet=0
[ "${1:-}" = "--quiet" ] && quiet=1
root="$(cd "$(dirname "$0")/.." && pwd)"
export PATH="$root/.build/debug:$root/.build/tools:$PATH"
lab="ktdemo$$"
lab="${lab:0:12}"
state="/run/ktlab/$lab/kt"
logs="$(mktemp -d /tmp/ktdemo.XXXXXX)"
V1="kt-connect demo v1"
V2="kt-connect local v2"

declare -A session_pid=()   # ktctl sessions running in the background, by name
declare -a session_order=()
declare -a summary=()
current="starting"
lab_up=0
local_server=""

# Bold headings and commands on a terminal; plain text into a file or a pipe.
if [ -t 1 ]; then BOLD=$'\033[1m' BLUE=$'\033[1;34m' GREEN=$'\033[32m' PLAIN=$'\033[0m'; else BOLD="" BLUE="" GREEN="" PLAIN=""; fi
say() { [ $quiet = 1 ] || printf '%s\n' "$*"; }
heading() {
    current="$1"
    [ $quiet = 1 ] || printf '\n%s== %s%s\n' "$BLUE" "$1" "$PLAIN"
}
show() { [ $quiet = 1 ] || printf '%s$ %s%s\n' "$BOLD" "$*" "$PLAIN"; }
# The arguments as a shell would need them typed: those with spaces or shell characters in single quotes.
typed() {
    local out="" arg
    for arg in "$@"; do
        if [[ "$arg" =~ [[:space:]\;\&\|\<\>\$\"\*\?] ]]; then out+=" '$arg'"; else out+=" $arg"; fi
    done
    printf '%s' "${out# }"
}
indent() { [ $quiet = 1 ] || sed 's/^/    /'; }
fail() {
    echo "demo: FAILED at step '$current': $*" >&2
    exit 1
}
# Runs a command as the user would type it (shown with its output unless --quiet); a failure stops the demo.
run() {
    show "$(typed "$@")"
    local out
    if ! out=$("$@" 2>&1); then
        printf '%s\n' "$out" >&2
        fail "\`$*\` failed"
    fi
    [ -z "$out" ] || printf '%s\n' "$out" | indent
}
ws() { ktlab ws --name "$lab" -- "$@"; }

# What this machine looks like from the root namespace, to compare after the demo.
snapshot() {
    echo "## ip netns list"
    ip netns list 2>/dev/null | sort
    echo "## ip link"
    ip -o link show 2>/dev/null | sed -E 's/^[0-9]+: //; s/ state [A-Z]+//' | sort
    echo "## nft list ruleset"
    nft list ruleset 2>/dev/null
    echo "## /etc/resolv.conf"
    sha256sum /etc/resolv.conf 2>/dev/null | cut -d' ' -f1
    echo "## processes"
    pgrep -x 'ktctl|ktlab|kt-shadow|kt-router|crun' 2>/dev/null | sort
}

# Starts `ktctl ARGS` in the workstation namespace in the background as session NAME, and waits (up to 90 s) until
# its log has READY. Started directly (not through a subshell), so that $! is ktctl's pid: `ktlab ws` execs
# `ip netns exec`, which execs ktctl.
start_session() {
    local name="$1" ready="$2"
    shift 2
    show "ktctl $(typed "$@")        # in the lab's workstation namespace (ktlab ws --name $lab -- …)"
    ktlab ws --name "$lab" -- ktctl "$@" >"$logs/$name.log" 2>&1 &
    session_pid[$name]=$!
    session_order+=("$name")
    for _ in $(seq 1 900); do
        grep -q "$ready" "$logs/$name.log" && break
        kill -0 "${session_pid[$name]}" 2>/dev/null || break
        sleep 0.1
    done
    if ! grep -q "$ready" "$logs/$name.log"; then
        cat "$logs/$name.log" >&2
        fail "ktctl $1 did not say '$ready'"
    fi
    indent <"$logs/$name.log"
}

# Stops session NAME with Ctrl-C (SIGINT) and waits up to 20 s for it to undo what it did.
stop_session() {
    local name="$1" pid="${session_pid[$1]:-}"
    [ -n "$pid" ] || return 0
    show "^C                   # stops ktctl $name: it undoes what it changed"
    local lines
    lines=$(wc -l <"$logs/$name.log")
    kill -INT "$pid" 2>/dev/null
    for _ in $(seq 1 200); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then fail "ktctl $name did not stop within 20 s after Ctrl-C"; fi
    wait "$pid" 2>/dev/null
    unset "session_pid[$name]"
    tail -n +$((lines + 1)) "$logs/$name.log" | indent
}

# Expects `curl ARGS` (in the workstation namespace, through ktctl) to print PAGE.
expect_ws() {
    local page="$1"
    shift
    show "curl $(typed "$@")"
    local got
    got=$(ws curl -s -m 10 "$@" 2>&1)
    printf '%s\n' "$got" | indent
    [ "$got" = "$page" ] || fail "curl $* printed '$got' instead of '$page'"
}

# Expects `curl ARGS` from a pod inside the cluster to print PAGE.
expect_pod() {
    local page="$1"
    shift
    show "kubectl exec client -- curl $(typed "$@")"
    local got
    got=$(kubectl exec client -- curl -s -m 10 "$@" 2>&1)
    printf '%s\n' "$got" | indent
    [ "$got" = "$page" ] || fail "curl $* in the cluster printed '$got' instead of '$page'"
}

# Stops the local server: SIGTERM, then SIGKILL after 2 s (a signal mask inherited from whatever started the demo can
# hold SIGTERM back from Python).
stop_local_server() {
    [ -n "$local_server" ] || return 1
    kill "$local_server" 2>/dev/null
    for _ in $(seq 1 20); do kill -0 "$local_server" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$local_server" 2>/dev/null
    wait "$local_server" 2>/dev/null
    local_server=""
}

cleanup() {
    local status=$?
    local cleaned=() running=() index
    # Last started first, as Ctrl-C in each terminal would be pressed.
    for ((index = ${#session_order[@]} - 1; index >= 0; index--)); do
        local name="${session_order[$index]}"
        local pid="${session_pid[$name]:-}"
        [ -n "$pid" ] || continue
        running+=("$name")
        if kill -0 "$pid" 2>/dev/null; then
            kill -INT "$pid" 2>/dev/null
            for _ in $(seq 1 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
            kill -KILL "$pid" 2>/dev/null && cleaned+=("ktctl $name killed (it did not stop after Ctrl-C)") \
                || cleaned+=("ktctl $name stopped with Ctrl-C")
        fi
    done
    stop_local_server && cleaned+=("the local server stopped")
    if [ $lab_up = 1 ]; then
        ktlab down --name "$lab" >/dev/null 2>&1 && cleaned+=("ktlab down --name $lab: the lab's namespaces, pods and files removed") \
            || cleaned+=("ktlab down --name $lab FAILED: run it again")
    fi
    if [ $status != 0 ] && [ ${#cleaned[@]} -gt 0 ]; then
        echo "demo: cleaned up:" >&2
        printf '  %s\n' "${cleaned[@]}" >&2
        for name in "${running[@]}"; do
            echo "demo: --- ktctl $name said:" >&2
            tail -n 12 "$logs/$name.log" >&2
        done
    fi
    rm -f "$logs"/*.log "$logs/before" "$logs/after"
    rmdir "$logs" 2>/dev/null
    exit $status
}
trap cleanup EXIT
trap 'exit 130' INT TERM

for program in ktlab ktctl kt-shadow kt-router kubectl curl python3; do
    command -v "$program" >/dev/null || fail "$program is not there (run make demo)"
done
snapshot >"$logs/before"

heading "The cluster: ktlab, a Kubernetes on this machine"
show "ktlab up --name $lab"
lab_up=1
ktlab up --name "$lab" >"$logs/ktlab.log" 2>&1 || { cat "$logs/ktlab.log" >&2; fail "ktlab up failed"; }
indent <"$logs/ktlab.log"
export KUBECONFIG="/run/ktlab/$lab/kubeconfig"

heading "The seed's service: tomcat, its Service, and a page written with kubectl exec"
run kubectl create deployment tomcat --image=tomcat:9 --port=8080
run kubectl expose deployment tomcat --port=8080 --target-port=8080
run kubectl wait --for=condition=Ready pod -l app=tomcat --timeout=60s
run kubectl exec deployment/tomcat -c tomcat -- /bin/bash -c \
    'mkdir webapps/ROOT; echo "kt-connect demo v1" > webapps/ROOT/index.html'
podIP=$(kubectl get pod -l app=tomcat -o jsonpath='{.items[0].status.podIP}')
clusterIP=$(kubectl get svc tomcat -o jsonpath='{.spec.clusterIP}')
run kubectl get pod -o wide --selector app=tomcat
run kubectl get svc tomcat
say "    # another workload, to ask from inside the cluster, and the account mesh's router runs under:"
run kubectl run client --image=curlimages/curl --command -- sleep infinity
run kubectl apply -f "$root/deploy/rbac/kt-router.yaml"
run kubectl wait --for=condition=Ready pod/client --timeout=60s
summary+=("kubectl: tomcat deployed and exposed, its page written with exec")

heading "ktctl connect: the cluster's network on this machine"
start_session connect "ktctl: connected" connect --state-dir "$state"
for url in "http://$podIP:8080" "http://$clusterIP:8080" "http://tomcat:8080" "http://tomcat.default:8080" \
    "http://tomcat.default.svc.cluster.local:8080"; do
    expect_ws "$V1" "$url"
done
summary+=("connect (tun): the pod IP, the ClusterIP, tomcat, tomcat.default and the full name printed '$V1'")

heading "A new version on this machine: the local tomcat"
say "    # the version under development, listening on the workstation's 127.0.0.1:8080"
mkdir -p "/run/ktlab/$lab/local"
echo "$V2" >"/run/ktlab/$lab/local/index.html"
show "python3 -m http.server 8080 --bind 127.0.0.1 --directory ./local &"
ktlab ws --name "$lab" -- python3 -m http.server 8080 --bind 127.0.0.1 --directory "/run/ktlab/$lab/local" \
    >"$logs/local.log" 2>&1 &
local_server=$!
for _ in $(seq 1 100); do
    [ "$(ws curl -s -m 1 http://127.0.0.1:8080/ 2>/dev/null)" = "$V2" ] && break
    sleep 0.1
done
expect_ws "$V2" http://127.0.0.1:8080/

heading "ktctl exchange: all of tomcat's traffic comes to this machine"
start_session exchange "ktctl: exchanging service tomcat" exchange tomcat --expose 8080 --state-dir "$state"
expect_pod "$V2" http://tomcat:8080
expect_ws "$V2" http://tomcat:8080
run ktctl birdseye --kubeconfig "/run/ktlab/$lab/kubeconfig"
stop_session exchange
expect_pod "$V1" http://tomcat:8080
summary+=("exchange: '$V2' from a pod and through connect; '$V1' again after Ctrl-C")

heading "ktctl mesh: only requests with the header come to this machine"
say "    # as the seed does, the cluster's page is written again first"
run kubectl exec deployment/tomcat -c tomcat -- /bin/bash -c \
    'mkdir webapps/ROOT; echo "kt-connect demo v1" > webapps/ROOT/index.html'
start_session mesh "ktctl: meshing service tomcat" mesh tomcat --expose 8080 --state-dir "$state"
header=$(sed -n "s/^  header     send '\([^']*\)'.*/\1/p" "$logs/mesh.log" | head -n 1)
[ -n "$header" ] || fail "ktctl mesh did not say which header reaches this machine"
expect_ws "$V1" http://tomcat:8080
expect_ws "$V2" -H "$header" http://tomcat:8080
expect_pod "$V1" http://tomcat:8080
expect_pod "$V2" -H "$header" http://tomcat:8080
sleep 1 # sessions rewrite their status twice a second: the requests above are in it after this
run ktctl status --state-dir "$state"
stop_session mesh
expect_ws "$V1" -H "$header" http://tomcat:8080
summary+=("mesh: without the header '$V1', with '$header' '$V2' (from a pod and through connect)")

heading "ktctl preview: this machine's tomcat as a new Service, tomcat-v2"
start_session preview "ktctl: previewing service tomcat-v2" preview tomcat-v2 --expose 8080 --state-dir "$state"
expect_pod "$V2" http://tomcat-v2:8080
expect_ws "$V2" http://tomcat-v2:8080
summary+=("preview: tomcat-v2 printed '$V2' (from a pod and through connect)")

heading "ktctl forward: another developer reaches tomcat-v2 on localhost:6060"
start_session forward "ktctl: forwarding" forward tomcat-v2 6060:8080
expect_ws "$V2" http://localhost:6060
run ktctl birdseye --kubeconfig "/run/ktlab/$lab/kubeconfig" --show-connectors
stop_session forward
stop_session preview
summary+=("forward: localhost:6060 printed '$V2'")

heading "Tear down"
stop_session connect
stop_local_server
left=$(kubectl get pods,services,leases,secrets -l app.kubernetes.io/managed-by=ktctl -o name 2>/dev/null)
[ -z "$left" ] || fail "ktctl left $left behind"
run ktctl status --state-dir "$state"
show "ktlab down --name $lab"
ktlab down --name "$lab" >/dev/null 2>&1 || fail "ktlab down failed"
lab_up=0
snapshot >"$logs/after"
if ! diff -u "$logs/before" "$logs/after" >"$logs/difference.log"; then
    cat "$logs/difference.log" >&2
    fail "this machine is not as it was before the demo (above: before and after)"
fi
summary+=("torn down: network namespaces, links, nftables, resolv.conf and processes as before")

if [ $quiet = 1 ]; then
    echo "demo: every step printed the expected page (connect, exchange, mesh, preview, forward) and nothing was left"
else
    printf '\n%s== Summary%s\n' "$BLUE" "$PLAIN"
    for line in "${summary[@]}"; do printf '  %s✔%s %s\n' "$GREEN" "$PLAIN" "$line"; done
fi
