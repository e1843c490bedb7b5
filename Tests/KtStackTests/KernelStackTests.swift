import Foundation
import Glibc
import KtStack
import KtWire
import NamespaceTestSupport
import Testing

let kernelUnavailable: String? = {
    if let reason = TestNamespace.unavailableReason { return reason }
    if access("/dev/net/tun", R_OK | W_OK) != 0 { return "needs /dev/net/tun" }
    if TestNamespace.findExecutable("curl") == nil { return "needs curl" }
    return nil
}()

/// The Linux kernel's TCP as KtStack's peer, through a TUN in a throwaway namespace.
@Suite(.serialized, .enabled(if: kernelUnavailable == nil, "needs root, /dev/net/tun and curl"))
struct KernelStackTests {
    /// Bytes for the big transfers. Set KT_STACK_BIG_BYTES to override (the issue's figure is 1 GiB).
    static let bigTransfer = Int(ProcessInfo.processInfo.environment["KT_STACK_BIG_BYTES"] ?? "") ?? 1024 * 1024 * 1024

    /// sha256 of `size` bytes of the pattern, computed by Python (not by anything in this repository).
    static func expectedDigest(_ size: Int) throws -> String {
        let script =
            "import hashlib,sys; n=\(size); b=bytes(i % 251 for i in range(251*4096)); h=hashlib.sha256(); "
            + "[h.update(b[:min(len(b)-len(b)%251, n-i)]) for i in range(0, n, len(b)-len(b)%251)]; print(h.hexdigest())"
        let result = try TestNamespace.run(["python3", "-c", script], timeout: 300)
        return result.output.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    @Test(arguments: [false, true])
    func curlDownloadIsByteExact(v6: Bool) throws {
        let harness = try KernelHarness(prefix: "ktstack-get")
        defer { harness.stop() }
        let size = Self.bigTransfer
        let host = v6 ? "[fd00:96::15]" : "10.96.0.15"
        let started = Date()
        let result = try harness.shell("curl -sS --max-time 600 http://\(host)/\(size) | sha256sum", timeout: 620)
        let seconds = Date().timeIntervalSince(started)
        #expect(result.status == 0, "\(result.error)")
        #expect(result.output.hasPrefix(try Self.expectedDigest(size)), "sha256 of what curl received")
        print(
            "download \(size >> 20) MiB over IPv\(v6 ? 6 : 4): \(String(format: "%.1f", seconds)) s, \(String(format: "%.0f", Double(size) / seconds / 1e6)) MB/s"
        )
    }

    /// Without a virtio header every segment is its own read and write: the path a TUN without offloads takes.
    @Test func downloadWithoutOffloads() throws {
        let harness = try KernelHarness(prefix: "ktstack-plain", virtioHeader: false)
        defer { harness.stop() }
        let size = Self.bigTransfer / 16
        let started = Date()
        let result = try harness.shell("curl -sS --max-time 600 http://10.96.0.15/\(size) | sha256sum", timeout: 620)
        let seconds = Date().timeIntervalSince(started)
        #expect(result.status == 0, "\(result.error)")
        #expect(result.output.hasPrefix(try Self.expectedDigest(size)), "sha256 of what curl received")
        print(
            "download without offloads \(size >> 20) MiB: \(String(format: "%.1f", seconds)) s, \(String(format: "%.0f", Double(size) / seconds / 1e6)) MB/s"
        )
    }

    @Test(arguments: [false, true])
    func uploadIsByteExact(v6: Bool) throws {
        let harness = try KernelHarness(prefix: "ktstack-put")
        defer { harness.stop() }
        let size = Self.bigTransfer
        let host = v6 ? "fd00:96::15" : "10.96.0.15"
        let script =
            "import socket; b=bytes(i % 251 for i in range(251*4096)); s=socket.create_connection(('\(host)', 9)); "
            + "n=\(size); step=len(b)-len(b)%251\n"
            + "while n>0:\n  k=min(n,step); s.sendall(b[:k]); n-=k\n"
            + "s.shutdown(socket.SHUT_WR); s.recv(1); s.close()"
        let started = Date()
        let result = try harness.shell("python3 -c \"\(script)\"", timeout: 620)
        let seconds = Date().timeIntervalSince(started)
        #expect(result.status == 0, "\(result.error)")
        let discard = try #require(harness.discards.first)
        #expect(
            discard.bytes == size && discard.correct,
            "the stack received \(discard.bytes) of \(size) bytes, pattern intact: \(discard.correct)")
        print(
            "upload \(size >> 20) MiB over IPv\(v6 ? 6 : 4): \(String(format: "%.1f", seconds)) s, \(String(format: "%.0f", Double(size) / seconds / 1e6)) MB/s"
        )
    }

