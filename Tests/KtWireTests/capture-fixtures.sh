#!/usr/bin/env bash
# capture-fixtures.sh: provenance of Tests/KtWireTests/CapturedPackets.swift.
#
# Captures real packets from the Linux kernel, ping, curl, dig and BIND's named inside throwaway
# network namespaces, then writes one file set per fixture into OUTDIR:
#   NAME.pcap   the single chosen packet (Ethernet framing, as tcpdump saw it on the veth)
#   NAME.bin    the raw IP packet: the 14-byte Ethernet header stripped, trimmed to the IP length
#   NAME.dns    (DNS fixtures only) the UDP payload of that packet
#   NAME.txt    `tcpdump -nn -S -vvv -X -r NAME.pcap`; NAME.dig holds dig's output for DNS ones
#   NAME.bytes  the bytes of NAME.dns, or else NAME.bin, as a Swift array body, 16 per line
# The Swift literals are NAME.bytes; the doc comments quote NAME.txt (hex lines left out), NAME.dig and
# NAME.quoted.txt (tcpdump's decoding of the packet quoted inside an ICMPv6 error).
#
# Run as root: `bash capture-fixtures.sh [OUTDIR]` (about 30 s). Needs, on Debian 12:
#   apt-get install -y iproute2 tcpdump iputils-ping curl bind9 bind9-dnsutils ethtool nftables python3
# with an /usr/sbin/policy-rc.d that exits 101 in place first, so the bind9 package does not start a
# named in the root namespace; this script runs its own named, inside a namespace, with its own config.
# Every run gives different bytes (random ISNs, ports, IP ids, timestamps, DNS ids and cookies); the
# facts in the Swift doc comments belong to the run that produced its literals.
#
# Safety: everything happens in namespaces named kwfix-<random>-*, connected only by veth pairs
# created directly inside them (no interface ever appears in the root namespace); the root
# namespace's routes, addresses, firewall and resolv.conf are never touched; all traffic goes to
# addresses that live on these namespaces. The EXIT trap stops every process started here and
# deletes the namespaces even on failure.
set -euo pipefail

[ "$(id -u)" -eq 0 ] || { echo "run as root" >&2; exit 1; }
for tool in ip tcpdump ping curl named dig ethtool nft python3; do
    command -v "$tool" >/dev/null || { echo "missing tool: $tool" >&2; exit 1; }
done

OUT=${1:-$(mktemp -d /tmp/kwfix-out.XXXXXX)}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
WORK=$(mktemp -d /tmp/kwfix-work.XXXXXX)
ID=$(od -An -N3 -tx1 /dev/urandom | tr -d ' \n')
C=kwfix-$ID-c  # client        c0 10.77.0.1/24 fd00:77::1/64
S=kwfix-$ID-s  # servers       s0 10.77.0.2/24 fd00:77::2/64 (named, http.server)
A=kwfix-$ID-a  # routed sender a0 10.77.1.1/24 fd00:77:1::1/64
R=kwfix-$ID-r  # router        r0 10.77.1.2/24 fd00:77:1::2/64, r1 10.77.2.1/24 fd00:77:2::1/64 (MTU 1280)
B=kwfix-$ID-b  # routed target b0 10.77.2.2/24 fd00:77:2::2/64 (MTU 1280)
NAMESPACES=("$C" "$S" "$A" "$R" "$B")
PIDS=()

