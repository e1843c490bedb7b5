import Foundation
import Glibc
import KtTun
import KtWire
import NIOCore
import NIOPosix
import NamespaceTestSupport

/// KtTun's throughput: what it can read from and write to a TUN, with and without offloads, next to a plain veth
/// `iperf3` run made in the same invocation. Needs root and /dev/net/tun; everything runs in namespaces made here.
enum TunBenchmarks {
    static let seconds = 3.0
    /// The veth TCP figure of this run, for the KtStack table's ratios.
    nonisolated(unsafe) static var lastVethTCP: Double?
    static let ours = IPv4Address(10, 204, 0, 1)
    static let peer = IPv4Address(10, 204, 0, 2)
    static let cluster = IPv4Address(10, 96, 0, 15)

    static func run() -> String {
        if let reason = TestNamespace.unavailableReason { return "TUN benchmarks skipped: \(reason)" }
        guard access("/dev/net/tun", R_OK | W_OK) == 0 else { return "TUN benchmarks skipped: no /dev/net/tun" }
        var table = Table(headers: ["path", "Gbit/s", "kpkt/s", "vs veth", "note"])
        do {
            let veth = try vethBaseline()
            lastVethTCP = veth.tcp
            table.add([
                "veth iperf3 TCP, 1 stream", formatted(veth.tcp, 2), "", "1.00", "kernel to kernel, the ceiling",
            ])
            table.add([
                "veth iperf3 UDP 1400 B", formatted(veth.udpBits, 2), formatted(veth.udpPackets / 1e3, 0), "1.00",
                "sender-limited",
            ])
            func add(_ name: String, _ result: Rate, tcp: Bool, _ note: String) {
                let base = tcp ? veth.tcp : veth.udpBits
                table.add([
                    name, formatted(result.bits / 1e9, 2), formatted(result.packets / 1e3, 0),
                    formatted(result.bits / 1e9 / base, 2), note,
                ])
            }
            add("read UDP 1400 B (socat sender)", try readUDP(virtio: false), tcp: false, "one read() per packet")
            add("read UDP 1400 B, NIO pipe channel", try readUDPWithNIO(), tcp: false, "same, through NIOPipeBootstrap")
            add("read TCP, no offloads", try readTCP(virtio: false), tcp: true, "MSS-sized reads, hand-written ACKs")
            add("read TCP, TSO super-packets", try readTCP(virtio: true), tcp: true, "64 KiB reads split into segments")
            add("write UDP 1400 B", try writeUDP(), tcp: false, "kernel socket sink")
            add(
                "write TCP, one write per segment", try writeTCP(virtio: false), tcp: true,
                "kernel socat sink; emit + checksum")
            add(
                "write TCP, coalesced (GRO)", try writeTCP(virtio: true), tcp: true,
                "segments joined into super-packets")
        } catch {
            return table.render() + "\nTUN benchmark failed: \(error)"
        }
        return table.render()
    }

    struct Rate {
        var bits: Double
        var packets: Double
    }

    // MARK: - Baseline

    static func vethBaseline() throws -> (tcp: Double, udpBits: Double, udpPackets: Double) {
        let a = try TestNamespace(prefix: "ktbench-a")
        defer { a.delete() }
        let b = try TestNamespace(prefix: "ktbench-b")
        defer { b.delete() }
        for command in [
            ["ip", "link", "add", "va", "netns", a.name, "type", "veth", "peer", "name", "vb", "netns", b.name],
            ["ip", "-n", a.name, "addr", "add", "10.205.0.1/24", "dev", "va"],
            ["ip", "-n", b.name, "addr", "add", "10.205.0.2/24", "dev", "vb"],
            ["ip", "-n", a.name, "link", "set", "va", "up"], ["ip", "-n", b.name, "link", "set", "vb", "up"],
        ] { try TestNamespace.check(TestNamespace.run(command)) }
        func iperf(_ extra: [String]) throws -> [String: Any] {
            let server = try Background(b, ["iperf3", "-s", "-1", "-B", "10.205.0.2"])
            defer { server.stop() }
            Thread.sleep(forTimeInterval: 0.3)
            let result = try a.run(
                ["iperf3", "-c", "10.205.0.2", "-t", String(Int(seconds)), "-J"] + extra, timeout: seconds + 10)
            return (try JSONSerialization.jsonObject(with: Data(result.output.utf8)) as? [String: Any]) ?? [:]
        }
        let tcp = try iperf([])
        let tcpBits =
            ((tcp["end"] as? [String: Any])?["sum_received"] as? [String: Any])?["bits_per_second"] as? Double ?? 0
        let udp = try iperf(["-u", "-b", "0", "-l", "1400"])
        let sum = (udp["end"] as? [String: Any])?["sum"] as? [String: Any]
        let udpBits = sum?["bits_per_second"] as? Double ?? 0
        let udpPackets = Double(sum?["packets"] as? Int ?? 0) / seconds
        return (tcpBits / 1e9, udpBits / 1e9, udpPackets)
    }

