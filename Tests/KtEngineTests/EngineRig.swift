import Foundation
import KtEngine
import KtStack
import KtTun
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

/// The engine with a real peer on each side and no root: an in-memory packet device where the kernel would be
/// (`TCPPeer` speaks TCP into it), and a kt-shadow in this process on 127.0.0.1 where the cluster would be, reached
/// over SSH through a ``TunnelLink``. Servers the flows reach listen on 127.0.0.1 too. Only ICMP needs more: ping
/// sockets, which this machine's namespace does not allow, so that test runs the rig in a namespace of its own.
final class EngineRig: @unchecked Sendable {
    let group: MultiThreadedEventLoopGroup
    let namespace: TestNamespace?
    let link: TunnelLink
    let device: MemoryPacketDevice
    let key = SessionKey()
    let logger: Logger
    private(set) var path: DataPath?
    private var channels: [Channel] = []
    private var shadows: [ShadowServer] = []
    private var clients: [TunnelClient] = []
    private let lock = NIOLock()

    /// The laptop's address in the tests: where the engine's packets go back to.
    static let laptop = IPv4Address(10, 0, 0, 1)
    static let loopback = IPv4Address(127, 0, 0, 1)

    init(takesOffloads: Bool, namespace: TestNamespace?, dialWait: TimeAmount) throws {
        self.namespace = namespace
        link = TunnelLink(dialWait: dialWait)
        group =
            try namespace?.inside { MultiThreadedEventLoopGroup(numberOfThreads: 2) }
            ?? MultiThreadedEventLoopGroup(numberOfThreads: 2)
        device = MemoryPacketDevice(takesOffloads: takesOffloads)
        var logger = Logger(label: "engine-test")
        logger.logLevel = ProcessInfo.processInfo.environment["KT_TEST_DEBUG"] != nil ? .debug : .warning
        self.logger = logger
    }

    /// Runs `body` with a fresh rig (engine started, no tunnel yet) and removes everything afterwards, also when
    /// `body` throws.
    /// `dialWait`: how long a dial waits for a tunnel (5 s, so that tests of a missing tunnel end soon). The body
    /// runs on ``DedicatedExecutor``, as lab tests do: these tests time holds and round trips, which Swift's
    /// concurrency pool (two threads here) held by other suites' synchronous work stretched past 5 s at the start of
    /// the full suite.
    static func with<T: Sendable>(
        takesOffloads: Bool = false, namespace prefix: String? = nil, dialWait: TimeAmount = .seconds(5),
        _ body: (EngineRig) async throws -> T
    ) async throws -> T {
        try await onDedicatedThreads {
            try await run(takesOffloads: takesOffloads, namespace: prefix, dialWait: dialWait, body)
        }
    }

    private static func run<T: Sendable>(
        takesOffloads: Bool, namespace prefix: String?, dialWait: TimeAmount, _ body: (EngineRig) async throws -> T
    ) async throws -> T {
        let namespace = try prefix.map { try TestNamespace(prefix: $0) }
        let rig: EngineRig
        do {
            rig = try EngineRig(takesOffloads: takesOffloads, namespace: namespace, dialWait: dialWait)
        } catch {
            namespace?.delete()
            throw error
        }
        do {
            try rig.startEngine()
            let result = try await body(rig)
            await rig.shutdown()
            return result
        } catch {
            await rig.shutdown()
            throw error
        }
    }

    func startEngine() throws {
        var configuration = StackConfiguration()
        configuration.checksumOffload = device.takesOffloads
        configuration.segmentationOffload = device.takesOffloads
        configuration.routerAddressV4 = IPv4Address(10, 0, 0, 254)
        path = try DataPath(device: device, configuration: configuration, link: link, group: group, logger: logger)
    }

    func shutdown() async {
        path?.stop()
        let (channels, shadows, clients) = lock.withLock { (self.channels, self.shadows, self.clients) }
        for client in clients { client.close() }
        for shadow in shadows { await shadow.stop() }
        for channel in channels { try? await channel.close() }
        try? await group.shutdownGracefully()
        namespace?.delete()
    }

    var counters: EngineCounters { path?.counters ?? EngineCounters() }

    // MARK: - The cluster side

    /// Starts an in-process kt-shadow whose pod resolver asks `nameserver` (a port on 127.0.0.1), and returns a
    /// client connected to it (not yet given to the link).
    func shadowClient(nameserver: Int? = nil) async throws -> TunnelClient {
        let port = try await startShadow(nameserver: nameserver)
        return try await connect(port: port)
    }