cleanup() {
    set +e
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null; done
    for ns in "${NAMESPACES[@]}"; do
        if ip netns list | grep -qw "$ns"; then
            # Anything still inside a namespace of ours was started by this script.
            for pid in $(ip netns pids "$ns"); do kill -9 "$pid" 2>/dev/null; done
            ip netns del "$ns"
        fi
    done
    [ -n "${KWFIX_KEEP_WORK:-}" ] && echo "work dir kept: $WORK" >&2 || rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

in_ns() { local ns=$1; shift; ip netns exec "$ns" "$@"; }

# start_capture NS DEV FILE FILTER...: tcpdump in the background; returns once it is listening.
start_capture() {
    local ns=$1 dev=$2 file=$3; shift 3
    ip netns exec "$ns" tcpdump -i "$dev" --immediate-mode -U -s 0 -w "$file" "$@" 2>"$file.log" &
    CAP_PID=$!
    PIDS+=("$CAP_PID")
    for _ in $(seq 50); do grep -q "listening on" "$file.log" 2>/dev/null && return 0; sleep 0.1; done
    echo "tcpdump did not start: $(cat "$file.log")" >&2
    return 1
}
stop_capture() {
    sleep 0.5
    kill -INT "$CAP_PID"
    wait "$CAP_PID" || true
    local keep=() pid
    for pid in "${PIDS[@]}"; do [ "$pid" = "$CAP_PID" ] || keep+=("$pid"); done
    PIDS=("${keep[@]}")
}

# pick NAME PCAP FILTER [REGEX]: the first packet of PCAP matching the BPF FILTER (and, if given,
# whose `tcpdump -v` text matches REGEX) becomes NAME.pcap / NAME.bin / NAME.txt / NAME.bytes.
pick() {
    local name=$1 pcap=$2 filter=$3 re=${4:-} n=1
    tcpdump -nn -r "$pcap" -w "$WORK/sel.pcap" "$filter" 2>/dev/null
    if [ -n "$re" ]; then
        n=$(tcpdump -# -nn -S -v -r "$WORK/sel.pcap" 2>/dev/null |
            awk -v re="$re" '/^ *[0-9]+ +[0-9][0-9]:/ { n = $1 } $0 ~ re { print n; exit }')
    fi
    [ -n "$n" ] || { echo "$name: no packet matches /$re/ in $pcap" >&2; return 1; }
    python3 - "$WORK/sel.pcap" "$n" "$OUT/$name.pcap" "$OUT/$name.bin" <<'PY'
import struct, sys
src, want, out_pcap, out_bin = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
data = open(src, "rb").read()
assert struct.unpack("<I", data[:4])[0] == 0xA1B2C3D4, "expected a little-endian microsecond pcap"
assert struct.unpack("<I", data[20:24])[0] == 1, "expected LINKTYPE_ETHERNET"
off, index = 24, 0
while off < len(data):
    _, _, caplen, origlen = struct.unpack("<IIII", data[off:off + 16])
    record, frame = data[off:off + 16 + caplen], data[off + 16:off + 16 + caplen]
    off += 16 + caplen
    index += 1
    if index == want:
        break
else:
    sys.exit(f"{src}: only {index} packets, wanted #{want}")
assert caplen == origlen, "packet was truncated by the snap length"
ethertype, ip = struct.unpack("!H", frame[12:14])[0], frame[14:]
if ethertype == 0x0800:
    length = struct.unpack("!H", ip[2:4])[0]
elif ethertype == 0x86DD:
    length = 40 + struct.unpack("!H", ip[4:6])[0]
else:
    sys.exit(f"ethertype {ethertype:#06x} is not IP")
assert len(ip) >= length
open(out_pcap, "wb").write(data[:24] + record)
open(out_bin, "wb").write(ip[:length])
PY
    tcpdump -nn -S -vvv -X -r "$OUT/$name.pcap" >"$OUT/$name.txt" 2>/dev/null
    as_swift "$OUT/$name.bin" >"$OUT/$name.bytes"
}

# pick_dns NAME PCAP FILTER: like pick, plus NAME.dns = the UDP payload of the IPv4 packet.
pick_dns() {
    pick "$@"
    local name=$1 ihl
    ihl=$(( $(od -An -tu1 -N1 "$OUT/$name.bin") & 15 ))
    tail -c +$((ihl * 4 + 8 + 1)) "$OUT/$name.bin" >"$OUT/$name.dns"
    as_swift "$OUT/$name.dns" >"$OUT/$name.bytes"
}

# quoted NAME: tcpdump's decoding of the packet quoted inside the ICMPv6 error NAME.bin (from byte
# 48 on: 40 of IPv6 header, 8 of ICMPv6 header), fed to tcpdump as a LINKTYPE_RAW pcap.
quoted() {
    python3 - "$OUT/$1.bin" "$WORK/quoted.pcap" <<'PY'
import struct, sys
inner = open(sys.argv[1], "rb").read()[48:]
header = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 101)
open(sys.argv[2], "wb").write(header + struct.pack("<IIII", 0, 0, len(inner), len(inner)) + inner)
PY
    tcpdump -nn -S -vvv -r "$WORK/quoted.pcap" >"$OUT/$1.quoted.txt" 2>/dev/null
}

as_swift() { od -An -v -tx1 -w16 "$1" | sed -e 's/^ //' -e 's/\([0-9a-f][0-9a-f]\)/0x\1,/g' -e 's/^/        /'; }

