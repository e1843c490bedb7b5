#!/usr/bin/env bash
# The whole data path, ktctl and the reference tools side by side in one run (run as root; needs the built ktctl,
# ktlab and kt-shadow, and `make bench`'s BENCH_PACKAGES: sshuttle, wireguard-go, wireguard-tools).
#
#   veth         laptop namespace → veth → cluster namespace (kernel to kernel: the ceiling)
#   tun          ktlab's workstation → ktctl connect's TUN → KtStack → SSH → port-forward (the lab's API server)
#                → kt-shadow → a pod
#   socks        the same with `ktctl connect --mode socks` (curl --socks5-hostname; iperf3 has no SOCKS)
#   socks-open   socks mode with --proxy-allow-users all (the proxy skips its check of each client socket's owner)
#   ssh-aes      OpenSSH `ssh -L`, aes128-gcm@openssh.com;   ssh-default: the same with the default cipher
#   ssh-socks    OpenSSH `ssh -D` (aes128-gcm), curl --socks5-hostname
#   sshuttle     sshuttle --method nft over the same sshd, with a drop rule that proves the traffic went through it
#   wireguard    wireguard-go at both ends (userspace), one in each namespace
#
# The references run in two namespaces of their own joined by a veth pair (the target address on the cluster
# namespace's loopback, sshd on a private config and throwaway keys); ktctl runs in a ktlab lab of its own, in its
# workstation namespace. Measured per path: iperf3 1 and 4 streams (median of RUNS), curl of SIZE bytes, REQUESTS
# sequential connect + GET + close (p50 / p99), connections per second (wrk -H 'Connection: close'), CPU seconds
# per GB of every process of the path over the curl, and for ktctl tun its DNS latency and memory (idle, and per
# idle flow with FLOWS flows open). Writes bench/results/<date>-whole-path.md and .json.
#
#   bench/whole-path.sh                      # defaults: RUNS=3 DURATION=10, about 8-10 minutes
#   DURATION=3 RUNS=1 bench/whole-path.sh    # a quick check
#   ROWS="veth ssh-aes" bench/whole-path.sh  # only some paths (tun and socks share one lab)
# KT_BIN: where ktctl, ktlab and kt-shadow are (default .build/debug, else .build/release); they are copied to a
# temp dir first, so a build relinking them meanwhile does not disturb the run.
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
scripts="$root/bench/scripts"
runs=${RUNS:-3}
duration=${DURATION:-10}
size=${SIZE:-1073741824}
requests=${REQUESTS:-1000}
flows=${FLOWS:-1000}
cps_seconds=${CPS_SECONDS:-5}
rows=${ROWS:-"veth ssh-aes ssh-default ssh-socks sshuttle wireguard tun socks socks-open"}
out=${OUT:-$root/bench/results}
kubectl=${KUBECTL:-$root/.build/tools/kubectl}
hz=$(getconf CLK_TCK)
id=$$
laptop="wpl$id" cluster="wpc$id" lab="wpk$id"
# Addresses exist only inside this run's namespaces.
laptop_ip=10.201.0.1 cluster_ip=10.201.0.2 target=10.202.0.1 wg_laptop=10.203.0.1 wg_cluster=10.203.0.2
iperf_port=5201 http_port=8080 sshd_port=2222

say() { printf '%s %s\n' "$(date +%T)" "$*" >&2; }
die() { say "whole-path: $*"; exit 1; }
[ "$(id -u)" = 0 ] || die "run as root (it makes network namespaces)"

work=$(mktemp -d /tmp/whole-path.XXXXXX)
results="$work/results.tsv"
: >"$results"
export HOME="$work/home" ALL_PROXY="" all_proxy="" http_proxy="" https_proxy=""
mkdir -p "$HOME" "$work/bin" "$work/ssh" "$work/wg"
pids=()
made_wireguard_dir=0
[ -d /var/run/wireguard ] || made_wireguard_dir=1
lab_up=0

# --- cleanup: every process, namespace, lab and file this run made, also on failure or ^C ---------------------------