    // MARK: - A TUN in a namespace

    final class TunSetup {
        let namespace: TestNamespace
        let netlink: Netlink
        let device: TunDevice

        init(virtio: Bool) throws {
            namespace = try TestNamespace(prefix: "ktbench-tun")
            do {
                (netlink, device) = try namespace.inside { () throws -> (Netlink, TunDevice) in
                    (
                        try Netlink(),
                        try TunDevice.open(TunOptions(name: "kt0", virtioHeader: virtio, offloads: virtio ? .all : []))
                    )
                }
                let link = try netlink.link(named: "kt0")
                try netlink.setUp(true, link.index)
                try netlink.addAddress(
                    InterfaceAddress(interface: link.index, address: .v4(TunBenchmarks.ours), prefixLength: 24))
                try netlink.addRoute(
                    Route(
                        destination: .v4(try IPv4Prefix.parse("10.96.0.0/12")), outputInterface: link.index,
                        scope: .link))
            } catch {
                namespace.delete()
                throw error
            }
        }

        deinit {
            device.close()
            namespace.delete()
        }
    }

    // MARK: - Reading

    static func readUDP(virtio: Bool) throws -> Rate {
        let setup = try TunSetup(virtio: virtio)
        let sender = try Background(
            setup.namespace, ["socat", "-u", "-b", "1400", "/dev/zero", "UDP-SENDTO:\(cluster):9"])
        defer { sender.stop() }
        var packets: [ByteBuffer] = []
        packets.reserveCapacity(256)
        var count = 0
        var bytes = 0
        let start = Date()
        while Date().timeIntervalSince(start) < seconds {
            guard setup.device.waitUntilReadable(timeout: 100) else { continue }
            _ = try setup.device.read(into: &packets)
            count += packets.count
            for packet in packets { bytes += packet.readableBytes }
            packets.removeAll(keepingCapacity: true)
        }
        let elapsed = Date().timeIntervalSince(start)
        return Rate(bits: Double(bytes * 8) / elapsed, packets: Double(count) / elapsed)
    }

    /// The same read through a NIO pipe channel on a duplicate of the TUN fd, to compare I/O models.
    static func readUDPWithNIO() throws -> Rate {
        let setup = try TunSetup(virtio: false)
        let sender = try Background(
            setup.namespace, ["socat", "-u", "-b", "1400", "/dev/zero", "UDP-SENDTO:\(cluster):9"])
        defer { sender.stop() }
        let counter = Counter()
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        defer { try? group.syncShutdownGracefully() }
        let channel = try NIOPipeBootstrap(group: group)
            .channelOption(.recvAllocator, value: FixedSizeRecvByteBufferAllocator(capacity: 65536))
            .channelInitializer { $0.pipeline.addHandler(CountingHandler(counter)) }
            .takingOwnershipOfDescriptor(input: dup(setup.device.descriptor))
            .wait()
        Thread.sleep(forTimeInterval: seconds)
        let (count, bytes) = counter.value
        try? channel.close().wait()
        return Rate(bits: Double(bytes * 8) / seconds, packets: Double(count) / seconds)
    }

    final class Counter: @unchecked Sendable {
        private let lock = NSLock()
        private var packets = 0
        private var bytes = 0
        func add(_ size: Int) {
            lock.lock()
            packets += 1
            bytes += size
            lock.unlock()
        }
        var value: (Int, Int) {
            lock.lock()
            defer { lock.unlock() }
            return (packets, bytes)
        }
    }

