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

// MARK: - The pattern

/// The byte stream the transfer tests send: byte `i` is `i % 251` (a prime, so chunk boundaries never line up).
enum Pattern {
    static let block: [UInt8] = (0..<(251 * 1024)).map { UInt8($0 % 251) }
    /// The longest slice one call can take from `block` at any phase.
    static let maximumChunk = block.count - 251

    static func chunk(at offset: Int, length: Int, allocator: ByteBufferAllocator) -> ByteBuffer {
        let phase = offset % 251
        let count = min(length, maximumChunk)
        var buffer = allocator.buffer(capacity: count)
        block.withUnsafeBytes { buffer.writeBytes(UnsafeRawBufferPointer(rebasing: $0[phase..<(phase + count)])) }
        return buffer
    }

    /// Writes `size` bytes of the pattern to `outbound` in chunks of up to 256 KiB.
    static func send(_ size: Int, to outbound: NIOAsyncChannelOutboundWriter<ByteBuffer>) async throws {
        var sent = 0
        while sent < size {
            let chunk = chunk(at: sent, length: min(256 * 1024, size - sent), allocator: .init())
            sent += chunk.readableBytes
            try await outbound.write(chunk)
        }
    }

    /// Whether `bytes` are the pattern from `offset` on; the index of the first wrong byte if not.
    static func firstMismatch(_ bytes: ByteBuffer, at offset: Int) -> Int? {
        var checked = 0
        return bytes.withUnsafeReadableBytes { raw -> Int? in
            while checked < raw.count {
                let phase = (offset + checked) % 251
                let count = min(raw.count - checked, maximumChunk)
                let equal = block.withUnsafeBytes { pattern in
                    memcmp(raw.baseAddress! + checked, pattern.baseAddress! + phase, count) == 0
                }
                if !equal {
                    for index in 0..<count where raw[checked + index] != UInt8((offset + checked + index) % 251) {
                        return offset + checked + index
                    }
                }
                checked += count
            }
            return nil
        }
    }
}

// MARK: - Handlers

final class EchoHandler: ChannelInboundHandler, Sendable {
    typealias InboundIn = ByteBuffer

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        context.write(data, promise: nil)
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        context.flush()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let event = event as? ChannelEvent, event == .inputClosed {
            context.close(mode: .output, promise: nil)
        }
    }
}

final class PatternSink: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer
    private var received = 0
    private var mismatch: Int?

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let bytes = unwrapInboundIn(data)
        if mismatch == nil { mismatch = Pattern.firstMismatch(bytes, at: received) }
        received += bytes.readableBytes
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let event = event as? ChannelEvent, event == .inputClosed {
            let line = "\(received) \(mismatch ?? -1)\n"
            context.writeAndFlush(wrapOutboundOut(ByteBuffer(string: line))).whenComplete { _ in
                context.close(promise: nil)
            }
        }
    }
}

final class PatternSource: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer
    private let size: Int
    private let progress: NIOLockedValueBox<Int>
    private var sent = 0

    init(size: Int, progress: NIOLockedValueBox<Int>) {
        self.size = size
        self.progress = progress
    }

    func channelActive(context: ChannelHandlerContext) {
        pump(context: context)
        context.fireChannelActive()
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        pump(context: context)
    }

    private func pump(context: ChannelHandlerContext) {
        while context.channel.isWritable, sent < size {
            let chunk = Pattern.chunk(
                at: sent, length: min(64 * 1024, size - sent), allocator: context.channel.allocator)
            sent += chunk.readableBytes
            if sent == size {
                // The last write's completion, not `close(mode: .output)` at once: NIO turns an output close on a
                // socket whose input has ended (the tunnel's EOF came first) into a full close that drops
                // unwritten data.
                sent += 1  // once
                context.writeAndFlush(wrapOutboundOut(chunk)).assumeIsolated().whenComplete { _ in
                    context.close(mode: .output, promise: nil)
                }
                break
            }
            context.write(wrapOutboundOut(chunk), promise: nil)
        }
        context.flush()
        let total = min(sent, size)
        progress.withLockedValue { $0 = total }
    }
}

/// Writes "bye\n" and half-closes at once, then counts and checks the pattern it receives until EOF.
final class SayThenCount: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer
    private let counted: NIOLockedValueBox<(bytes: Int, mismatch: Int?, ended: Bool)>
    private var received = 0
    private var mismatch: Int?

    init(counted: NIOLockedValueBox<(bytes: Int, mismatch: Int?, ended: Bool)>) {
        self.counted = counted
    }

    func channelActive(context: ChannelHandlerContext) {
        context.writeAndFlush(wrapOutboundOut(ByteBuffer(string: "bye\n")), promise: nil)
        context.close(mode: .output, promise: nil)
        context.fireChannelActive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let bytes = unwrapInboundIn(data)
        if mismatch == nil { mismatch = Pattern.firstMismatch(bytes, at: received) }
        received += bytes.readableBytes
    }

    func channelInactive(context: ChannelHandlerContext) {
        let (bytes, mismatch) = (received, mismatch)
        counted.withLockedValue { $0 = (bytes, mismatch, true) }
        context.fireChannelInactive()
    }
}

final class UDPEcho: ChannelInboundHandler, Sendable {
    typealias InboundIn = AddressedEnvelope<ByteBuffer>
    typealias OutboundOut = AddressedEnvelope<ByteBuffer>

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        context.writeAndFlush(data, promise: nil)
    }
}

final class TestDNS: ChannelInboundHandler, Sendable {
    typealias InboundIn = AddressedEnvelope<ByteBuffer>
    typealias OutboundOut = AddressedEnvelope<ByteBuffer>
    private let records: [DNSName: IPv4Address]
    private let queries: NIOLockedValueBox<[String]>

    init(records: [DNSName: IPv4Address], queries: NIOLockedValueBox<[String]>) {
        self.records = records
        self.queries = queries
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let envelope = unwrapInboundIn(data)
        guard let query = try? DNSMessage(parsing: envelope.data), let question = query.questions.first else { return }
        queries.withLockedValue { $0.append("\(question.name)") }
        var response: DNSMessage
        if let address = records[question.name] {
            response = query.makeResponse(authoritative: true)
            if question.type == .a {
                response.answers = [DNSRecord(name: question.name, ttl: 5, data: .a(address))]
            }
        } else {
            response = query.makeResponse(responseCode: .nameError, authoritative: true)
        }
        context.writeAndFlush(
            wrapOutboundOut(AddressedEnvelope(remoteAddress: envelope.remoteAddress, data: response.encoded())),
            promise: nil)
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