stop() {  # pid...: TERM, up to 5 s, then KILL
    local pid
    for pid in "$@"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "$@"; do
        for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
}
mounts_under() { awk -v dir="$1" '$5 == dir || index($5, dir "/") == 1 { print $5 }' /proc/self/mountinfo; }
cleanup() {
    local status=$? ns pid
    trap - EXIT INT TERM
    say "cleaning up"
    [ ${#pids[@]} -eq 0 ] || stop "${pids[@]}"
    # Whatever else runs in this run's own namespaces (sshd's sessions, sshuttle's remote half).
    for ns in "$laptop" "$cluster"; do
        ip netns list | grep -qw "^$ns" || continue
        for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -KILL "$pid" 2>/dev/null || true; done
        ip netns del "$ns" 2>/dev/null || true
    done
    [ "$lab_up" = 0 ] || "$work/bin/ktlab" down --name "$lab" >/dev/null 2>&1 || say "ktlab down --name $lab failed"
    rm -f "/var/run/wireguard/wgl$id.sock" "/var/run/wireguard/wgc$id.sock"
    [ "$made_wireguard_dir" = 0 ] || rmdir /var/run/wireguard 2>/dev/null || true
    # The work dir never holds a mount; should one be there anyway, it is unmounted before anything is removed.
    mounts_under "$work" | sort -r | xargs -r -n1 umount 2>/dev/null
    if [ -n "$(mounts_under "$work")" ]; then say "left $work (a mount is still under it)"
    else rm -rf --one-file-system "$work"; fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- helpers ----------------------------------------------------------------------------------------------------------

put() { printf '%s\t%s\t%s\n' "$1" "$2" "$3" >>"$results"; }          # row key value
in_ns() { local ns=$1; shift; ip netns exec "$ns" "$@"; }
# start NAME NS COMMAND...: in the background in namespace NS, output to $work/NAME.log; its pid in $started.
# (`ip netns exec` execs the program, so $! is the program itself.)
start() {
    local name=$1 ns=$2
    shift 2
    ip netns exec "$ns" "$@" >"$work/$name.log" 2>&1 &
    started=$!
    pids+=("$started")
}
wait_for() {  # seconds command...: until the command succeeds
    local tries=$(($1 * 10))
    shift
    for _ in $(seq 1 "$tries"); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done
    return 1
}
listening() { [ -n "$(ip netns exec "$1" ss -Htln "sport = :$2")" ]; }
ticks() {  # user + system ticks of the given pids (gone ones count 0)
    local pid total=0 t
    for pid in "$@"; do
        t=$(sed 's/^.*) //' "/proc/$pid/stat" 2>/dev/null | awk '{ print $12 + $13 }')
        total=$((total + ${t:-0}))
    done
    echo "$total"
}
descendants() {  # pid [comm]: the pid and everything under it (only those named comm, when given)
    ps -e -o pid=,ppid=,comm= | awk -v root="$1" -v want="${2:-}" '
        { parent[$1] = $2; name[$1] = $3 }
        END {
            inside[root] = 1
            do { grown = 0; for (p in parent) if (!(p in inside) && (parent[p] in inside)) { inside[p] = 1; grown = 1 } } while (grown)
            for (p in inside) if (want == "" || name[p] == want) print p
        }'
}
median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{ v[NR] = $1 } END { if (NR) print v[int((NR + 1) / 2)] }'; }

# --- measurements (each puts its figures, or why it has none, under the row) ----------------------------------------

iperf() {  # row ns host port streams key
    local row=$1 ns=$2 host=$3 port=$4 streams=$5 key=$6 values="" json value
    for _ in $(seq 1 "$runs"); do
        value=""
        for _ in 1 2 3; do
            json=$(in_ns "$ns" timeout $((duration + 30)) iperf3 -c "$host" -p "$port" -t "$duration" -P "$streams" -J \
                2>/dev/null)
            value=$(python3 -c 'import json,sys; print("%.3f" % (json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"] / 1e9))' \
                <<<"$json" 2>/dev/null) && break
            value=""
            sleep 2
        done
        [ -n "$value" ] || { put "$row" "$key" "failed: $(grep -o '"error":[^,}]*' <<<"$json" | head -1)"; return 1; }
        values="$values $value"
    done
    put "$row" "$key" "$(median <<<"$values")"
    put "$row" "${key}_runs" "${values# }"
    say "  $row iperf3 -P $streams: $values Gbit/s"
}

# roles ROW: prints "role<TAB>pid pid ..." for every process of the path (its CPU is measured over the curl).
curl_transfer() {  # row ns host port socks(or "")
    local row=$1 ns=$2 host=$3 port=$4 socks=$5 role line before=() names=() members=() i output bytes seconds
    while IFS=$'\t' read -r role line; do
        [ -n "$role" ] || continue
        names+=("$role")
        members+=("$line")
        # shellcheck disable=SC2086
        before+=("$(ticks $line)")
    done < <(roles "$row")
    output=$(in_ns "$ns" curl -sS -o /dev/null --max-time 600 ${socks:+--socks5-hostname "$socks"} \
        -w '%{size_download} %{time_total}' "http://$host:$port/bytes/$size" 2>&1)
    read -r bytes seconds <<<"$output"
    if [ "$bytes" != "$size" ]; then put "$row" curl "failed: $output"; return 1; fi
    put "$row" curl "$(awk -v b="$bytes" -v t="$seconds" 'BEGIN { printf "%.0f", b / t / 1e6 }')"
    put "$row" curl_seconds "$seconds"
    for i in "${!names[@]}"; do
        # shellcheck disable=SC2086
        put "$row" "cpu:${names[$i]}" "$(awk -v d=$(($(ticks ${members[$i]}) - before[i])) -v hz="$hz" -v b="$bytes" \
            'BEGIN { printf "%.2f", d / hz / (b / 1e9) }')"
    done
    say "  $row curl: $bytes bytes in $seconds s"
}

latency() {  # row ns host port socks(or "")
    local row=$1 ns=$2 host=$3 port=$4 socks=$5 p50 p99 c50 c99 failures
    read -r p50 p99 c50 c99 failures < <(in_ns "$ns" timeout 600 python3 "$scripts/whole-path-client.py" latency \
        "$host" "$port" "$requests" ${socks:+--socks "$socks"} 2>&1)
    if [ -z "${failures:-}" ] || [ "$failures" = "$requests" ]; then put "$row" latency "failed: $p50 $p99"; return 1; fi
    put "$row" latency_p50 "$p50"
    put "$row" latency_p99 "$p99"
    put "$row" connect_p50 "$c50"
    put "$row" connect_p99 "$c99"
    [ "$failures" = 0 ] || put "$row" latency_failures "$failures"
    say "  $row connect+request: p50 $p50 ms, p99 $p99 ms ($failures failed)"
}

cps() {  # row ns host port
    local row=$1 ns=$2 host=$3 port=$4 output rate errors
    output=$(in_ns "$ns" timeout $((cps_seconds + 30)) wrk -t1 -c8 -d"${cps_seconds}s" -H 'Connection: close' \
        "http://$host:$port/small" 2>&1)
    rate=$(awk '/Requests\/sec/ { printf "%.0f", $2 }' <<<"$output")
    [ -n "$rate" ] || { put "$row" cps "failed: $(tail -1 <<<"$output")"; return 1; }
    put "$row" cps "$rate"
    errors=$(grep -E 'Socket errors|Non-2xx' <<<"$output" | tr -s ' ' | paste -sd';' -)
    [ -z "$errors" ] || put "$row" cps_errors "$errors"
    say "  $row connections/s: $rate"
}

measure() {  # row ns host iperf-port(or "") http-port socks(or "")
    local row=$1 ns=$2 host=$3 iport=$4 hport=$5 socks=$6
    if [ -n "$iport" ]; then
        iperf "$row" "$ns" "$host" "$iport" 1 iperf1
        iperf "$row" "$ns" "$host" "$iport" 4 iperf4
    fi
    curl_transfer "$row" "$ns" "$host" "$hport" "$socks"
    latency "$row" "$ns" "$host" "$hport" "$socks"
    [ -n "$socks" ] || cps "$row" "$ns" "$host" "$hport"
}

# --- the reference rows: two namespaces joined by a veth pair ---------------------------------------------------------

reference_setup() {
    { ip netns add "$laptop" && ip netns add "$cluster"; } || die "cannot make namespaces"
    ip -n "$laptop" link add "wpa$id" type veth peer name "wpb$id" netns "$cluster" || die "cannot make the veth pair"
    ip -n "$laptop" link set lo up
    ip -n "$cluster" link set lo up
    ip -n "$laptop" addr add "$laptop_ip/30" dev "wpa$id"
    ip -n "$cluster" addr add "$cluster_ip/30" dev "wpb$id"
    ip -n "$cluster" addr add "$target/32" dev lo
    ip -n "$laptop" link set "wpa$id" up
    ip -n "$cluster" link set "wpb$id" up
    ip -n "$laptop" route add "$target/32" via "$cluster_ip" || die "cannot route the target"

    start iperf-server "$cluster" iperf3 -s -p "$iperf_port"
    start http-server "$cluster" "$server" 0.0.0.0 "$http_port"
    # sshd on a private config and throwaway keys (never /etc/ssh).
    ssh-keygen -q -t ed25519 -N '' -f "$work/ssh/host_key" -C "whole-path host"
    ssh-keygen -q -t ed25519 -N '' -f "$work/ssh/client_key" -C "whole-path client"
    cp "$work/ssh/client_key.pub" "$work/ssh/authorized_keys"
    cat >"$work/ssh/sshd_config" <<EOF
ListenAddress $cluster_ip
Port $sshd_port
HostKey $work/ssh/host_key
AuthorizedKeysFile $work/ssh/authorized_keys
PidFile none
StrictModes no
UsePAM no
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
AllowTcpForwarding yes
X11Forwarding no
PrintMotd no
UseDNS no
EOF
    start sshd "$cluster" /usr/sbin/sshd -D -e -f "$work/ssh/sshd_config"
    sshd_pid=$started
    wait_for 10 listening "$cluster" "$http_port" || die "the HTTP server did not start: $(cat "$work/http-server.log")"
    wait_for 10 listening "$cluster" "$iperf_port" || die "iperf3 -s did not start"
    wait_for 10 listening "$cluster" "$sshd_port" || die "sshd did not start: $(cat "$work/sshd.log")"
}
ssh_options=()
set_ssh_options() {
    ssh_options=(-F none -i "$work/ssh/client_key" -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null
        -o BatchMode=yes -o ExitOnForwardFailure=yes -p "$sshd_port")
}

roles() {
    case $1 in
        ssh-aes | ssh-default | ssh-socks)
            printf 'ssh\t%s\n' "$row_pid"
            printf 'sshd\t%s\n' "$(descendants "$sshd_pid" sshd | grep -vx "$sshd_pid" | tr '\n' ' ')"
            ;;
        sshuttle)
            printf 'sshuttle (python)\t%s\n' "$row_pid"
            printf 'ssh\t%s\n' "$(descendants "$row_pid" ssh | tr '\n' ' ')"
            printf 'sshd\t%s\n' "$(descendants "$sshd_pid" sshd | grep -vx "$sshd_pid" | tr '\n' ' ')"
            printf 'sshuttle server (python)\t%s\n' "$(descendants "$sshd_pid" | grep -vxF "$(descendants "$sshd_pid" sshd)" \
                | tr '\n' ' ')"
            ;;
        wireguard)
            printf 'wireguard-go laptop\t%s\n' "$wg_laptop_pid"
            printf 'wireguard-go cluster\t%s\n' "$wg_cluster_pid"
            ;;
        tun | socks | socks-open)
            printf 'ktctl\t%s\n' "$row_pid"
            printf 'kt-shadow\t%s\n' "$(descendants "$(lab_server_pid)" kt-shadow | tr '\n' ' ')"
            printf 'lab relay (ktlab serve)\t%s\n' "$(lab_server_pid)"
            ;;
    esac
}