# ---------------------------------------------------------------------------------------------
# Topology 1: client C <-> server S on one veth pair (MTU 1500).
# Topology 2: A <-> R <-> B, forwarding enabled only inside R; R's side towards B has MTU 1280.
for ns in "${NAMESPACES[@]}"; do ip netns add "$ns"; in_ns "$ns" ip link set lo up; done
ip -n "$C" link add c0 type veth peer name s0 netns "$S"
ip -n "$A" link add a0 type veth peer name r0 netns "$R"
ip -n "$R" link add r1 type veth peer name b0 netns "$B"
addr() {  # addr NS DEV V4/LEN V6/LEN
    ip -n "$1" addr add "$3" dev "$2"
    ip -n "$1" -6 addr add "$4" dev "$2" nodad
    # Full software checksums (no TX offload), MTU-sized segments (no TSO/GSO/GRO).
    in_ns "$1" ethtool -K "$2" tx off sg off tso off gso off gro off >/dev/null 2>&1 || true
}
addr "$C" c0 10.77.0.1/24 fd00:77::1/64
addr "$S" s0 10.77.0.2/24 fd00:77::2/64
addr "$A" a0 10.77.1.1/24 fd00:77:1::1/64
addr "$R" r0 10.77.1.2/24 fd00:77:1::2/64
addr "$R" r1 10.77.2.1/24 fd00:77:2::1/64
addr "$B" b0 10.77.2.2/24 fd00:77:2::2/64
ip -n "$R" link set r1 mtu 1280
ip -n "$B" link set b0 mtu 1280
in_ns "$R" sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1

# 12a. MLD reports with a Hop-by-Hop (Router Alert) header, sent as the veth pair comes up.
ip -n "$C" link set c0 up
start_capture "$C" c0 "$WORK/mld.pcap" 'ip6 and ip6[6] == 0'
ip -n "$S" link set s0 up
sleep 3
stop_capture
pick ipv6HopByHopMLD "$WORK/mld.pcap" 'ip6 and ip6[6] == 0 and ip6[40] == 58 and ip6[48] == 143'
for dev in "$A a0" "$R r0" "$R r1" "$B b0"; do set -- $dev; ip -n "$1" link set "$2" up; done
ip -n "$A" route add 10.77.2.0/24 via 10.77.1.2
ip -n "$A" -6 route add fd00:77:2::/64 via fd00:77:1::2
ip -n "$B" route add 10.77.1.0/24 via 10.77.2.1
ip -n "$B" -6 route add fd00:77:1::/64 via fd00:77:2::1
sleep 2

# Servers in S: python's http.server (dual stack) and BIND named with zones written here.
head -c 4194304 /dev/zero >"$WORK/big.bin"
printf 'hello from KtWire fixtures\n' >"$WORK/hello.txt"
ip netns exec "$S" python3 -m http.server --bind :: --directory "$WORK" 8080 >"$WORK/http.log" 2>&1 &
PIDS+=("$!")
cat >"$WORK/named.conf" <<EOF
options {
    directory "$WORK";
    pid-file "$WORK/named.pid";
    session-keyfile "$WORK/session.key";
    listen-on port 53 { 10.77.0.2; };
    listen-on-v6 { none; };
    recursion no;
    dnssec-validation no;
    minimal-responses no;
    notify no;
};
controls { };
zone "kw.test" { type primary; file "$WORK/kw.test.zone"; };
zone "0.77.10.in-addr.arpa" { type primary; file "$WORK/rev.zone"; };
EOF
cat >"$WORK/kw.test.zone" <<'EOF'
$TTL 300
@           IN SOA   ns1.kw.test. hostmaster.kw.test. 2026112201 3600 600 86400 60
            IN NS    ns1.kw.test.
            IN MX    10 mail.kw.test.
            IN CAA   0 issue "letsencrypt.org"
ns1         IN A     10.77.0.2
mail        IN A     10.77.0.25
www     120 IN CNAME alias.kw.test.
alias   180 IN CNAME web.kw.test.
web      60 IN A     10.77.0.80
web      60 IN A     10.77.0.81
web      60 IN AAAA  fd00:77::80
_http._tcp  IN SRV   10 60 8080 web.kw.test.
_http._tcp  IN SRV   20 40 8081 mail.kw.test.
txt         IN TXT   "v=ktconnect1" "hello KtWire world"
EOF
for i in 1 2 3 4 5 6 7 8; do
    printf 'big IN TXT "record %d %s"\n' "$i" "$(printf 'x%.0s' $(seq 90))" >>"$WORK/kw.test.zone"
