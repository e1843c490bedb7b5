import Foundation
import Glibc
import KtTunnel
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import NIOSSH
import NamespaceTestSupport
import ShadowKit

/// KtTunnel next to OpenSSH, in one namespace made here: `iperf3` through a local forward port, once through
/// KtTunnel's client → kt-shadow (in this process, each on its own thread) and once through `ssh -N -L` → `sshd`
/// with AES-128-GCM, 1 and 8 parallel streams; then flow-open latency (connect, one byte echoed) through each.
enum TunnelBenchmarks {
    static let seconds = 5

    static func run() -> String {
        if let reason = TestNamespace.unavailableReason { return "tunnel benchmarks skipped: \(reason)" }
        for tool in ["iperf3", "ssh", "ssh-keygen"] where TestNamespace.findExecutable(tool) == nil {
            return "tunnel benchmarks skipped: needs \(tool)"
        }
        guard FileManager.default.isExecutableFile(atPath: "/usr/sbin/sshd") else {
            return "tunnel benchmarks skipped: needs openssh-server"
        }
        do {
            return try measure()
        } catch {
            return "tunnel benchmark failed: \(error)"
        }
    }

    static func measure() throws -> String {
        // What kt-shadow and ktctl do at start.
        AllocatorTuning.apply()
        let namespace = try TestNamespace(prefix: "ktbench-ssh")
        defer { namespace.delete() }
        let directory = NSTemporaryDirectory() + namespace.name
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        // Two single-thread groups whose threads live in the namespace: one for kt-shadow, one for the client.
        let (shadowGroup, clientGroup) = try namespace.inside {
            (MultiThreadedEventLoopGroup(numberOfThreads: 1), MultiThreadedEventLoopGroup(numberOfThreads: 1))
        }
        defer {
            try? shadowGroup.syncShutdownGracefully()
            try? clientGroup.syncShutdownGracefully()
        }
        var processes: [BackgroundProcess] = []
        defer { for process in processes { process.stop() } }
        func spawn(_ arguments: [String]) throws -> BackgroundProcess {
            let process = try BackgroundProcess(namespace, arguments)
            processes.append(process)
            return process
        }

        // The sink (iperf3 server) and an echo server for the latency rows.
        let iperf = try spawn(["iperf3", "-s", "-B", "127.0.0.1", "-p", "5201"])
        _ = iperf.waitForOutput("Server listening", timeout: 5)
        // One asyncio process: no fork per connection, so the latency rows measure the tunnels, not the echo.
        let echo = try spawn([
            "python3", "-c",
            "import asyncio\nasync def h(r, w):\n    while d := await r.read(65536):\n        w.write(d)\n        await w.drain()\n"
                + "    w.close()\nasync def m():\n    s = await asyncio.start_server(h, '127.0.0.1', 7)\n    await s.serve_forever()\n"
                + "asyncio.run(m())",
        ])
        waitForListener(namespace, port: 7)

        // OpenSSH: sshd with the session key, ssh -N -L for iperf3 and for the echo port.
        let key = SessionKey()
        try key.writePrivateKey(to: directory + "/id")
        try (key.authorizedKeysLine() + "\n").write(
            toFile: directory + "/authorized_keys", atomically: true, encoding: .utf8)
        _ = try TestNamespace.check(
            TestNamespace.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", directory + "/hostkey"]))
        try """
        Port 2201
        ListenAddress 127.0.0.1
        HostKey \(directory)/hostkey
        AuthorizedKeysFile \(directory)/authorized_keys
        PidFile \(directory)/sshd.pid
        UsePAM no
        StrictModes no
        PermitRootLogin prohibit-password
        PasswordAuthentication no
        Ciphers aes128-gcm@openssh.com

        """.write(toFile: directory + "/sshd_config", atomically: true, encoding: .utf8)
        try FileManager.default.createDirectory(atPath: "/run/sshd", withIntermediateDirectories: true)
        let sshd = try spawn(["/usr/sbin/sshd", "-D", "-e", "-f", directory + "/sshd_config"])
        guard sshd.waitForOutput("Server listening", timeout: 5) else { throw BenchError("sshd: \(sshd.output)") }
        _ = try spawn([
            "ssh", "-N", "-F", "/dev/null", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
            "-o", "BatchMode=yes", "-o", "ExitOnForwardFailure=yes", "-c", "aes128-gcm@openssh.com", "-i",
            directory + "/id", "-p", "2201", "-L", "127.0.0.1:15201:127.0.0.1:5201", "-L",
            "127.0.0.1:10007:127.0.0.1:7",
            "root@127.0.0.1",
        ])
        waitForListener(namespace, port: 15201)
        waitForListener(namespace, port: 10007)

        // KtTunnel: kt-shadow in this process, the client on its own loop, local forward ports like ssh -L's.
        var logger = Logger(label: "bench-shadow")
        logger.logLevel = .error
        let hostKey = SessionKey().sshPrivateKey
        let server = ShadowServer(
            configuration: ShadowConfiguration(
                listen: try SocketAddress(ipAddress: "127.0.0.1", port: 2202), authorizedKeys: [key.sshPublicKey],
                hostKey: hostKey),
            group: shadowGroup, logger: logger)
        _ = try shadowGroup.next().makeFutureWithTask { try await server.start() }.wait()
        defer { _ = try? shadowGroup.next().makeFutureWithTask { await server.stop() }.wait() }
        let client = try clientGroup.next().makeFutureWithTask {
            try await TunnelClient.connect(
                group: clientGroup,
                configuration: TunnelConfiguration(key: key, hostKey: hostKey.publicKey),
                transport: TunnelClient.tcp(host: "127.0.0.1", port: 2202))
        }.wait()
        defer { client.close() }
        let forwards = try [(25201, 5201), (20007, 7)].map { local, remote in
            try LocalForward.start(group: clientGroup, client: client, localPort: local, remotePort: remote)
        }
        defer { for forward in forwards { forward.close(promise: nil) } }

        var table = Table(headers: ["path", "1 stream Gbit/s", "8 streams Gbit/s", "open p50 ms", "open p99 ms"])
        var figures: [String: [Double]] = [:]
        for (name, iperfPort, echoPort) in [
            ("ssh -L, aes128-gcm", 15201, 10007), ("KtTunnel → kt-shadow", 25201, 20007),
        ] {
            let one = try iperfThroughput(namespace, port: iperfPort, streams: 1)
            let eight = try iperfThroughput(namespace, port: iperfPort, streams: 8)
            let latency = try openLatency(namespace, port: echoPort, count: 500)
            figures[name] = [one, eight, latency.p50, latency.p99]
            table.add([
                name, formatted(one, 2), formatted(eight, 2), formatted(latency.p50, 3), formatted(latency.p99, 3),
            ])
        }
        if let ours = figures["KtTunnel → kt-shadow"], let theirs = figures["ssh -L, aes128-gcm"] {
            table.add(
                (0..<4).map { index in formatted(ours[index] / max(theirs[index], 1e-9), 2) }.reduce(
                    into: ["ratio KtTunnel / OpenSSH"]
                ) { $0.append($1) })
        }
        _ = echo
        return table.render()
    }

    static func waitForListener(_ namespace: TestNamespace, port: Int) {
        let deadline = Date().addingTimeInterval(5)
        while Date() < deadline {
            if let result = try? namespace.run(["ss", "-Hltn", "sport = :\(port)"]), !result.output.isEmpty { return }
            usleep(20_000)
        }
    }

    static func iperfThroughput(_ namespace: TestNamespace, port: Int, streams: Int) throws -> Double {
        let result = try namespace.run(
            ["iperf3", "-c", "127.0.0.1", "-p", "\(port)", "-t", "\(seconds)", "-P", "\(streams)", "-J"],
            timeout: Double(seconds) + 20)
        let json = (try JSONSerialization.jsonObject(with: Data(result.output.utf8)) as? [String: Any]) ?? [:]
        let bits = ((json["end"] as? [String: Any])?["sum_received"] as? [String: Any])?["bits_per_second"] as? Double
        guard let bits else {
            throw BenchError("iperf3 through port \(port): \(result.output.prefix(300)) \(result.error)")
        }
        return bits / 1e9
    }

    /// Connects `count` times in a row; each time one byte goes through and comes back. Milliseconds.
    static func openLatency(_ namespace: TestNamespace, port: Int, count: Int) throws -> (p50: Double, p99: Double) {
        let samples = try namespace.inside { () throws -> [Double] in
            var samples: [Double] = []
            var address = sockaddr_in()
            address.sin_family = sa_family_t(AF_INET)
            address.sin_port = in_port_t(UInt16(port).bigEndian)
            address.sin_addr.s_addr = UInt32(0x7F00_0001).bigEndian
            for _ in 0..<count {
                let started = ContinuousClock.now
                let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
                guard fd >= 0 else { throw BenchError("socket: errno \(errno)") }
                defer { close(fd) }
                var one: Int32 = 1
                setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
                let connected = withUnsafePointer(to: &address) {
                    $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                        connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
                    }
                }
                guard connected == 0 else { throw BenchError("connect to \(port): errno \(errno)") }
                var byte: UInt8 = 0x2A
                guard send(fd, &byte, 1, 0) == 1, recv(fd, &byte, 1, 0) == 1 else {
                    throw BenchError("echo through \(port) failed")
                }
                let elapsed = started.duration(to: .now)
                samples.append(
                    Double(elapsed.components.seconds) * 1000 + Double(elapsed.components.attoseconds) * 1e-15)
            }
            return samples.sorted()
        }
        if ProcessInfo.processInfo.environment["KT_BENCH_DEBUG"] != nil {
            let marks = [50, 75, 90, 95, 98, 99].map { formatted(samples[samples.count * $0 / 100], 2) }
            FileHandle.standardError.write(
                "port \(port): p50-p99 \(marks) max \(formatted(samples.last ?? 0, 2))\n".data(using: .utf8)!)
        }
        return (samples[samples.count / 2], samples[min(samples.count - 1, samples.count * 99 / 100)])
    }
}

/// `ssh -L` done with KtTunnel: each connection accepted on `localPort` becomes a flow to 127.0.0.1:`remotePort`
/// on the shadow's side.
enum LocalForward {
    static func start(group: EventLoopGroup, client: TunnelClient, localPort: Int, remotePort: Int) throws -> Channel {
        try group.next().flatSubmit {
            ServerBootstrap(group: group)
                .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
                .childChannelOption(.tcpOption(.tcp_nodelay), value: 1)
                .childChannelOption(.autoRead, value: false)
                .childChannelOption(.allowRemoteHalfClosure, value: true)
                .childChannelInitializer { accepted in
                    client.openTCPFuture(host: "127.0.0.1", port: remotePort).flatMap { flow in
                        flow.glue(to: accepted)
                    }.flatMapError { error in
                        accepted.close(promise: nil)
                        return accepted.eventLoop.makeSucceededVoidFuture()
                    }
                }
                .bind(host: "127.0.0.1", port: localPort)
        }.wait()
    }
}

struct BenchError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}
