import Foundation
import KtTunnel
import KtWire
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import NIOSSH
import NamespaceTestSupport
import ShadowKit
import TunnelTestSupport

/// Why the end-to-end tunnel tests cannot run here, or nil.
let tunnelLabUnavailable: String? = {
    if let reason = TestNamespace.unavailableReason { return reason }
    for tool in ["ssh", "ssh-keygen", "curl", "python3"] where TestNamespace.findExecutable(tool) == nil {
        return "needs \(tool)"
    }
    return nil
}()

/// A throwaway namespace with an event-loop group whose threads live in it, so every socket the test and the
/// in-process servers make is in the namespace: loopback there is private to the test, and fixed ports (53 for the
/// test DNS) cannot collide with anything.
final class TunnelLab: @unchecked Sendable {
    let namespace: TestNamespace
    let group: MultiThreadedEventLoopGroup
    private var channels: [Channel] = []
    private var processes: [BackgroundProcess] = []
    private var shadows: [ShadowServer] = []
    private let lock = NIOLock()
    let directory: String

    /// The search list a pod in namespace `default` gets.
    static let podSearch = ["default.svc.cluster.local", "svc.cluster.local", "cluster.local"]

    init(prefix: String) throws {
        namespace = try TestNamespace(prefix: prefix)
        do {
            group = try namespace.inside { MultiThreadedEventLoopGroup(numberOfThreads: 2) }
        } catch {
            namespace.delete()
            throw error
        }
        directory = NSTemporaryDirectory() + namespace.name
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    }

    /// Runs `body` with a fresh lab and removes everything afterwards, also when `body` throws.
    /// The body runs on ``DedicatedExecutor`` (see there): these tests time flows and failures.
    static func with<T: Sendable>(_ prefix: String, _ body: (TunnelLab) async throws -> T) async throws -> T {
        try await onDedicatedThreads {
            let lab = try TunnelLab(prefix: prefix)
            do {
                let result = try await body(lab)
                await lab.shutdown()
                return result
            } catch {
                await lab.shutdown()
                throw error
            }
        }
    }

    func shutdown() async {
        let (channels, processes, shadows) = lock.withLock { (self.channels, self.processes, self.shadows) }
        for process in processes { process.stop() }
        for shadow in shadows { await shadow.stop() }
        for channel in channels { try? await channel.close() }
        try? await group.shutdownGracefully()
        namespace.delete()
        try? FileManager.default.removeItem(atPath: directory)
    }

    func keep(_ channel: Channel) { lock.withLock { channels.append(channel) } }
    func keep(_ process: BackgroundProcess) { lock.withLock { processes.append(process) } }

    /// Starts a program inside the namespace, stopped at shutdown.
    func spawn(_ arguments: [String], environment: [String: String]? = nil) throws -> BackgroundProcess {
        let process = try BackgroundProcess(namespace, arguments, environment: environment)
        keep(process)
        return process
    }

    /// A shell command inside the namespace, to completion.
    func shell(_ command: String, timeout: Double = 30) throws -> TestNamespace.CommandResult {
        try namespace.run(["bash", "-c", command], timeout: timeout)
    }

    func write(_ name: String, _ contents: String, mode: Int = 0o644) throws -> String {
        let path = directory + "/" + name
        try contents.write(toFile: path, atomically: true, encoding: .utf8)
        chmod(path, mode_t(mode))
        return path
    }

    // MARK: - kt-shadow

    /// The resolv.conf a pod in `default` would have, pointed at the lab's DNS on 127.0.0.1:53; the kt-shadow
    /// process reads it from a file, the in-process shadow through the same parser.
    static let podResolvConf =
        "nameserver 127.0.0.1\nsearch \(podSearch.joined(separator: " "))\noptions ndots:5 timeout:1 attempts:2\n"

    static var podResolver: ResolvConf { ResolvConf(parsing: podResolvConf) }

    /// An in-process kt-shadow on 127.0.0.1 (any port), reverse forwards kept on loopback.
    func startShadow(
        keys: [NIOSSHPublicKey], hostKey: NIOSSHPrivateKey = SessionKey().sshPrivateKey,
        configure: (inout ShadowConfiguration) -> Void = { _ in }
    ) async throws -> (server: ShadowServer, port: Int) {
        var configuration = ShadowConfiguration(
            listen: try SocketAddress(ipAddress: "127.0.0.1", port: 0), authorizedKeys: keys, hostKey: hostKey)
        configuration.resolver = Self.podResolver
        configuration.hosts = HostsFile(parsing: "127.0.0.1 localhost\n")
        configuration.forwardBindAddress = "127.0.0.1"
        configure(&configuration)
        var logger = Logger(label: "test-shadow")
        logger.logLevel = ProcessInfo.processInfo.environment["KT_TEST_DEBUG"] != nil ? .debug : .warning
        let server = ShadowServer(configuration: configuration, group: group, logger: logger)
        let address = try await server.start()
        lock.withLock { shadows.append(server) }
        return (server, address.port ?? 0)
    }

    /// A kt-shadow in the lab and a client connected to it (host key not pinned).
    func shadowClient(connections: Int = 1) async throws -> TunnelClient {
        let key = SessionKey()
        let (_, port) = try await startShadow(keys: [key.sshPublicKey])
        return try await connect(port: port, key: key, hostKey: nil, connections: connections)
    }