done
cat >"$WORK/rev.zone" <<'EOF'
$TTL 300
@    IN SOA ns1.kw.test. hostmaster.kw.test. 2026112201 3600 600 86400 60
     IN NS  ns1.kw.test.
80   IN PTR web.kw.test.
81   IN PTR web.kw.test.
EOF
ip netns exec "$S" named -g -n 1 -u root -c "$WORK/named.conf" >"$WORK/named.log" 2>&1 &
PIDS+=("$!")
for _ in $(seq 100); do grep -q "running" "$WORK/named.log" && break; sleep 0.1; done
grep -q "running" "$WORK/named.log" || { cat "$WORK/named.log" >&2; exit 1; }
for _ in $(seq 50); do in_ns "$S" ss -ltn | grep -q ':8080' && break; sleep 0.1; done

# 1-3. IPv4 TCP handshake and a data segment (curl's HTTP request).
start_capture "$C" c0 "$WORK/tcp4.pcap" 'tcp port 8080'
in_ns "$C" curl -sS -o /dev/null http://10.77.0.2:8080/hello.txt
stop_capture
pick ipv4TCPSyn "$WORK/tcp4.pcap" 'tcp[tcpflags] == tcp-syn'
pick ipv4TCPSynAck "$WORK/tcp4.pcap" 'tcp[tcpflags] == tcp-syn|tcp-ack'
pick ipv4TCPDataWithTimestamps "$WORK/tcp4.pcap" \
    'src host 10.77.0.1 and ip[2:2] - ((ip[0] & 0xf) << 2) - ((tcp[12] & 0xf0) >> 2) != 0'

# 4. ACK with SACK blocks: 10% random loss of S's data segments, bulk download by curl in C.
#    This kernel has no netem, so an nftables rule inside C drops arriving segments (S's output
#    hook would only see 64 KiB GSO trains; C's prerouting sees the MSS-sized segments).
in_ns "$C" nft -f - <<'EOF'
table inet kwfix_loss {
    chain in {
        type filter hook prerouting priority -300;
        tcp sport 8080 meta length > 1000 numgen random mod 10 == 0 drop
    }
}
EOF
start_capture "$C" c0 "$WORK/sack.pcap" 'tcp and src host 10.77.0.1'
in_ns "$C" curl -sS --max-time 60 -o /dev/null http://10.77.0.2:8080/big.bin
stop_capture
in_ns "$C" nft delete table inet kwfix_loss
pick ipv4TCPAckWithSACK "$WORK/sack.pcap" 'tcp' 'sack [23] ' ||
    pick ipv4TCPAckWithSACK "$WORK/sack.pcap" 'tcp' 'sack 1 '

# 5. IPv6 TCP SYN.
start_capture "$C" c0 "$WORK/tcp6.pcap" 'ip6 and tcp port 8080'
in_ns "$C" curl -sS -o /dev/null 'http://[fd00:77::2]:8080/hello.txt'
stop_capture
pick ipv6TCPSyn "$WORK/tcp6.pcap" 'ip6[40 + 13] == 0x02'
pick ipv6TCPSynAck "$WORK/tcp6.pcap" 'ip6[40 + 13] == 0x12'

# 6, 13, 14. DNS over UDP between dig in C and named in S.
dns() {  # dns NAME dig-args...
    local name=$1; shift
    start_capture "$C" c0 "$WORK/$name.dns.pcap" 'udp port 53'
    in_ns "$C" dig @10.77.0.2 "$@" >"$OUT/$name.dig" 2>&1 || true
    stop_capture
    pick_dns "$name" "$WORK/$name.dns.pcap" 'udp src port 53'
}
dns dnsAnswerCNAMEChain +qr www.kw.test A  # +qr: dig also prints the query it sent
pick ipv4UDPDNSQuery "$WORK/dnsAnswerCNAMEChain.dns.pcap" 'udp dst port 53'
pick_dns dnsQueryFromDig "$WORK/dnsAnswerCNAMEChain.dns.pcap" 'udp dst port 53'
dns dnsAnswerAAAA web.kw.test AAAA
dns dnsAnswerSRV _http._tcp.kw.test SRV
dns dnsAnswerPTR -x 10.77.0.80
dns dnsAnswerTXT txt.kw.test TXT
dns dnsAnswerNXDomainSOA nope.kw.test A
dns dnsAnswerNS kw.test NS
dns dnsAnswerMX kw.test MX
dns dnsAnswerUnknownType +unknownformat kw.test CAA  # dig prints rdata as \# LEN HEX
dns dnsAnswerTruncated +noedns +ignore big.kw.test TXT

