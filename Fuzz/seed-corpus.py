#!/usr/bin/env python3
"""Seeds each fuzzer's corpus with the real packets in Tests/KtWireTests/CapturedPackets.swift.

Usage: seed-corpus.py CORPUS_DIR. Writes CORPUS_DIR/<Fuzzer>/seed-<name>; existing files are kept, so the
corpus grows across runs.
"""
import json
import os
import re
import sys

root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
source = open(os.path.join(root, "Tests/KtWireTests/CapturedPackets.swift")).read()
fixtures = {
    name: bytes(int(b, 16) for b in re.findall(r"0x([0-9a-fA-F]{2})", body))
    for name, body in re.findall(r"static let (\w+): \[UInt8\] = \[(.*?)\]", source, re.S)
}


def transport(packet):
    """The IP payload after the IPv4 header or the fixed IPv6 header (extension headers are left in)."""
    if packet[0] >> 4 == 4:
        return packet[(packet[0] & 0x0F) * 4:]
    return packet[40:]


seeds = {name: [] for name in ["FuzzIPv4", "FuzzIPv6", "FuzzTCP", "FuzzUDP", "FuzzICMP", "FuzzDNS", "FuzzAddressText", "FuzzStack", "FuzzTunnel", "FuzzKube", "FuzzProxy", "FuzzFlags", "FuzzImage"]}
for name, data in fixtures.items():
    if name.startswith("dns"):
        seeds["FuzzDNS"].append((name, data))
        continue
    seeds["FuzzIPv4" if data[0] >> 4 == 4 else "FuzzIPv6"].append((name, data))
    kind = "FuzzTCP" if "TCP" in name else "FuzzUDP" if "UDP" in name else "FuzzICMP" if "icmp" in name else None
    if kind:
        seeds[kind].append((name, transport(data)))
for index, text in enumerate(["10.96.0.10", "fd00::1", "::ffff:10.0.0.1", "10.96.0.0/12", "fd00:10::/64",
                              "tomcat.default.svc.cluster.local.", "a\\.b.c\\032d", "2001:db8::2:1"]):
    seeds["FuzzAddressText"].append((f"text{index}", text.encode()))

# FuzzStack reads a setup byte then operations; a few hand-made scripts start it in different states.
seeds["FuzzStack"] += [
    ("established-data", bytes([0, 0, 0x18, 0, 0, 0, 0, 10, 0xff, 0xff, 1, 5, 3, 0, 100])),
    ("closing", bytes([0, 6, 4, 0, 200, 0, 0x11, 0, 0, 0, 0, 0, 0xff, 0xff, 0, 3, 0x10, 0])),
    ("dialing", bytes([32, 3, 0x27, 0x10, 0, 0x04, 0, 0, 0, 0, 0, 0, 0, 0])),
]

# FuzzTunnel: a selector byte, then the format's text or bytes.
seeds["FuzzTunnel"] += [
    ("frames", bytes([0]) + bytes([0, 14, 0, 0, 0, 0, 1, 4, 10, 96, 0, 10, 0, 53, ord("q"), ord("x")])
     + bytes([0, 8, 2, 0, 0, 0, 7, 0, 0, 53])),
    ("status-ok", b"\x01ok\nbytes"),
    ("status-err", b"\x01err refused connection refused\n"),
    ("why", b"\x02why tomcat 8080"),
    ("why-answer", b"\x02why tomcat 8080 err refused connection refused"),
    ("resolv", b"\x03search default.svc.cluster.local svc.cluster.local cluster.local\nnameserver 10.96.0.10\n"
     b"options ndots:5 timeout:2\n"),
    ("hosts", b"\x04127.0.0.1 localhost\n10.1.2.3 shadow shadow-abc # pod\n"),
    ("keys", b"\x05# session\nssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHhpaGlodGhpc2lzbm90YXJlYWxrZXlhdGFsbDAwMDA= kt\n"),
]