row_veth() {
    measure veth "$laptop" "$target" "$iperf_port" "$http_port" ""
}

ssh_row() {  # row cipher(or "") -L/-D
    local row=$1 cipher=$2 mode=$3 forwards
    if [ "$mode" = -L ]; then
        forwards=(-L "127.0.0.1:15201:$target:$iperf_port" -L "127.0.0.1:18080:$target:$http_port")
    else
        forwards=(-D 127.0.0.1:11080)
    fi
    start "$row" "$laptop" ssh "${ssh_options[@]}" ${cipher:+-c "$cipher"} -v -E "$work/$row.debug" -N "${forwards[@]}" \
        "root@$cluster_ip"
    row_pid=$started
    if ! wait_for 20 listening "$laptop" "$([ "$mode" = -L ] && echo 18080 || echo 11080)"; then
        why="ssh did not start: $(grep -v '^debug' "$work/$row.debug" | tail -2 | tr '\n' ' ')"
        return 1
    fi
    put "$row" cipher "$(grep -o 'server->client cipher: [^ ]*' "$work/$row.debug" | head -1 | awk '{ print $3 }')"
    if [ "$mode" = -L ]; then measure "$row" "$laptop" 127.0.0.1 15201 18080 ""
    else measure "$row" "$laptop" "$target" "" "$http_port" 127.0.0.1:11080; fi
}
row_ssh-aes() { ssh_row ssh-aes aes128-gcm@openssh.com -L; }
row_ssh-default() { ssh_row ssh-default "" -L; }
row_ssh-socks() { ssh_row ssh-socks aes128-gcm@openssh.com -D; }