# 7, 8, 10. ICMPv4 echo, port unreachable, fragments.
start_capture "$C" c0 "$WORK/icmp4.pcap" 'icmp'
in_ns "$C" ping -c1 -W2 10.77.0.2 >"$WORK/ping.log"
in_ns "$C" bash -c 'echo "KtWire probe" >/dev/udp/10.77.0.2/33434'
stop_capture
pick icmpv4EchoRequest "$WORK/icmp4.pcap" 'icmp[icmptype] == icmp-echo'
pick icmpv4EchoReply "$WORK/icmp4.pcap" 'icmp[icmptype] == icmp-echoreply'
pick icmpv4PortUnreachable "$WORK/icmp4.pcap" 'icmp[icmptype] == icmp-unreach and icmp[icmpcode] == 3'
start_capture "$C" c0 "$WORK/frag4.pcap" 'ip'
in_ns "$C" ping -c1 -W2 -s 3000 10.77.0.2 >"$WORK/ping.log"
stop_capture
pick ipv4FirstFragment "$WORK/frag4.pcap" 'src host 10.77.0.1 and ip[6:2] & 0x3fff == 0x2000'
pick ipv4LastFragment "$WORK/frag4.pcap" 'src host 10.77.0.1 and ip[6:2] & 0x2000 == 0 and ip[6:2] & 0x1fff != 0'

# 11, 12b. ICMPv6 echo, port unreachable, fragments.
start_capture "$C" c0 "$WORK/icmp6.pcap" 'ip6'
in_ns "$C" ping -6 -c1 -W2 fd00:77::2 >"$WORK/ping.log"
in_ns "$C" bash -c 'echo "KtWire probe" >/dev/udp/fd00:77::2/33434'
sleep 0.5
in_ns "$C" ping -6 -c1 -W2 -s 3000 fd00:77::2 >"$WORK/ping.log"
stop_capture
pick icmpv6EchoRequest "$WORK/icmp6.pcap" 'icmp6 and ip6[40] == 128'
pick icmpv6EchoReply "$WORK/icmp6.pcap" 'icmp6 and ip6[40] == 129'
pick icmpv6PortUnreachable "$WORK/icmp6.pcap" 'icmp6 and ip6[40] == 1 and ip6[41] == 4'
pick ipv6Fragment "$WORK/icmp6.pcap" 'src host fd00:77::1 and ip6[6] == 44 and ip6[42:2] & 0xfff9 == 1'
pick ipv6LastFragment "$WORK/icmp6.pcap" 'src host fd00:77::1 and ip6[6] == 44 and ip6[42:2] & 0x0001 == 0'

# 9, 11. Errors generated by the router R, captured on A's veth.
start_capture "$A" a0 "$WORK/routed.pcap" 'icmp or icmp6'
in_ns "$A" ping -c1 -W2 -t 1 10.77.2.2 >"$WORK/ping.log" || true
in_ns "$A" ping -6 -c1 -W2 -t 1 fd00:77:2::2 >"$WORK/ping.log" || true
in_ns "$A" ping -6 -c1 -W2 -s 1400 -M do fd00:77:2::2 >"$WORK/ping.log" || true
stop_capture
pick icmpv4TimeExceeded "$WORK/routed.pcap" 'icmp[icmptype] == icmp-timxceed'
pick icmpv6TimeExceeded "$WORK/routed.pcap" 'icmp6 and ip6[40] == 3'
pick icmpv6PacketTooBig "$WORK/routed.pcap" 'icmp6 and ip6[40] == 2'
quoted icmpv6PortUnreachable
quoted icmpv6TimeExceeded
quoted icmpv6PacketTooBig

{
    date -u '+captured %Y-%m-%d %H:%M:%S UTC'
    uname -sr
    tcpdump --version 2>&1 | head -2
    named -v
    dig -v 2>&1
    ping -V | head -1
    curl --version | head -1
    ip -V
} >"$OUT/versions.txt"
echo "fixtures written to $OUT:"
ls "$OUT"