# FuzzImage: a selector byte, then an image name or a pod document.
seeds["FuzzImage"] += [
    ("name-short", b"\x00kt-shadow:0.1.0"),
    ("name-registry", b"\x00localhost:5000/team/kt-shadow:dev"),
    ("name-digest", b"\x00ghcr.io/a/b@sha256:" + b"a" * 64),
    ("pod", b"\x01" + json.dumps({"metadata": {"name": "p"}, "spec": {"securityContext": {"runAsUser": 1,
        "sysctls": [{"name": "net.ipv4.ping_group_range", "value": "0 1"}]}, "containers": [{"name": "c",
        "command": ["/a"], "args": ["b"], "securityContext": {"readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"], "add": ["net_admin"]}}}]}}).encode()),
]

# FuzzKube: a selector byte, then a kubeconfig, a watch body, an exec answer, an error body or an object.
fixtures_dir = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "Tests", "KubeKitTests", "Fixtures")
seeds["FuzzKube"] += [
    ("kubeconfig", b"\x00current-context: c\ncontexts: [{name: c, context: {cluster: k, user: u, namespace: n}}]\n"
     b"clusters: [{name: k, cluster: {server: 'https://127.0.0.1:6443', insecure-skip-tls-verify: true}}]\n"
     b"users: [{name: u, user: {token: t}}]\n"),
    ("watch", b"\x01" + b'{"type":"ADDED","object":{"metadata":{"name":"a","resourceVersion":"1"}}}\n'
     b'{"type":"ERROR","object":{"kind":"Status","code":410,"reason":"Expired","message":"too old"}}\n'),
    ("exec", b'\x02{"apiVersion":"client.authentication.k8s.io/v1","kind":"ExecCredential",'
     b'"status":{"token":"t","expirationTimestamp":"2026-11-22T12:00:00Z"}}'),
    ("status", b'\x03{"kind":"Status","apiVersion":"v1","status":"Failure","message":"nope","reason":"Forbidden","code":403}'),
    ("http-date", b"\x05Fri, 04 Dec 2026 19:36:05 GMT"),
    ("microtime", b"\x052026-12-04T19:36:05.123456Z"),
]
for name in ["deployment.json"]:
    with open(os.path.join(fixtures_dir, name), "rb") as handle:
        seeds["FuzzKube"].append((name, b"\x04" + handle.read()))

# FuzzProxy: a selector byte, then a SOCKS5 greeting and request, an HTTP proxy head, or a SOCKS UDP datagram.
seeds["FuzzProxy"] += [
    ("socks-name", b"\x00\x05\x01\x00\x05\x01\x00\x03\x06tomcat\x1f\x90"),
    ("socks-v6", b"\x00\x05\x02\x00\x02\x05\x03\x00\x04" + bytes(15) + b"\x01\x00\x35"),
    ("http-connect", b"\x01CONNECT tomcat.default:8080 HTTP/1.1\r\nHost: tomcat.default:8080\r\n\r\n"),
    ("http-get", b"\x01GET http://[::1]:8080/a?b HTTP/1.1\r\nProxy-Connection: keep-alive\r\nAccept: */*\r\n\r\n"),
    ("udp", b"\x02\x00\x00\x00\x01\x0a\x60\x00\x0a\x00\x35payload"),
    ("rfc1929", b"\x03\x01\x03dev\x06s3cret"),
    ("basic", b"\x04Basic ZGV2OnMzY3JldA=="),
    ("proc-net-tcp", b"\x04  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid\n"
     b"   1: 0100007F:08AF 0100007F:08AF 01 00000000:00000000 00:00000000 00000000 65534 0 2 1\n"),
]

# FuzzFlags: a selector byte, then an --expose list, a target, forward's ports, a Service name, a kt-selector.
seeds["FuzzFlags"] += [
    ("expose", b"\x008080,9090:80,7000:http"),
    ("target", b"\x01deploy/tomcat"),
    ("forward", b"\x026060:http"),
    ("name", b"\x03tomcat-v2"),
    ("selector", b'\x04{"app":"tomcat","tier":"web"}'),
]
seeds["FuzzTunnel"] += [("udp-listen", b"\x06kt-udp-listen 9999")]

for fuzzer, items in seeds.items():
    directory = os.path.join(sys.argv[1], fuzzer)
    os.makedirs(directory, exist_ok=True)
    for name, data in items:
        with open(os.path.join(directory, "seed-" + name), "wb") as handle:
            handle.write(data)
print("seeded", ", ".join(f"{fuzzer} {len(items)}" for fuzzer, items in seeds.items()))