dropped_packets() { in_ns "$laptop" nft list table inet "wpdrop$id" | grep -o 'packets [0-9]*' | awk '{ print $2 }'; }
row_sshuttle() {
    command -v sshuttle >/dev/null || { why="sshuttle: not installed (make bench installs BENCH_PACKAGES)"; return 1; }
    local ssh_command drop="wpdrop$id"
    ssh_command="ssh ${ssh_options[*]}"
    # The proof: anything to the target that sshuttle did not redirect (its nat output hook at priority -100 rewrites
    # the destination to its local listener first) is dropped by this filter rule, and counted.
    in_ns "$laptop" nft -f - <<EOF || { why="sshuttle: cannot add the drop rule"; return 1; }
table inet $drop {
    chain output { type filter hook output priority 0; policy accept; ip daddr $target counter drop; }
}
EOF
    # The rule works: without sshuttle, a connection to the target goes nowhere.
    if in_ns "$laptop" timeout 3 python3 -c "import socket; socket.create_connection(('$target', $http_port), timeout=1)" \
        2>/dev/null; then
        why="sshuttle: the drop rule did not drop a direct connection"
        return 1
    fi
    dropped_before=$(dropped_packets)
    start sshuttle "$laptop" sshuttle --method nft -e "$ssh_command" -r "root@$cluster_ip" "$target/32"
    row_pid=$started
    if ! wait_for 30 grep -q "Connected to server" "$work/sshuttle.log"; then
        why="sshuttle did not connect: $(tail -2 "$work/sshuttle.log" | tr '\n' ' ')"
        return 1
    fi
    measure sshuttle "$laptop" "$target" "$iperf_port" "$http_port" ""
    put sshuttle drop_check "$dropped_before"
    put sshuttle dropped "$(($(dropped_packets) - dropped_before))"
    in_ns "$laptop" nft delete table inet "$drop"
}