    /// A client connected to `port` on the lab's loopback.
    func connect(
        port: Int, key: SessionKey, hostKey: NIOSSHPublicKey?, fingerprint: String? = nil, username: String = "kt",
        connections: Int = 1,
        keepAlive: (TimeAmount, TimeAmount) = (.seconds(5), .seconds(15))
    ) async throws -> TunnelClient {
        let configuration = TunnelConfiguration(
            key: key, username: username, hostKey: hostKey, hostKeyFingerprint: fingerprint, connections: connections,
            keepAliveInterval: keepAlive.0,
            keepAliveTimeout: keepAlive.1)
        return try await TunnelClient.connect(
            group: group, configuration: configuration, transport: TunnelClient.tcp(host: "127.0.0.1", port: port))
    }

    // MARK: - Servers

    /// Binds a TCP server on 127.0.0.1 (any port) whose connections get `handler()`; returns the port.
    func tcpServer(
        port: Int = 0, _ handler: @escaping @Sendable () -> ChannelHandler & Sendable
    ) async throws -> Int {
        let group = self.group
        let channel = try await group.next().flatSubmit {
            ServerBootstrap(group: group)
                .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
                .childChannelOption(.allowRemoteHalfClosure, value: true)
                .childChannelInitializer { child in
                    child.eventLoop.makeCompletedFuture { try child.pipeline.syncOperations.addHandler(handler()) }
                }
                .bind(host: "127.0.0.1", port: port)
        }.get()
        keep(channel)
        return channel.localAddress?.port ?? 0
    }

    func echoServer() async throws -> Int { try await tcpServer { EchoHandler() } }

    /// Receives the pattern and answers `<bytes> <first wrong offset or -1>\n` after EOF.
    func patternSink() async throws -> Int { try await tcpServer { PatternSink() } }

    /// Sends `size` bytes of the pattern, then closes; counts what it has written so far in `progress`.
    func patternSource(size: Int, progress: NIOLockedValueBox<Int> = NIOLockedValueBox(0)) async throws -> Int {
        try await tcpServer { PatternSource(size: size, progress: progress) }
    }

    /// A UDP echo server on 127.0.0.1; returns the port.
    func udpEchoServer() async throws -> Int {
        let group = self.group
        let channel = try await group.next().flatSubmit {
            DatagramBootstrap(group: group)
                .channelOption(.recvAllocator, value: FixedSizeRecvByteBufferAllocator(capacity: 65536))
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(UDPEcho()) }
                }
                .bind(host: "127.0.0.1", port: 0)
        }.get()
        keep(channel)
        return channel.localAddress?.port ?? 0
    }

    /// An authoritative DNS server for the lab on 127.0.0.1:53: A records for `records`, NXDOMAIN for the rest.
    /// `queries` collects the names asked, in order.
    func dnsServer(records: [String: String], queries: NIOLockedValueBox<[String]> = NIOLockedValueBox([])) async throws
    {
        var table: [DNSName: IPv4Address] = [:]
        for (name, address) in records { table[try DNSName(parsing: name)] = IPv4Address(address) }
        let frozen = table
        let group = self.group
        let channel = try await group.next().flatSubmit {
            DatagramBootstrap(group: group)
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHandler(TestDNS(records: frozen, queries: queries))
                    }
                }
                .bind(host: "127.0.0.1", port: 53)
        }.get()
        keep(channel)
    }
}

// MARK: - Reverse forwards

/// A reverse-forward handler that joins each forwarded flow to a new connection to `port` on the lab's loopback.
func forwardToLocal(port: Int) -> @Sendable (TunnelFlow) -> Void {
    { flow in
        _ = ClientBootstrap(group: flow.channel.eventLoop)
            .channelOption(.autoRead, value: false)
            .channelOption(.allowRemoteHalfClosure, value: true)
            .connect(host: "127.0.0.1", port: port)
            .flatMap { flow.glue(to: $0) }
    }
}

/// Sends 100 000 bytes from python in the lab to `port` and returns how many came back before EOF.
func pythonRoundTrip(_ lab: TunnelLab, port: Int) throws -> TestNamespace.CommandResult {
    try lab.shell(
        "python3 -c \"import socket; s=socket.create_connection(('127.0.0.1', \(port))); s.sendall(b'x'*100000); "
            + "s.shutdown(socket.SHUT_WR); n=0\nwhile True:\n  b=s.recv(65536)\n  if not b: break\n  n+=len(b)\nprint(n)\""
    )
}

// MARK: - Reading flows

extension TunnelFlow {
    /// Writes `bytes`, sends EOF, and collects everything the other side sends until it closes.
    func exchange(_ bytes: ByteBuffer) async throws -> ByteBuffer {
        let async = try await asyncChannel()
        return try await async.executeThenClose { inbound, outbound in
            try await outbound.write(bytes)
            outbound.finish()
            var collected = ByteBuffer()
            for try await var chunk in inbound { collected.writeBuffer(&chunk) }
            return collected
        }
    }
}

/// Milliseconds since `start`.
func milliseconds(since start: ContinuousClock.Instant) -> Double {
    let elapsed = ContinuousClock.now - start
    return Double(elapsed.components.seconds) * 1000 + Double(elapsed.components.attoseconds) / 1e15
}