    func startShadow(nameserver: Int? = nil) async throws -> Int {
        var configuration = ShadowConfiguration(
            listen: try SocketAddress(ipAddress: "127.0.0.1", port: 0), authorizedKeys: [key.sshPublicKey],
            hostKey: SessionKey().sshPrivateKey)
        configuration.resolver = ResolvConf(
            nameservers: try nameserver.map { [try SocketAddress(ipAddress: "127.0.0.1", port: $0)] } ?? [],
            search: try ["default.svc.cluster.local", "svc.cluster.local", "cluster.local"].map {
                try DNSName(parsing: $0)
            },
            ndots: 5, timeout: .seconds(1), attempts: 1)
        configuration.hosts = HostsFile(parsing: "127.0.0.1 localhost\n")
        configuration.forwardBindAddress = "127.0.0.1"
        let server = ShadowServer(configuration: configuration, group: group, logger: logger)
        let address = try await server.start()
        lock.withLock { shadows.append(server) }
        return address.port ?? 0
    }

    func connect(port: Int) async throws -> TunnelClient {
        let client = try await TunnelClient.connect(
            group: group, configuration: TunnelConfiguration(key: key, hostKey: nil),
            transport: TunnelClient.tcp(host: "127.0.0.1", port: port))
        lock.withLock { clients.append(client) }
        return client
    }

    // MARK: - Servers on 127.0.0.1

    func tcpServer(_ handler: @escaping @Sendable () -> ChannelHandler & Sendable) async throws -> Int {
        let group = self.group
        let channel = try await group.next().flatSubmit {
            ServerBootstrap(group: group)
                .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
                .childChannelOption(.allowRemoteHalfClosure, value: true)
                .childChannelInitializer { child in
                    child.eventLoop.makeCompletedFuture { try child.pipeline.syncOperations.addHandler(handler()) }
                }
                .bind(host: "127.0.0.1", port: 0)
        }.get()
        lock.withLock { channels.append(channel) }
        return channel.localAddress?.port ?? 0
    }

    func udpServer(_ handler: @escaping @Sendable () -> ChannelHandler & Sendable) async throws -> Int {
        let group = self.group
        let channel = try await group.next().flatSubmit {
            DatagramBootstrap(group: group)
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(handler()) }
                }
                .bind(host: "127.0.0.1", port: 0)
        }.get()
        lock.withLock { channels.append(channel) }
        return channel.localAddress?.port ?? 0
    }

    /// A port on 127.0.0.1 where nothing listens (bound, then closed).
    func closedPort() async throws -> Int {
        let channel = try await ServerBootstrap(group: group).bind(host: "127.0.0.1", port: 0).get()
        let port = channel.localAddress?.port ?? 0
        try await channel.close()
        return port
    }

    // MARK: - The device side

    /// What the engine wrote since the last call, as the kernel takes it (segmented, checksums complete).
    func written() -> [IPPacket] {
        device.takeWritten().compactMap { try? IPPacket(validating: $0) }
    }

    /// Waits up to `timeout` for packets the engine writes; returns every packet seen once `done` says so, or
    /// everything seen when time runs out (the caller's expectations then fail).
    func waitForPackets(timeout: Duration = .seconds(5), until done: ([IPPacket]) -> Bool) async -> [IPPacket] {
        var seen: [IPPacket] = []
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            seen += written()
            if done(seen) { return seen }
            try? await Task.sleep(for: .milliseconds(1))
        }
        return seen
    }

    /// Sends a UDP datagram from the laptop into the device.
    func sendUDP(from port: UInt16, to destination: IPv4Address, _ destinationPort: UInt16, _ payload: [UInt8]) {
        var packet = ByteBuffer()
        let header = UDPHeader(sourcePort: PortNumber(port), destinationPort: PortNumber(destinationPort))
        IPv4Header(protocol: .udp, source: Self.laptop, destination: destination).emit(
            into: &packet, payloadLength: 8 + payload.count)
        header.emit(
            into: &packet, payload: ByteBuffer(bytes: payload),
            pseudoHeader: .v4(source: Self.laptop, destination: destination))
        device.inject([DevicePacket(bytes: packet)])
    }

    /// Sends an ICMP echo request from the laptop into the device.
    func sendEcho(to destination: IPv4Address, identifier: UInt16, sequence: UInt16, data: [UInt8]) {
        var message = ByteBuffer()
        ICMPv4Message.echoRequest(
            ICMPEcho(identifier: identifier, sequenceNumber: sequence, data: ByteBuffer(bytes: data))
        ).emit(into: &message)
        var packet = ByteBuffer()
        IPv4Header(protocol: .icmp, source: Self.laptop, destination: destination).emit(
            into: &packet, payloadLength: message.readableBytes)
        packet.writeBuffer(&message)
        device.inject([DevicePacket(bytes: packet)])
    }
}

/// A TCP client on the laptop's side of the device, driven by hand as the kernel would drive it: it builds
/// segments from `laptop:port` to the destination, and reads and acknowledges what the engine sends back.
struct TCPPeer {
    let rig: EngineRig
    let port: UInt16
    let destination: IPv4Address
    let destinationPort: UInt16
    var sequence = TCPSequenceNumber(1000)
    var acknowledgement = TCPSequenceNumber(0)
    /// The window we advertise, in units of 2^`windowScale` bytes.
    var window: UInt16 = 65535
    let windowScale: UInt8
    /// In-order payload received so far (checked against `Pattern` when `checkPattern`).
    var received = 0
    var receivedBytes = ByteBuffer()
    var keepBytes = true
    var mismatch: Int?
    var checkPattern = false
    var finished = false
    var reset = false
    var synAcknowledged = false