row_wireguard() {
    command -v wireguard-go >/dev/null || { why="wireguard-go: not installed (make bench installs BENCH_PACKAGES)"; return 1; }
    command -v wg >/dev/null || { why="wg: not installed (wireguard-tools; make bench installs BENCH_PACKAGES)"; return 1; }
    local side ns name peer_ip endpoint address
    (umask 077 && wg genkey >"$work/wg/laptop.key" && wg genkey >"$work/wg/cluster.key")
    wg pubkey <"$work/wg/laptop.key" >"$work/wg/laptop.pub" && wg pubkey <"$work/wg/cluster.key" >"$work/wg/cluster.pub"
    start wg-laptop "$laptop" env WG_PROCESS_FOREGROUND=1 wireguard-go -f "wgl$id"
    wg_laptop_pid=$started
    start wg-cluster "$cluster" env WG_PROCESS_FOREGROUND=1 wireguard-go -f "wgc$id"
    wg_cluster_pid=$started
    for side in laptop cluster; do
        if [ $side = laptop ]; then ns=$laptop name="wgl$id" peer=cluster address=$wg_laptop peer_ip=$wg_cluster endpoint=$cluster_ip
        else ns=$cluster name="wgc$id" peer=laptop address=$wg_cluster peer_ip=$wg_laptop endpoint=$laptop_ip; fi
        if ! wait_for 10 test -S "/var/run/wireguard/$name.sock"; then
            why="wireguard-go did not start: $(tail -2 "$work/wg-$side.log" | tr '\n' ' ')"
            return 1
        fi
        in_ns "$ns" wg set "$name" private-key "$work/wg/$side.key" listen-port 51820 \
            peer "$(cat "$work/wg/$peer.pub")" endpoint "$endpoint:51820" allowed-ips "$peer_ip/32" \
            || { why="wg set failed"; return 1; }
        ip -n "$ns" addr add "$address/24" dev "$name"
        ip -n "$ns" link set "$name" up
    done
    wait_for 10 in_ns "$laptop" ping -c1 -W1 "$wg_cluster" || { why="wireguard: no ping through the tunnel"; return 1; }
    measure wireguard "$laptop" "$wg_cluster" "$iperf_port" "$http_port" ""
}

