#!/usr/bin/env bash
# The seed quick start, end to end, against ktlab: tomcat deployed with kubectl exactly as the seed does, then
# `ktctl connect` in the lab's workstation namespace and the five curls. Exits 0 only if every curl printed the
# page. Everything it makes (the lab, its namespaces, ktctl) is removed on the way out, also on failure.
#
# Usage: scripts/demo.sh [--quiet]   (the build must be done: `make demo` does it)
set -uo pipefail

quiet=0
[ "${1:-}" = "--quiet" ] && quiet=1
root="$(cd "$(dirname "$0")/.." && pwd)"
bin="$root/.build/debug"
export PATH="$bin:$root/.build/tools:$PATH"
lab="ktdemo$$"
lab="${lab:0:12}"
state="/run/ktlab/$lab/kt"
log="$(mktemp /tmp/ktdemo-connect.XXXXXX)"
connect_pid=""

say() { [ $quiet = 1 ] || printf '%s\n' "$*"; }
step() { [ $quiet = 1 ] || printf '\n\033[1m$ %s\033[0m\n' "$*"; }
# Runs a command shown as the user would type it; its output is shown unless --quiet.
run() {
    step "$*"
    if [ $quiet = 1 ]; then "$@" >/dev/null 2>&1; else "$@"; fi
}
ws() { ktlab ws --name "$lab" -- "$@"; }

cleanup() {
    status=$?
    if [ -n "$connect_pid" ] && kill -0 "$connect_pid" 2>/dev/null; then
        kill -INT "$connect_pid" 2>/dev/null
        for _ in $(seq 1 100); do kill -0 "$connect_pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$connect_pid" 2>/dev/null
    fi
    ktlab down --name "$lab" >/dev/null 2>&1
    rm -f "$log"
    exit $status
}
trap cleanup EXIT
trap 'exit 130' INT TERM

for program in ktlab ktctl kt-shadow kubectl; do
    command -v "$program" >/dev/null || { echo "demo: $program is not built (run make demo)" >&2; exit 1; }
done

step "ktlab up --name $lab"
ktlab up --name "$lab" >"$log" 2>&1 || { cat "$log" >&2; echo "demo: ktlab up failed" >&2; exit 1; }
[ $quiet = 1 ] || cat "$log"
export KUBECONFIG="/run/ktlab/$lab/kubeconfig"

# The seed's commands (kt-connect quick start): a tomcat, its service, and a page written with exec.
run kubectl create deployment tomcat --image=tomcat:9 --port=8080 || exit 1
run kubectl expose deployment tomcat --port=8080 --target-port=8080 || exit 1
run kubectl wait --for=condition=Ready pod -l app=tomcat --timeout=60s || exit 1
run kubectl exec deployment/tomcat -c tomcat -- /bin/bash -c \
    'mkdir webapps/ROOT; echo "kt-connect demo v1" > webapps/ROOT/index.html' || exit 1
podIP=$(kubectl get pod -l app=tomcat -o jsonpath='{.items[0].status.podIP}')
clusterIP=$(kubectl get svc tomcat -o jsonpath='{.spec.clusterIP}')
run kubectl get pod -o wide
run kubectl get svc tomcat

# ktctl connect in the workstation namespace (this machine's own network is not touched).
step "ktctl connect        # in the lab's workstation namespace: ktlab ws --name $lab -- ktctl connect"
# Started directly (not through a function, which would put a subshell between $! and ktctl): ktlab execs
# `ip netns exec`, which execs ktctl, so $! is ktctl's pid and ^C below reaches it.
ktlab ws --name "$lab" -- ktctl connect --state-dir "$state" >"$log" 2>&1 &
connect_pid=$!
for _ in $(seq 1 600); do
    grep -q "ktctl: connected" "$log" && break
    kill -0 "$connect_pid" 2>/dev/null || break
    sleep 0.1
done
if ! grep -q "ktctl: connected" "$log"; then
    cat "$log" >&2
    echo "demo: ktctl connect did not connect" >&2
    exit 1
fi
[ $quiet = 1 ] || sed 's/^/    /' "$log"

# The five curls of the seed.
failed=0
for url in "http://$podIP:8080" "http://$clusterIP:8080" "http://tomcat:8080" "http://tomcat.default:8080" \
    "http://tomcat.default.svc.cluster.local:8080"; do
    step "curl $url"
    page=$(ws curl -s -m 10 "$url")
    say "$page"
    if [ "$page" != "kt-connect demo v1" ]; then
        echo "demo: curl $url printed '${page}' instead of the page" >&2
        failed=1
    fi
done

step "^C                   # stops ktctl connect: TUN, routes, DNS and the shadow pod are removed"
kill -INT "$connect_pid"
for _ in $(seq 1 100); do kill -0 "$connect_pid" 2>/dev/null || break; sleep 0.1; done
if kill -0 "$connect_pid" 2>/dev/null; then echo "demo: ktctl connect did not stop within 10 s" >&2; failed=1; fi
wait "$connect_pid" 2>/dev/null
connect_pid=""
[ $quiet = 1 ] || tail -n 2 "$log" | sed 's/^/    /'
left=$(kubectl get pods -l app.kubernetes.io/managed-by=ktctl -o name 2>/dev/null)
if [ -n "$left" ]; then echo "demo: ktctl left $left behind" >&2; failed=1; fi

step "ktlab down --name $lab"
ktlab down --name "$lab" >/dev/null 2>&1 || { echo "demo: ktlab down failed" >&2; failed=1; }
if [ $failed = 0 ]; then
    say ""
    say "demo: all five curls printed the page through ktctl connect"
else
    echo "demo: FAILED" >&2
fi
exit $failed
