#!/usr/bin/env bash
# Runs a command beside a systemd-resolved of its own, for the tests of `ktctl connect --dns-mode resolved`.
#
# Usage (as root, inside a network namespace the caller made): scripts/with-resolved.sh UPSTREAM -- CMD...
#
# In a mount namespace of its own: a tmpfs on /run (the lab's /run/ktlab bound back into it), a D-Bus system bus
# there, the unpacked systemd-resolved from .build/tools/resolved (`make deps` fetches it; it is never installed:
# installing it would take over this machine's /etc/resolv.conf) with UPSTREAM as its DNS server, and
# /etc/resolv.conf naming resolved's stub, as on a machine where resolved is in charge. CMD runs with a `resolvectl`
# on PATH. Nothing outside the mount namespace changes; resolved and the bus are stopped on the way out.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
tools="$root/.build/tools/resolved"
if [ "${1:-}" != "--inside" ]; then
    exec unshare --mount --propagation private "$0" --inside "$@"
fi
shift
upstream="$1"
shift
[ "${1:-}" = "--" ] && shift

libs="$tools/usr/lib/x86_64-linux-gnu/systemd"
[ -x "$tools/lib/systemd/systemd-resolved" ] || { echo "with-resolved: $tools is missing (make deps)" >&2; exit 2; }
work="$(mktemp -d /tmp/ktresolved.XXXXXX)"
resolved_pid=""
bus_pid=""
cleanup() {
    status=$?
    set +e
    if [ -n "$resolved_pid" ]; then
        kill "$resolved_pid" 2>/dev/null
        wait "$resolved_pid" 2>/dev/null
    fi
    if [ -n "$bus_pid" ]; then
        kill -KILL "$bus_pid" 2>/dev/null # a system bus does not stop on SIGTERM
        wait "$bus_pid" 2>/dev/null
    fi
    # $work holds at most an empty directory (the lab's state was moved out of it): rmdir, which can remove
    # nothing else, never rm -r (a bind mount of the same filesystem would lead it into the real /run).
    mountpoint -q "$work/ktlab" 2>/dev/null && umount "$work/ktlab"
    rmdir "$work/ktlab" 2>/dev/null
    rmdir "$work"
    exit $status
}
trap cleanup EXIT

# A private /run, with the lab's state moved into it (nothing of the real /run stays mounted under $work).
if [ -d /run/ktlab ]; then
    mkdir -p "$work/ktlab"
    mount --bind /run/ktlab "$work/ktlab"
fi
mount -t tmpfs ktresolved /run
if mountpoint -q "$work/ktlab" 2>/dev/null; then
    mkdir -p /run/ktlab
    mount --move "$work/ktlab" /run/ktlab
fi
# Everything else lives in the private /run, and goes with the mount namespace.
files=/run/ktresolved
mkdir -p /run/dbus /run/systemd/resolved.conf.d "$files"

# The user resolved drops to, in private copies of passwd and group.
cp /etc/passwd "$files/passwd"
cp /etc/group "$files/group"
grep -q '^systemd-resolve:' "$files/passwd" || echo 'systemd-resolve:x:991:991::/:/usr/sbin/nologin' >>"$files/passwd"
grep -q '^systemd-resolve:' "$files/group" || echo 'systemd-resolve:x:991:' >>"$files/group"
mount --bind "$files/passwd" /etc/passwd
mount --bind "$files/group" /etc/group

printf '[Resolve]\nDNS=%s\nLLMNR=no\nMulticastDNS=no\n' "$upstream" >/run/systemd/resolved.conf.d/ktctl-test.conf
cat >"$files/bus.conf" <<'EOF'
<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path=/run/dbus/system_bus_socket</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_destination="*"/>
    <allow receive_sender="*"/>
  </policy>
</busconfig>
EOF
dbus-daemon --config-file="$files/bus.conf" --nofork --nopidfile </dev/null >"$files/bus.log" 2>&1 &
bus_pid=$!
for _ in $(seq 1 100); do [ -S /run/dbus/system_bus_socket ] && break; sleep 0.05; done

ip link set lo up
LD_LIBRARY_PATH="$libs" "$tools/lib/systemd/systemd-resolved" </dev/null >"$files/resolved.log" 2>&1 &
resolved_pid=$!
mkdir -p "$files/bin"
printf '#!/bin/sh\nLD_LIBRARY_PATH=%s exec %s "$@"\n' "$libs" "$tools/usr/bin/resolvectl" >"$files/bin/resolvectl"
chmod +x "$files/bin/resolvectl"
export PATH="$files/bin:$PATH"
for _ in $(seq 1 100); do
    resolvectl status >/dev/null 2>&1 && break
    sleep 0.05
done
resolvectl status >/dev/null 2>&1 || { cat "$files/resolved.log" >&2; echo "with-resolved: resolved did not start" >&2; exit 2; }

# /etc/resolv.conf as resolved's stub-resolv.conf shows it now (on a real machine it is a symlink to that file).
cp /run/systemd/resolve/stub-resolv.conf "$files/resolv.conf"
mount --bind "$files/resolv.conf" /etc/resolv.conf
export KTRESOLVED_WORK="$files"

"$@"