# --- the ktctl rows: a ktlab lab of their own ---------------------------------------------------------------------------

lab_server_pid() { pgrep -f -- "ktlab serve --name $lab( |$)" | head -1; }

copy_binaries() {  # the built binaries, copied once they have not changed for 5 s (a build may be relinking them)
    local dir program
    dir=${KT_BIN:-}
    if [ -z "$dir" ]; then
        dir="$root/.build/debug"
        [ -x "$dir/ktctl" ] || [ ! -x "$root/.build/release/ktctl" ] || dir="$root/.build/release"
    fi
    for program in ktctl ktlab kt-shadow; do
        for _ in $(seq 1 120); do  # at most 10 minutes, and only while a build runs or the file just changed
            if [ -x "$dir/$program" ] && [ $(($(date +%s) - $(stat -c %Y "$dir/$program"))) -ge 5 ]; then
                cp "$dir/$program" "$work/bin/$program.tmp" && mv "$work/bin/$program.tmp" "$work/bin/$program" \
                    && "$work/bin/$program" --help >/dev/null 2>&1 && break
                rm -f "$work/bin/$program"
            elif [ ! -e "$dir/$program" ] && ! pgrep -x swift-build >/dev/null; then
                break
            fi
            say "waiting for $dir/$program (being written, or a build is running)"
            sleep 5
        done
        [ -x "$work/bin/$program" ] || { why="$program: not built in $dir (make build)"; return 1; }
    done
    put meta kt_bin "$dir"
    put meta ktctl_version "$("$work/bin/ktctl" --version 2>&1)"
}