    final class CountingHandler: ChannelInboundHandler, @unchecked Sendable {
        typealias InboundIn = ByteBuffer
        let counter: Counter
        init(_ counter: Counter) { self.counter = counter }
        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            counter.add(unwrapInboundIn(data).readableBytes)
        }
    }

    /// A kernel TCP sender (socat from /dev/zero) into the TUN; we answer the handshake and ACK what arrives.
    static func readTCP(virtio: Bool) throws -> Rate {
        let setup = try TunSetup(virtio: virtio)
        let sender = try Background(setup.namespace, ["socat", "-u", "/dev/zero", "TCP:\(cluster):5001"])
        defer { sender.stop() }
        var connection: TCPPeer?
        var packets: [ByteBuffer] = []
        var bytes = 0
        var count = 0
        var start: Date?
        let deadline = Date().addingTimeInterval(seconds + 3)
        while Date() < deadline {
            if let start, Date().timeIntervalSince(start) >= seconds { break }
            guard setup.device.waitUntilReadable(timeout: 100) else { continue }
            _ = try setup.device.read(into: &packets)
            var reply: [ByteBuffer] = []
            for packet in packets {
                guard case .v4(let ip) = try? IPPacket(validating: packet, verifyChecksum: false), ip.protocol == .tcp,
                    let segment = try? TCPSegment(validating: ip.payload)
                else { continue }
                if segment.flags.contains(.syn) {
                    var peer = TCPPeer(
                        local: (cluster, 5001), remote: (ip.source, segment.sourcePort), sequence: TCPSequenceNumber(1))
                    peer.acknowledged = segment.sequenceNumber + UInt32(1)
                    reply.append(
                        peer.segment([.syn, .ack], options: TCPOptions(maximumSegmentSize: 1460, windowScale: 10)))
                    peer.sequence += 1
                    connection = peer
                } else if var peer = connection, segment.payloadLength > 0, segment.sequenceNumber == peer.acknowledged
                {
                    if start == nil { start = Date() }
                    peer.acknowledged = peer.acknowledged + UInt32(segment.payloadLength)
                    bytes += segment.payloadLength
                    count += 1
                    connection = peer
                }
            }
            packets.removeAll(keepingCapacity: true)
            if let peer = connection { reply.append(peer.segment([.ack])) }
            try setup.device.write(reply)
        }
        let elapsed = start.map { Date().timeIntervalSince($0) } ?? 1
        return Rate(bits: Double(bytes * 8) / elapsed, packets: Double(count) / elapsed)
    }

    // MARK: - Writing

    static func writeUDP() throws -> Rate {
        let setup = try TunSetup(virtio: false)
        let sink = try Background(setup.namespace, ["socat", "-u", "UDP-RECV:9001,bind=\(ours)", "/dev/null"])
        defer { sink.stop() }
        Thread.sleep(forTimeInterval: 0.2)
        var datagram = ByteBuffer()
        let payload = ByteBuffer(repeating: 0x42, count: 1400)
        IPv4Header(protocol: .udp, source: peer, destination: ours).emit(into: &datagram, payloadLength: 1408)
        UDPHeader(sourcePort: 40000, destinationPort: 9001).emit(
            into: &datagram, payload: payload, pseudoHeader: .v4(source: peer, destination: ours))
        let batch = [ByteBuffer](repeating: datagram, count: 64)
        var count = 0
        let start = Date()
        while Date().timeIntervalSince(start) < seconds {
            try setup.device.write(batch)
            count += batch.count
        }
        let elapsed = Date().timeIntervalSince(start)
        let dropped = setup.device.droppedWrites
        return Rate(
            bits: Double((count - dropped) * datagram.readableBytes * 8) / elapsed,
            packets: Double(count - dropped) / elapsed)
    }

    /// We are the TCP sender: handshake with a kernel listener, then keep its window full for `seconds`.
    static func writeTCP(virtio: Bool) throws -> Rate {
        let setup = try TunSetup(virtio: virtio)
        let sink = try Background(
            setup.namespace, ["socat", "-u", "TCP-LISTEN:5002,bind=\(ours),reuseaddr", "/dev/null"])
        defer { sink.stop() }
        try waitForListener(setup.namespace, port: 5002)
        var me = TCPPeer(local: (peer, 40001), remote: (ours, 5002), sequence: TCPSequenceNumber(1000))
        try setup.device.write([me.segment([.syn], options: TCPOptions(maximumSegmentSize: 1460, windowScale: 10))])
        me.sequence += 1
        var packets: [ByteBuffer] = []
        var unacknowledged = me.sequence
        var window: UInt32 = 65535
        var windowScale: UInt8 = 0
        var established = false
        let payload = ByteBuffer(repeating: 0x61, count: 1448)
        var start: Date?
        var segmentsSent = 0
        var lastProgress = Date()
        var retransmissions = 0
        let deadline = Date().addingTimeInterval(seconds + 3)
        while Date() < deadline {
            if let start, Date().timeIntervalSince(start) >= seconds { break }
            _ = try setup.device.read(into: &packets)
            for packet in packets {
                guard case .v4(let ip) = try? IPPacket(validating: packet, verifyChecksum: false), ip.protocol == .tcp,
                    let segment = try? TCPSegment(validating: ip.payload)
                else { continue }
                if segment.flags.contains([.syn, .ack]), !established {
                    me.acknowledged = segment.sequenceNumber + UInt32(1)
                    windowScale = segment.options.windowScale ?? 0
                    established = true
                    try setup.device.write([me.segment([.ack])])
                    start = Date()
                }
                if segment.flags.contains(.ack), unacknowledged < segment.acknowledgementNumber {
                    unacknowledged = segment.acknowledgementNumber
                    lastProgress = Date()
                }
                // RFC 7323 §2.2: the window of a SYN is never scaled.
                window = UInt32(segment.window) << UInt32(segment.flags.contains(.syn) ? 0 : min(windowScale, 14))
            }
            packets.removeAll(keepingCapacity: true)
            guard established else {
                _ = setup.device.waitUntilReadable(timeout: 10)
                continue
            }
            // No retransmission timer, only go-back-N: if nothing was acknowledged for 50 ms, resend from the
            // first unacknowledged byte (the kernel drops what its receive buffer cannot hold).
            if me.sequence != unacknowledged, Date().timeIntervalSince(lastProgress) > 0.05 {
                me.sequence = unacknowledged
                retransmissions += 1
                lastProgress = Date()
            }
            let inFlight = UInt32(bitPattern: me.sequence - unacknowledged)
            let room = Int(min(window, 8 << 20)) - Int(inFlight)
            let count = min(max(room / 1448, 0), 44)
            if count == 0 {
                _ = setup.device.waitUntilReadable(timeout: 1)
                continue
            }
            var batch: [ByteBuffer] = []
            batch.reserveCapacity(count)
            for _ in 0..<count {
                batch.append(me.segment([.ack], payload: payload))
                me.sequence += 1448
            }
            try setup.device.write(batch)
            segmentsSent += count
        }
        let elapsed = start.map { Date().timeIntervalSince($0) } ?? 1
        let bytes = Double(UInt32(bitPattern: unacknowledged - TCPSequenceNumber(1001)))
        try setup.device.write([me.segment([.rst])])
        if retransmissions > 0 { print("  (write TCP, virtio \(virtio): \(retransmissions) go-back-N resends)") }
        return Rate(bits: bytes * 8 / elapsed, packets: Double(segmentsSent) / elapsed)
    }

    /// Waits until something listens on `port` in the namespace (at most 3 s).
    static func waitForListener(_ namespace: TestNamespace, port: Int) throws {
        for _ in 0..<60 {
            if (try? namespace.run(["ss", "-Hltn", "sport", "= :\(port)"]))?.output.isEmpty == false { return }
            Thread.sleep(forTimeInterval: 0.05)
        }
        throw TestNamespaceError("nothing listens on port \(port) in \(namespace.name)")
    }

    /// Just enough of one end of a TCP connection to build its segments.
    struct TCPPeer {
        var local: (IPv4Address, PortNumber)
        var remote: (IPv4Address, PortNumber)
        var sequence: TCPSequenceNumber
        var acknowledged = TCPSequenceNumber(0)

        init(local: (IPv4Address, PortNumber), remote: (IPv4Address, PortNumber), sequence: TCPSequenceNumber) {
            self.local = local
            self.remote = remote
            self.sequence = sequence
        }

        func segment(_ flags: TCPFlags, options: TCPOptions = TCPOptions(), payload: ByteBuffer = ByteBuffer())
            -> ByteBuffer
        {
            let header = TCPHeader(
                sourcePort: local.1, destinationPort: remote.1, sequenceNumber: sequence,
                acknowledgementNumber: flags.contains(.ack) ? acknowledged : TCPSequenceNumber(0), flags: flags,
                window: 65535,
                options: options)
            var packet = ByteBuffer()
            packet.reserveCapacity(20 + header.headerLength + payload.readableBytes)
            IPv4Header(protocol: .tcp, source: local.0, destination: remote.0).emit(
                into: &packet, payloadLength: header.headerLength + payload.readableBytes)
            header.emit(into: &packet, payload: payload, pseudoHeader: .v4(source: local.0, destination: remote.0))
            return packet
        }
    }

    /// A tool running in a namespace for the length of one measurement.
    final class Background {
        let process = Process()
        init(_ namespace: TestNamespace, _ arguments: [String]) throws {
            process.executableURL = URL(fileURLWithPath: TestNamespace.findExecutable("ip") ?? "/usr/sbin/ip")
            process.arguments = ["netns", "exec", namespace.name] + arguments
            process.standardOutput = FileHandle.nullDevice
            process.standardError = FileHandle.nullDevice
            try process.run()
        }
        func stop() {
            if process.isRunning { process.terminate() }
            process.waitUntilExit()
        }
    }
}