    @Test func refusedDialGivesECONNREFUSEDAtOnce() throws {
        let harness = try KernelHarness(prefix: "ktstack-refused")
        defer { harness.stop() }
        let script =
            "import socket,time,errno\nfor host in ['10.96.0.15', 'fd00:96::15']:\n  t=time.time()\n  try:\n    "
            + "socket.create_connection((host, 1), timeout=5); print('connected')\n  except OSError as e:\n    "
            + "print(errno.errorcode.get(e.errno), round(time.time()-t, 3))"
        let result = try harness.shell("python3 -c \"\(script)\"")
        let lines = result.output.split(separator: "\n").map { $0.split(separator: " ") }
        #expect(lines.count == 2 && lines.allSatisfy { $0.first == "ECONNREFUSED" }, "\(result.output) \(result.error)")
        #expect(
            lines.allSatisfy { Double($0.last ?? "9") ?? 9 < 0.5 }, "refused within half a second: \(result.output)")
    }

    /// `ss -ti` shows the kernel's view (wscale, mss); this iproute2 (6.1) does not print the `ts` and `sack` words
    /// on this kernel even between two kernel sockets, so the same tcp_info is also read through getsockopt.
    @Test(arguments: [false, true])
    func kernelNegotiatesWindowScalingSACKAndTimestamps(v6: Bool) throws {
        let harness = try KernelHarness(prefix: "ktstack-ss")
        defer { harness.stop() }
        let host = v6 ? "fd00:96::15" : "10.96.0.15"
        let script =
            "import socket,subprocess,time; s=socket.create_connection(('\(host)', 6000)); time.sleep(0.3); "
            + "i=s.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104); print('options', i[5], 'wscale', i[6] & 15, i[6] >> 4); "
            + "print(subprocess.run(['ss', '-tin'], capture_output=True, text=True).stdout, flush=True)"
        // ss runs while the connection is open, however slowly python starts (a fixed `sleep 1` lost that race
        // under the full suite's load).
        let result = try harness.shell("python3 -c \"\(script)\"")
        #expect(
            result.output.contains("wscale:7,10"),
            "ss: the kernel sends with our shift 7 and receives with its 10: \(result.output)")
        let mss = v6 ? 1428 : 1448
        #expect(result.output.contains("mss:\(mss)"), "ss: the MSS minus 12 bytes of timestamps: \(result.output)")
        // tcpi_options: TCPI_OPT_TIMESTAMPS 1 | TCPI_OPT_SACK 2 | TCPI_OPT_WSCALE 4; then snd_wscale (ours), rcv_wscale.
        #expect(result.output.contains("options 7 wscale 7 10"), "\(result.output)")
        let info = try #require(harness.connectedInfos.first)
        #expect(info.sackPermitted && info.timestamps && info.peerWindowScale == 10 && info.sendMSS == mss)
    }

    @Test func dnsOverUDPIsAnsweredAndIdleFlowsExpire() throws {
        let harness = try KernelHarness(prefix: "ktstack-dns") { $0.udpIdleTimeout = .milliseconds(500) }
        defer { harness.stop() }
        let result = try harness.shell("dig +short +tries=1 +time=2 @10.96.0.10 tomcat.default.svc.cluster.local A")
        #expect(
            result.output.trimmingCharacters(in: .whitespacesAndNewlines) == "10.96.0.53",
            "\(result.output) \(result.error)")
        let six = try harness.shell("dig +short +tries=1 +time=2 @fd00:96::a tomcat.default.svc.cluster.local A")
        #expect(
            six.output.trimmingCharacters(in: .whitespacesAndNewlines) == "10.96.0.53", "\(six.output) \(six.error)")
        #expect(harness.dnsQueries == 2)
        Thread.sleep(forTimeInterval: 1.2)
        #expect(harness.udpExpired == 2, "both UDP flows forgotten after 500 ms idle")
    }

    @Test func pingIsAnsweredByTheEngine() throws {
        let harness = try KernelHarness(prefix: "ktstack-ping")
        defer { harness.stop() }
        let result = try harness.shell("ping -c 2 -i 0.2 -W 2 10.96.0.15 && ping -6 -c 2 -i 0.2 -W 2 fd00:96::15")
        #expect(result.status == 0, "\(result.output) \(result.error)")
    }

    // MARK: - A lossy, reordering, duplicating path

    @Test(arguments: [false, true])
    func impairedPathStaysByteExact(v6: Bool) throws {
        let impairment = KernelHarness.Impairment(loss: 0.01, duplication: 0.01, reordering: 0.05)
        // The reference: the kernel's TCP at both ends of the same impairments, in this run.
        let relay = try ImpairedRelay(impairment: impairment)
        let reference: (download: Double, upload: Double)
        do {
            reference = try relay.iperf()
            relay.stop()
        } catch {
            relay.stop()
            throw error
        }
        // Per-packet impairment, as netem would do it: no super-packets, so each loss is one MSS segment.
        let harness = try KernelHarness(prefix: "ktstack-lossy", virtioHeader: false, impairment: impairment)
        defer { harness.stop() }
        let size = Self.bigTransfer
        let host = v6 ? "fd00:96::15" : "10.96.0.15"
        let started = Date()
        let download = try harness.shell(
            "curl -sS --max-time 600 http://\(v6 ? "[\(host)]" : host)/\(size) | sha256sum", timeout: 620)
        #expect(download.status == 0, "\(download.error)")
        #expect(download.output.hasPrefix(try Self.expectedDigest(size)), "download sha256 over a lossy path")
        let downloadSeconds = Date().timeIntervalSince(started)
        let uploadStarted = Date()
        let script =
            "import socket; b=bytes(i % 251 for i in range(251*4096)); s=socket.create_connection(('\(host)', 9)); "
            + "n=\(size); step=len(b)-len(b)%251\n"
            + "while n>0:\n  k=min(n,step); s.sendall(b[:k]); n-=k\n"
            + "s.shutdown(socket.SHUT_WR); s.recv(1); s.close()"
        let upload = try harness.shell("python3 -c \"\(script)\"", timeout: 620)
        #expect(upload.status == 0, "\(upload.error)")
        let uploadSeconds = Date().timeIntervalSince(uploadStarted)
        let discard = try #require(harness.discards.first)
        #expect(
            discard.bytes == size && discard.correct,
            "upload: \(discard.bytes) of \(size) bytes, pattern intact: \(discard.correct)")
        let downloadRate = Double(size) / downloadSeconds
        let uploadRate = Double(size) / uploadSeconds
        func megabytes(_ rate: Double) -> String { String(format: "%.0f MB/s", rate / 1e6) }
        print(
            "lossy path IPv\(v6 ? 6 : 4): \(size >> 20) MiB each way; download \(megabytes(downloadRate)) "
                + "(kernel to kernel over the same impairments \(megabytes(reference.download)), "
                + String(format: "%.2f×", downloadRate / reference.download) + "), upload \(megabytes(uploadRate)) "
                + "(kernel \(megabytes(reference.upload)), " + String(format: "%.2f×", uploadRate / reference.upload)
                + ")")
        // A stall (a timeout backing off, a lost retransmission waiting for it) costs orders of magnitude; a floor of
        // a twentieth of the kernel's own rate on the same impairments fails it and leaves room for a busy machine.
        #expect(downloadRate >= reference.download / 20, "download stalled: \(megabytes(downloadRate))")
        #expect(uploadRate >= reference.upload / 20, "upload stalled: \(megabytes(uploadRate))")
    }

    // MARK: - Many flows

    @Test(arguments: [false, true])
    func thousandConcurrentConnectionsEachMove64KiB(v6: Bool) throws {
        let harness = try KernelHarness(prefix: "ktstack-many")
        defer { harness.stop() }
        let script = """
            import asyncio
            async def one(i):
                r, w = await asyncio.open_connection('\(v6 ? "fd00:96::15" : "10.96.0.15")', 80)
                w.write(b'GET /65536 HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n'); await w.drain()
                data = await r.read()
                body = data.split(b'\\r\\n\\r\\n', 1)[1]
                w.close()
                return body == bytes(i % 251 for i in range(65536))
            async def main():
                results = await asyncio.gather(*[one(i) for i in range(1000)], return_exceptions=True)
                print(sum(1 for r in results if r is True), 'ok of', len(results))
            asyncio.run(main())
            """
        let started = Date()
        let result = try harness.shell("ulimit -n 4096; python3 - <<'PYEOF'\n\(script)\nPYEOF", timeout: 300)
        #expect(result.output.contains("1000 ok of 1000"), "\(result.output) \(result.error)")
        print(
            "1000 concurrent 64 KiB downloads over IPv\(v6 ? 6 : 4): \(String(format: "%.1f", Date().timeIntervalSince(started))) s"
        )
    }

    @Test(arguments: [false, true])
    func tenThousandIdleConnectionsAndTheirMemory(v6: Bool) throws {
        let harness = try KernelHarness(prefix: "ktstack-idle")
        defer { harness.stop() }
        let before = residentBytes()
        let script = """
            import socket, time, sys
            socks = []
            for i in range(10000):
                s = socket.socket(socket.AF_INET6 if \(v6 ? "True" : "False") else socket.AF_INET); s.setblocking(False)
                try: s.connect(('\(v6 ? "fd00:96::15" : "10.96.0.15")', 6000))
                except BlockingIOError: pass
                socks.append(s)
            import select
            # A burst of 10000 SYNs overflows the TUN's transmit queue (500): the kernel retries dropped ones after
            # 1 s and 3 s, so wait until every socket is writable (connected) or 20 s pass.
            deadline = time.time() + 20
            poller = select.poll()
            for s in socks: poller.register(s, select.POLLOUT)
            pending = {s.fileno() for s in socks}
            while pending and time.time() < deadline:
                for fd, _ in poller.poll(500):
                    if fd in pending:
                        pending.discard(fd); poller.unregister(fd)
            ok = sum(1 for s in socks if s.fileno() not in pending and s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0)
            print(ok, 'connected')
            sys.stdout.flush()
            time.sleep(3)
            """
        let client = try BackgroundShell(harness.namespace, "ulimit -n 20000; python3 - <<'PYEOF'\n\(script)\nPYEOF")
        var flows = 0
        for _ in 0..<250 where flows < 10000 {
            Thread.sleep(forTimeInterval: 0.1)
            flows = harness.flowCount
        }
        Thread.sleep(forTimeInterval: 0.5)
        let after = residentBytes()
        let output = client.finish()
        #expect(flows >= 10000, "flows held: \(flows)")
        #expect(output.contains("10000 connected"), "\(output)")
        let perFlow = (after - before) / max(flows, 1)
        print(
            "10000 idle flows: \(flows) held, resident memory +\((after - before) >> 10) KiB, \(perFlow) bytes per idle flow"
        )
        #expect(perFlow < 16 * 1024, "memory per idle flow \(perFlow) bytes")
    }
}

/// This process's resident set, from /proc.
func residentBytes() -> Int {
    guard let status = try? String(contentsOfFile: "/proc/self/statm", encoding: .utf8) else { return 0 }
    let pages = status.split(separator: " ").dropFirst().first.flatMap { Int($0) } ?? 0
    return pages * Int(sysconf(Int32(_SC_PAGESIZE)))
}

/// A shell command in a namespace, collected when the test is done with it.
final class BackgroundShell: @unchecked Sendable {
    let process = Process()
    let output = Pipe()

    init(_ namespace: TestNamespace, _ command: String) throws {
        process.executableURL = URL(fileURLWithPath: TestNamespace.findExecutable("ip") ?? "/usr/sbin/ip")
        process.arguments = ["netns", "exec", namespace.name, "bash", "-c", command]
        process.standardOutput = output
        process.standardError = output
        try process.run()
    }

    func finish() -> String {
        let data = output.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return String(decoding: data, as: UTF8.self)
    }
}