lab_failed=""
lab_ready() {  # the lab, made once for the ktctl rows (a failure is remembered, not tried again)
    [ -z "${pod_ip:-}" ] || return 0
    [ -z "$lab_failed" ] || { why=$lab_failed; return 1; }
    lab_setup && return 0
    lab_failed=$why
    return 1
}
lab_setup() {
    [ -x "$kubectl" ] || { why="kubectl: missing ($kubectl; make deps fetches it)"; return 1; }
    copy_binaries || return 1
    lab_up=1
    "$work/bin/ktlab" up --name "$lab" >"$work/ktlab-up.log" 2>&1 || { why="ktlab up failed: $(tail -2 "$work/ktlab-up.log")"; return 1; }
    export KUBECONFIG="/run/ktlab/$lab/kubeconfig"
    mkdir -p "/run/ktlab/$lab/home-bench"
    if ! { "$kubectl" run wptarget --image=debian --port="$http_port" --command -- /bin/sh -c \
        "/usr/bin/iperf3 -s -p $iperf_port & exec $server 0.0.0.0 $http_port" \
        && "$kubectl" expose pod wptarget --port="$http_port" \
        && "$kubectl" wait --for=condition=Ready pod/wptarget --timeout=90s; } >/dev/null; then
        why="the target pod did not start"
        return 1
    fi
    pod_ip=$("$kubectl" get pod wptarget -o jsonpath='{.status.podIP}')
    wait_for 10 ip netns exec "$lab-node" python3 -c "import socket; socket.create_connection(('$pod_ip', $http_port))" \
        || { why="the target pod does not answer"; return 1; }
}

ktctl_start() {  # row mode [more flags]
    local row=$1 mode=$2
    shift 2
    start "ktctl-$row" "$lab-ws" env HOME="/run/ktlab/$lab/home-bench" "$work/bin/ktctl" connect --mode "$mode" \
        -n default --image kt-shadow:dev --state-dir "/run/ktlab/$lab/kt-$row" --dns-mode none \
        --kubeconfig "/run/ktlab/$lab/kubeconfig-ws" "$@"
    row_pid=$started
    if ! wait_for 120 grep -q "ktctl: connected" "$work/ktctl-$row.log"; then
        why="ktctl connect --mode $mode did not connect: $(tail -3 "$work/ktctl-$row.log" | tr '\n' ' ')"
        return 1
    fi
}
ktctl_stop() {  # ^C, as a user would: it removes its shadow pod
    kill -INT "$row_pid" 2>/dev/null || true
    for _ in $(seq 1 200); do kill -0 "$row_pid" 2>/dev/null || break; sleep 0.1; done
    stop "$row_pid"
}
rss_kib() { awk '/^VmRSS/ { print $2 }' "/proc/$1/status"; }
# The anonymous part: the process's own memory, without the binary's and the libraries' pages (shared, file-backed).
anon_kib() { awk '/^RssAnon/ { print $2 }' "/proc/$1/status"; }

dns() {  # key name count: DNS latency on the TUN's resolver
    local key=$1 name=$2 count=$3 p50 p99 failures noerror nxdomain
    read -r p50 p99 failures noerror nxdomain < <(in_ns "$lab-ws" python3 "$scripts/whole-path-client.py" dns \
        198.18.20.1 "$name" "$count")
    put tun "dns_${key}_p50" "$p50"
    put tun "dns_${key}_p99" "$p99"
    put tun "dns_${key}_answers" "$((noerror + nxdomain)) of $count ($noerror found, $nxdomain NXDOMAIN, $failures timed out)"
}

row_tun() {
    lab_ready || return 1
    ktctl_start tun tun || return 1
    sleep 2
    # Memory first, on a fresh session: idle, then with FLOWS idle flows open through the TUN (each did one request).
    local before holder held
    before=$(rss_kib "$row_pid")
    put tun rss_idle_kib "$before"
    put tun anon_idle_kib "$(anon_kib "$row_pid")"
    ip netns exec "$lab-ws" python3 "$scripts/whole-path-client.py" hold "$pod_ip" "$http_port" "$flows" \
        >"$work/hold.log" 2>&1 &
    holder=$!
    pids+=("$holder")
    if wait_for 180 grep -q "^ready" "$work/hold.log"; then
        sleep 3
        held=$(rss_kib "$row_pid")
        put tun rss_flows_kib "$held"
        put tun flows "$flows"
        say "  tun: RSS idle $before KiB, with $flows idle flows $held KiB"
    else
        put tun rss_flows_kib "failed: $(tail -1 "$work/hold.log")"
    fi
    stop "$holder"
    sleep 2
    put tun rss_released_kib "$(rss_kib "$row_pid")"
    # DNS on the TUN's resolver: a fresh name every time (never cached: each goes through the tunnel to the cluster
    # DNS, answered NXDOMAIN), the first lookup of a real name, then that name again and again (cached, TTL 5 s).
    dns uncached "{}.nonexistent.svc.cluster.local" 200
    dns first wptarget.default.svc.cluster.local 1
    dns cached wptarget.default.svc.cluster.local 200
    say "  tun DNS: uncached p50 $(awk -F'\t' '$2 == "dns_uncached_p50" { print $3 }' "$results") ms," \
        "cached p50 $(awk -F'\t' '$2 == "dns_cached_p50" { print $3 }' "$results") ms"
    measure tun "$lab-ws" "$pod_ip" "$iperf_port" "$http_port" ""
    put tun anon_busy_kib "$(anon_kib "$row_pid")"
    # Idle again: the engine gives freed memory back after 2 s without packets.
    sleep 4
    put tun rss_after_kib "$(rss_kib "$row_pid")"
    put tun anon_after_kib "$(anon_kib "$row_pid")"
    ktctl_stop
}