    init(_ rig: EngineRig, to destination: IPv4Address, _ destinationPort: Int, port: UInt16, windowScale: UInt8 = 0) {
        self.rig = rig
        self.port = port
        self.destination = destination
        self.destinationPort = UInt16(destinationPort)
        self.windowScale = windowScale
    }

    func segment(_ flags: TCPFlags, payload: [UInt8] = [], options: TCPOptions = TCPOptions()) -> DevicePacket {
        let header = TCPHeader(
            sourcePort: PortNumber(port), destinationPort: PortNumber(destinationPort), sequenceNumber: sequence,
            acknowledgementNumber: flags.contains(.ack) ? acknowledgement : TCPSequenceNumber(0), flags: flags,
            window: window, options: options)
        var packet = ByteBuffer()
        IPv4Header(protocol: .tcp, source: EngineRig.laptop, destination: destination).emit(
            into: &packet, payloadLength: header.headerLength + payload.count)
        header.emit(
            into: &packet, payload: ByteBuffer(bytes: payload),
            pseudoHeader: .v4(source: EngineRig.laptop, destination: destination))
        return DevicePacket(bytes: packet)
    }

    func sendSYN() {
        var options = TCPOptions()
        options.maximumSegmentSize = 1460
        if windowScale > 0 { options.windowScale = windowScale }
        rig.device.inject([segment(.syn, options: options)])
    }

    /// The segments in `packets` that belong to this flow.
    func mine(_ packets: [IPPacket]) -> [TCPSegment] {
        packets.compactMap { packet -> TCPSegment? in
            guard packet.transportProtocol == .tcp, packet.source == .v4(destination),
                let segment = try? TCPSegment(validating: packet.transportPayload),
                segment.sourcePort.rawValue == destinationPort, segment.destinationPort.rawValue == port
            else { return nil }
            return segment
        }
    }

    /// Takes the engine's segments: a SYN/ACK completes the handshake (answered with an ACK), in-order data is
    /// kept, a FIN or RST is noted. Returns whether anything new came; acknowledges what it took when `acknowledge`.
    @discardableResult
    mutating func take(_ segments: [TCPSegment], acknowledge: Bool = true) -> Bool {
        var progressed = false
        for segment in segments {
            if ProcessInfo.processInfo.environment["KT_TEST_DEBUG"] != nil {
                print(
                    "peer \(port) got \(segment.flags) seq \(segment.sequenceNumber) len \(segment.payloadLength), expecting \(acknowledgement)"
                )
            }
            if segment.flags.contains(.rst) {
                reset = true
                progressed = true
                continue
            }
            if segment.flags.contains(.syn), segment.flags.contains(.ack) {
                if !synAcknowledged {
                    synAcknowledged = true
                    sequence = sequence + 1
                    acknowledgement = segment.sequenceNumber + 1
                    progressed = true
                }
                continue
            }
            guard segment.sequenceNumber == acknowledgement else { continue }
            let payload = segment.payload
            if payload.readableBytes > 0 {
                if checkPattern, mismatch == nil { mismatch = Pattern.firstMismatch(payload, at: received) }
                if keepBytes {
                    var copy = payload
                    receivedBytes.writeBuffer(&copy)
                }
                received += payload.readableBytes
                acknowledgement = acknowledgement + UInt32(payload.readableBytes)
                progressed = true
            }
            if segment.flags.contains(.fin) {
                finished = true
                acknowledgement = acknowledgement + 1
                progressed = true
            }
        }
        if progressed, acknowledge, synAcknowledged, !reset { rig.device.inject([segment(.ack)]) }
        return progressed
    }

    /// Reads and acknowledges until `done` holds or `timeout` passes; returns whether `done` held.
    mutating func run(timeout: Duration = .seconds(10), until done: (TCPPeer) -> Bool) async -> Bool {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if done(self) { return true }
            if !take(mine(rig.written())) { try? await Task.sleep(for: .milliseconds(1)) }
        }
        return done(self)
    }

    /// The three-way handshake; returns whether the SYN/ACK came within `timeout`.
    mutating func open(timeout: Duration = .seconds(5)) async -> Bool {
        sendSYN()
        return await run(timeout: timeout) { $0.synAcknowledged || $0.reset }
    }

    mutating func send(_ bytes: [UInt8], fin: Bool = false) {
        rig.device.inject([segment(fin ? [.ack, .psh, .fin] : [.ack, .psh], payload: bytes)])
        sequence = sequence + UInt32(bytes.count + (fin ? 1 : 0))
    }
}
