#!/usr/bin/env python3
"""Clients for bench/whole-path.sh, each timing with perf_counter in one process.

    latency HOST PORT COUNT [--socks PROXYHOST:PROXYPORT]
        COUNT sequential connections, each: connect (through a SOCKS5 proxy when given: greeting and CONNECT
        included), one `GET /small` as curl sends it (TCP_NODELAY, keep-alive), read the whole answer, close.
        Prints "p50 p99 connect_p50 connect_p99 failures" in ms (connect = until the socket is usable).
    dns SERVER NAME COUNT
        COUNT A queries over UDP to SERVER:53, one at a time; each `{}` in NAME becomes a fresh random label (an
        uncached name every time). Prints "p50 p99 failures noerror nxdomain" in ms.
    hold HOST PORT COUNT
        Opens COUNT connections, does one keep-alive `GET /small` on each, prints "ready N" and holds them
        until killed.
"""
import os
import secrets
import signal
import socket
import struct
import sys
import time

REQUEST = b"GET /small HTTP/1.1\r\nHost: bench\r\nUser-Agent: whole-path\r\nAccept: */*\r\n\r\n"


def percentile(values, fraction):
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))]


def receive_exactly(sock, count):
    data = b""
    while len(data) < count:
        chunk = sock.recv(count - len(data))
        if not chunk:
            raise ConnectionError("closed")
        data += chunk
    return data


def socks5_connect(sock, host, port):
    sock.sendall(b"\x05\x01\x00")
    if receive_exactly(sock, 2) != b"\x05\x00":
        raise ConnectionError("SOCKS5 method refused")
    try:
        address = b"\x01" + socket.inet_aton(host)
    except OSError:
        address = b"\x03" + bytes([len(host)]) + host.encode()
    sock.sendall(b"\x05\x01\x00" + address + struct.pack("!H", port))
    reply = receive_exactly(sock, 4)
    if reply[1] != 0:
        raise ConnectionError("SOCKS5 CONNECT failed: %d" % reply[1])
    kind = reply[3]
    length = 4 if kind == 1 else 16 if kind == 4 else receive_exactly(sock, 1)[0]
    receive_exactly(sock, length + 2)


def read_answer(sock):
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError("closed before the answer")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(body) < length:
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError("closed in the body")
        body += chunk
    if not head.startswith(b"HTTP/1.1 200"):
        raise ConnectionError("answer: %r" % head[:40])


def open_connection(host, port, socks):
    if socks:
        proxy_host, _, proxy_port = socks.rpartition(":")
        sock = socket.create_connection((proxy_host, int(proxy_port)), timeout=10)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        socks5_connect(sock, host, port)
    else:
        sock = socket.create_connection((host, port), timeout=10)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def latency(host, port, count, socks):
    totals, connects, failures = [], [], 0
    for _ in range(count):
        start = time.perf_counter()
        try:
            sock = open_connection(host, port, socks)
            connected = time.perf_counter()
            sock.sendall(REQUEST)
            read_answer(sock)
            sock.close()
        except OSError:
            failures += 1
            continue
        end = time.perf_counter()
        totals.append((end - start) * 1000)
        connects.append((connected - start) * 1000)
    print("%.3f %.3f %.3f %.3f %d" % (percentile(totals, 0.5), percentile(totals, 0.99), percentile(connects, 0.5),
                                      percentile(connects, 0.99), failures))


def dns_query(name):
    ident = secrets.randbits(16)
    question = b"".join(bytes([len(label)]) + label.encode() for label in name.strip(".").split(".")) + b"\x00"
    return ident, struct.pack("!HHHHHH", ident, 0x0100, 1, 0, 0, 0) + question + struct.pack("!HH", 1, 1)


def dns(server, name, count):
    times, failures, noerror, nxdomain = [], 0, 0, 0
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.settimeout(2)
    sock.connect((server, 53))
    for _ in range(count):
        query_name = name.replace("{}", secrets.token_hex(6))
        ident, packet = dns_query(query_name)
        start = time.perf_counter()
        sock.send(packet)
        try:
            while True:
                answer = sock.recv(4096)
                if len(answer) >= 12 and struct.unpack("!H", answer[:2])[0] == ident:
                    break
        except OSError:
            failures += 1
            continue
        times.append((time.perf_counter() - start) * 1000)
        rcode = answer[3] & 0x0F
        noerror += rcode == 0
        nxdomain += rcode == 3
    print("%.3f %.3f %d %d %d" % (percentile(times, 0.5), percentile(times, 0.99), failures, noerror, nxdomain))


def hold(host, port, count):
    held = []
    for _ in range(count):
        sock = open_connection(host, port, None)
        sock.sendall(REQUEST)
        read_answer(sock)
        held.append(sock)
    print("ready %d" % len(held), flush=True)
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    while True:
        time.sleep(3600)


def main():
    command, arguments = sys.argv[1], sys.argv[2:]
    socks = None
    if "--socks" in arguments:
        index = arguments.index("--socks")
        socks = arguments[index + 1]
        del arguments[index:index + 2]
    if command == "latency":
        latency(arguments[0], int(arguments[1]), int(arguments[2]), socks)
    elif command == "dns":
        dns(arguments[0], arguments[1], int(arguments[2]))
    elif command == "hold":
        hold(arguments[0], int(arguments[1]), int(arguments[2]))
    else:
        sys.exit("unknown command " + command)


if __name__ == "__main__":
    main()