socks_row() {  # row [more flags]
    local row=$1
    shift
    lab_ready || return 1
    ktctl_start "$row" socks "$@" || return 1
    sleep 1
    put "$row" rss_idle_kib "$(rss_kib "$row_pid")"
    measure "$row" "$lab-ws" "$pod_ip" "" "$http_port" 127.0.0.1:2223
    ktctl_stop
}
row_socks() { socks_row socks; }
# The same without the proxy's check of who owns each client's socket (by default only ktctl's own user may connect).
row_socks-open() { socks_row socks-open --proxy-allow-users all; }

# --- the run ---------------------------------------------------------------------------------------------------------

started_at=$(date +%s)
put meta date "$(date +%F)"
put meta started "$(date -Is)"
put meta machine "$(nproc) cores, $(uname -r), $(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo)"
put meta load_before "$(cut -d' ' -f1-3 /proc/loadavg)"
put meta parameters "RUNS=$runs DURATION=$duration SIZE=$size REQUESTS=$requests FLOWS=$flows CPS_SECONDS=$cps_seconds"
tools="$(iperf3 --version | head -1 | cut -d' ' -f1-2), $(ssh -V 2>&1 | cut -d, -f1), $(wrk --version 2>&1 | head -1 | cut -d' ' -f1-2)"
tools="$tools, $(curl --version | head -1 | cut -d' ' -f1-2), $(python3 --version)"
! command -v sshuttle >/dev/null || tools="$tools, sshuttle $(sshuttle --version 2>&1)"
! command -v wireguard-go >/dev/null || tools="$tools, $(wireguard-go --version 2>&1 | head -1)"
put meta tools "$tools"
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
server="$work/bin/whole-path-server"
cc -O2 -pthread -o "$server" "$scripts/whole-path-server.c" || die "cannot build $scripts/whole-path-server.c (make deps)"
reference_setup
set_ssh_options
for row in $rows; do
    say "== $row"
    why="" row_pid=""
    declare -F "row_$row" >/dev/null \
        || why="no such row (the rows: veth ssh-aes ssh-default ssh-socks sshuttle wireguard tun socks socks-open)"
    if [ -n "$why" ] || ! "row_$row"; then
        put "$row" error "${why:-failed}"
        say "  $row: ${why:-failed}"
    fi
    # Whatever this row started stops with it (ktctl gets ^C first, to remove its shadow pod).
    if [ -n "$row_pid" ] && kill -0 "$row_pid" 2>/dev/null; then
        case $row in tun | socks*) ktctl_stop ;; *) stop "$row_pid" ;; esac
    fi
    [ "$row" != wireguard ] || stop "${wg_laptop_pid:-}" "${wg_cluster_pid:-}"
done
put meta seconds "$(($(date +%s) - started_at))"
put meta load_after "$(cut -d' ' -f1-3 /proc/loadavg)"
mkdir -p "$out"
report="$out/$(date +%F)-whole-path"
python3 "$scripts/whole-path-report.py" "$results" "$report.md" "$report.json" || die "the report failed"
cat "$report.md"
say "wrote $report.md and $report.json"
