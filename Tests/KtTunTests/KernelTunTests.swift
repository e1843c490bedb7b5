import Foundation
import Glibc
import KtWire
import NIOCore
import NamespaceTestSupport
import Testing

@testable import KtTun

/// Why these tests cannot run here, or nil. CI runs as root with /dev/net/tun, so there they always run.
let tunUnavailableReason: String? = {
    if let reason = TestNamespace.unavailableReason { return reason }
    if access("/dev/net/tun", R_OK | W_OK) != 0 { return "needs /dev/net/tun" }
    return nil
}()

/// The TUN device, links, addresses and routes against the real kernel, each test in its own network namespace.
@Suite(.serialized, .enabled(if: tunUnavailableReason == nil, "needs root and /dev/net/tun"))
struct KernelTunTests {
    /// A namespace with a TUN `kt0` up, MTU `mtu`, address `address`/24 and, if given, a route into it.
    final class Setup: @unchecked Sendable {
        let namespace: TestNamespace
        let netlink: Netlink
        let device: TunDevice
        let link: Link

        init(
            _ prefix: String, options: TunOptions = TunOptions(virtioHeader: false), address: IPv4Address,
            route: String? = "10.96.0.0/12", mtu: UInt32 = 1500
        ) throws {
            namespace = try TestNamespace(prefix: prefix)
            do {
                (netlink, device) = try namespace.inside { () throws -> (Netlink, TunDevice) in
                    (try Netlink(), try TunDevice.open(options))
                }
                link = try netlink.link(named: device.name)
                try netlink.setMTU(mtu, of: link.index)
                try netlink.setUp(true, link.index)
                try netlink.addAddress(InterfaceAddress(interface: link.index, address: .v4(address), prefixLength: 24))
                if let route {
                    try netlink.addRoute(
                        Route(destination: try AnyIPPrefix.parse(route), outputInterface: link.index, scope: .link))
                }
            } catch {
                namespace.delete()
                throw error
            }
        }

        func tearDown() {
            device.close()
            namespace.delete()
        }

        /// Reads packets until `match` returns a value or `seconds` pass.
        func read<T>(seconds: Double = 3, _ match: (ByteBuffer) throws -> T?) throws -> T? {
            let deadline = Date().addingTimeInterval(seconds)
            var packets: [ByteBuffer] = []
            while Date() < deadline {
                if device.waitUntilReadable(timeout: 100) {
                    packets.removeAll()
                    _ = try device.read(into: &packets)
                    for packet in packets { if let found = try match(packet) { return found } }
                }
            }
            return nil
        }
    }

    // MARK: - Device, addresses and routes against `ip -j`

    @Test func createConfigureCompareAndDelete() throws {
        let setup = try Setup("kttun-dev", address: IPv4Address(10, 200, 0, 1), route: nil, mtu: 1400)
        defer { setup.tearDown() }
        let netlink = setup.netlink
        let index = setup.link.index
        try netlink.addAddress(InterfaceAddress(interface: index, address: IPAddress("fd00:200::1")!, prefixLength: 64))
        let cluster = try AnyIPPrefix.parse("10.96.0.0/12")
        try netlink.addRoute(Route(destination: cluster, outputInterface: index, scope: .link))
        try netlink.addRoute(Route(destination: try AnyIPPrefix.parse("fd00:96::/108"), outputInterface: index))
        try netlink.addRoute(
            Route(destination: try AnyIPPrefix.parse("10.96.0.1/32"), table: RouteTable(rawValue: 1000), type: .throw))

        // What ip says.
        let linkJSON = try json(setup.namespace.run(["ip", "-j", "link", "show", "kt0"]))
        #expect(linkJSON.first?["mtu"] as? Int == 1400)
        #expect((linkJSON.first?["flags"] as? [String])?.contains("UP") == true)
        let addresses = try json(setup.namespace.run(["ip", "-j", "addr", "show", "dev", "kt0"]))
        let local = (addresses.first?["addr_info"] as? [[String: Any]] ?? []).compactMap { $0["local"] as? String }
        #expect(Set(local).isSuperset(of: ["10.200.0.1", "fd00:200::1"]))
        let ours = try json(setup.namespace.run(["ip", "-j", "route", "show", "table", "all", "proto", "107"]))
        let destinations = Set(ours.compactMap { $0["dst"] as? String })
        #expect(destinations == ["10.96.0.0/12", "fd00:96::/108", "10.96.0.1"])

        // What we say agrees.
        let routes = try netlink.routes()
        let mine = routes.filter(\.isOwnedByKtctl)
        #expect(Set(mine.map(\.destination.description)) == ["10.96.0.0/12", "fd00:96::/108", "10.96.0.1/32"])
        #expect(mine.first { $0.destination == cluster }?.interfaceName == "kt0")
        #expect(mine.contains { $0.type == .throw && $0.table.rawValue == 1000 })
        let looked = try netlink.routeGet(IPAddress("10.96.0.15")!)
        #expect(looked.destination == cluster && looked.interfaceName == "kt0" && looked.protocol == .ktctl)
        #expect(looked.preferredSource == IPAddress("10.200.0.1"))
        let link = try netlink.link(named: "kt0")
        #expect(link.mtu == 1400 && link.isUp && link.kind == "tun")
        #expect(
            try netlink.addresses(family: .ipv6, interface: index).contains { $0.address == IPAddress("fd00:200::1") })

        // Errors name the operation and errno and say nothing changed.
        #expect(throws: NetlinkError.self) {
            try netlink.addRoute(Route(destination: cluster, outputInterface: index, scope: .link))
        }
        do {
            try netlink.addRoute(Route(destination: cluster, outputInterface: index, scope: .link))
        } catch {
            #expect(error.code == EEXIST)
            #expect(
                error.description.hasPrefix(
                    "add route 10.96.0.0/12 dev if\(index) proto ktctl scope link failed: File exists (EEXIST)"))
            #expect(error.description.contains("Nothing was changed."))
        }
        #expect(throws: NetlinkError(operation: "find interface nope", code: ENODEV)) {
            try netlink.link(named: "nope")
        }
        do {
            _ = try setup.namespace.inside { try TunDevice.open(TunOptions(name: "kt0", virtioHeader: false)) }
            Issue.record("a second kt0 was created")
        } catch let error as NetlinkError {
            #expect(error.code == EBUSY && error.description.contains("an interface with that name exists"))
        }
        try netlink.deleteRoute(Route(destination: cluster, outputInterface: index))
        #expect(throws: NetlinkError.self) { try netlink.deleteRoute(Route(destination: cluster)) }

        // Closing the fd deletes the device, its addresses and routes: the kernel shows nothing left.
        setup.device.close()
        setup.device.close()
        let after = try json(setup.namespace.run(["ip", "-j", "link"]))
        #expect(after.compactMap { $0["ifname"] as? String } == ["lo"])
        let leftRoutes = try json(setup.namespace.run(["ip", "-j", "route", "show", "table", "all", "proto", "107"]))
        #expect(leftRoutes.compactMap { $0["dst"] as? String } == ["10.96.0.1"])  // a throw route has no device
    }

    // MARK: - Packets through the device

    @Test(arguments: [false, true])
    func kernelAnswersAnEchoWrittenIntoTheTun(virtioHeader: Bool) throws {
        let setup = try Setup(
            "kttun-echo", options: TunOptions(virtioHeader: virtioHeader), address: IPv4Address(10, 201, 0, 1))
        defer { setup.tearDown() }
        let peer = IPv4Address(10, 201, 0, 2)
        let ours = IPv4Address(10, 201, 0, 1)
        let data = ByteBuffer(string: "ktconnect echo through a TUN")
        var request = ByteBuffer()
        let icmp = ICMPv4Message.echoRequest(ICMPEcho(identifier: 0x4B54, sequenceNumber: 7, data: data))
        IPv4Header(protocol: .icmp, source: peer, destination: ours).emit(
            into: &request, payloadLength: icmp.encodedLength)
        icmp.emit(into: &request)
        try setup.device.write([request])
        let reply = try setup.read { packet -> ICMPEcho? in
            guard case .v4(let ip) = try? IPPacket(validating: packet), ip.protocol == .icmp, ip.destination == peer,
                case .echoReply(let echo) = try ICMPv4Message(parsing: ip.payload)
            else { return nil }
            return echo
        }
        #expect(reply == ICMPEcho(identifier: 0x4B54, sequenceNumber: 7, data: data))
    }

    @Test func aKernelConnectShowsUpAsASYN() throws {
        let setup = try Setup("kttun-syn", address: IPv4Address(10, 202, 0, 1))
        defer { setup.tearDown() }
        let client = try BackgroundCommand(
            setup.namespace, python: "import socket; socket.create_connection(('10.96.0.15', 8080), timeout=1)")
        defer { client.stop() }
        let syn = try setup.read { packet -> TCPSegment? in
            guard case .v4(let ip) = try? IPPacket(validating: packet), ip.protocol == .tcp else { return nil }
            let segment = try TCPSegment(validating: ip.payload)
            #expect(segment.isChecksumValid(IPPacket.v4(ip).pseudoHeader))
            #expect(ip.source == IPv4Address(10, 202, 0, 1) && ip.destination == IPv4Address(10, 96, 0, 15))
            return segment
        }
        let segment = try #require(syn)
        #expect(segment.flags == .syn && segment.destinationPort == 8080)
        #expect(segment.options.maximumSegmentSize == 1460 && segment.options.sackPermitted)
        #expect(segment.options.windowScale != nil && segment.options.timestamps != nil)
    }

    @Test func tsoSuperPacketsSplitIntoValidMSSSegments() throws {
        let setup = try Setup(
            "kttun-tso", options: TunOptions(virtioHeader: true, offloads: .all), address: IPv4Address(10, 203, 0, 1))
        defer { setup.tearDown() }
        #expect(setup.device.offloads.contains([.checksum, .tso4, .tso6]))
        let total = 300_000
        let client = try BackgroundCommand(
            setup.namespace,
            python: "import socket; s = socket.create_connection(('10.96.0.15', 80), timeout=10); "
                + "s.sendall(bytes(i % 251 for i in range(\(total)))); s.close()")
        defer { client.stop() }
        let server = IPv4Address(10, 96, 0, 15)
        let pseudoReply = IPPseudoHeader.v4(source: server, destination: IPv4Address(10, 203, 0, 1))
        // Play the server's TCP by hand: answer the SYN, then ACK everything, until all bytes arrived.
        let syn = try #require(
            try setup.read { packet -> TCPSegment? in
                guard case .v4(let ip) = try? IPPacket(validating: packet), ip.protocol == .tcp else { return nil }
                let segment = try TCPSegment(validating: ip.payload)
                return segment.flags == .syn ? segment : nil
            })
        let serverISN = TCPSequenceNumber(1_000_000)
        var expected = syn.sequenceNumber + UInt32(1)
        func send(_ flags: TCPFlags, sequence: TCPSequenceNumber, options: TCPOptions = TCPOptions()) throws {
            let header = TCPHeader(
                sourcePort: 80, destinationPort: syn.sourcePort, sequenceNumber: sequence,
                acknowledgementNumber: expected,
                flags: flags, window: 65535, options: options)
            var packet = ByteBuffer()
            IPv4Header(protocol: .tcp, source: server, destination: IPv4Address(10, 203, 0, 1))
                .emit(into: &packet, payloadLength: header.headerLength)
            header.emit(into: &packet, payload: ByteBuffer(), pseudoHeader: pseudoReply)
            try setup.device.write([packet])
        }
        try send([.syn, .ack], sequence: serverISN, options: TCPOptions(maximumSegmentSize: 1460, windowScale: 7))
        var received: [UInt8] = []
        var largestSegment = 0
        var finished = false
        let deadline = Date().addingTimeInterval(15)
        var packets: [ByteBuffer] = []
        while !finished, Date() < deadline {
            guard setup.device.waitUntilReadable(timeout: 100) else { continue }
            packets.removeAll()
            _ = try setup.device.read(into: &packets)
            for packet in packets {
                guard case .v4(let ip) = try IPPacket(validating: packet), ip.protocol == .tcp else { continue }
                let segment = try TCPSegment(validating: ip.payload)
                #expect(segment.isChecksumValid(IPPacket.v4(ip).pseudoHeader), "checksum of a split segment")
                largestSegment = max(largestSegment, segment.payloadLength)
                if segment.sequenceNumber == expected, segment.payloadLength > 0 {
                    received += Array(buffer: segment.payload)
                    expected = expected + UInt32(segment.payloadLength)
                }
                if segment.flags.contains(.fin), segment.sequenceNumber == expected {
                    expected = expected + UInt32(1)
                    finished = true
                }
            }
            try send([.ack], sequence: serverISN + UInt32(1))
        }
        #expect(finished)
        #expect(received.count == total)
        #expect(received == (0..<total).map { UInt8($0 % 251) })
        #expect(largestSegment <= 1460)
        // The kernel did hand over super-packets, and they were split.
        #expect(setup.device.superPacketsRead > 0)
        #expect(setup.device.largestRead > 1500)
        #expect(setup.device.malformedReads == 0)
    }

    @Test(arguments: [false, true])
    func coalescedSegmentsReachAKernelSocket(virtioHeader: Bool) throws {
        let setup = try Setup(
            "kttun-gro", options: TunOptions(virtioHeader: virtioHeader), address: IPv4Address(10, 206, 0, 1),
            route: nil)
        defer { setup.tearDown() }
        let output = "/tmp/\(setup.namespace.name).received"
        defer { unlink(output) }
        let server = try BackgroundCommand(
            setup.namespace,
            python: "import socket; l = socket.create_server(('10.206.0.1', 5002)); c, _ = l.accept(); "
                + "f = open('\(output)', 'wb'); [f.write(d) for d in iter(lambda: c.recv(65536), b'')]; f.close()")
        defer { server.stop() }
        // Python can take seconds to start on a loaded machine: wait until the port listens (a SYN sent before would
        // be answered with a reset, not the SYN-ACK this test waits for).
        let listening = Date().addingTimeInterval(15)
        while Date() < listening,
            (try? setup.namespace.run(["ss", "-ltnH", "sport = :5002"]))?.output.isEmpty ?? true
        {
            Thread.sleep(forTimeInterval: 0.05)
        }
        let me = IPv4Address(10, 206, 0, 2)
        let them = IPv4Address(10, 206, 0, 1)
        func segment(
            _ flags: TCPFlags, _ sequence: UInt32, _ ack: TCPSequenceNumber, _ payload: [UInt8] = [],
            options: TCPOptions = TCPOptions()
        ) -> ByteBuffer {
            let header = TCPHeader(
                sourcePort: 40001, destinationPort: 5002, sequenceNumber: TCPSequenceNumber(sequence),
                acknowledgementNumber: ack, flags: flags, window: 65535, options: options)
            var packet = ByteBuffer()
            IPv4Header(protocol: .tcp, source: me, destination: them).emit(
                into: &packet, payloadLength: header.headerLength + payload.count)
            header.emit(
                into: &packet, payload: ByteBuffer(bytes: payload), pseudoHeader: .v4(source: me, destination: them))
            return packet
        }
        try setup.device.write([
            segment(.syn, 1000, TCPSequenceNumber(0), options: TCPOptions(maximumSegmentSize: 1460))
        ])
        let synAck = try #require(
            try setup.read { packet -> TCPSegment? in
                guard case .v4(let ip) = try? IPPacket(validating: packet), ip.protocol == .tcp else { return nil }
                let tcp = try TCPSegment(validating: ip.payload)
                return tcp.flags.contains([.syn, .ack]) ? tcp : nil
            })
        let ack = synAck.sequenceNumber + UInt32(1)
        try setup.device.write([segment(.ack, 1001, ack)])
        // Twenty full segments and a short one, written in one batch: with a virtio header they become one write.
        var expected: [UInt8] = []
        var batch: [ByteBuffer] = []
        var sequence: UInt32 = 1001
        for index in 0..<21 {
            let payload = (0..<(index == 20 ? 300 : 1448)).map { UInt8(truncatingIfNeeded: $0 &+ index) }
            batch.append(segment(index == 20 ? [.ack, .psh] : .ack, sequence, ack, payload))
            expected += payload
            sequence += UInt32(payload.count)
        }
        let writes = try setup.device.write(batch)
        #expect(writes == (virtioHeader ? 1 : 21))
        let acked = try setup.read { packet -> Bool? in
            guard case .v4(let ip) = try? IPPacket(validating: packet), ip.protocol == .tcp else { return nil }
            let tcp = try TCPSegment(validating: ip.payload)
            return tcp.acknowledgementNumber == TCPSequenceNumber(sequence) ? true : nil
        }
        #expect(acked == true, "the kernel acknowledged every byte")
        try setup.device.write([segment([.fin, .ack], sequence, ack)])
        server.wait(seconds: 3)
        let received = (try? Data(contentsOf: URL(fileURLWithPath: output))).map { [UInt8]($0) }
        #expect(received == expected)
    }

    @Test func multiQueueDevicesLiveUntilTheLastQueueCloses() throws {
        let namespace = try TestNamespace(prefix: "kttun-mq")
        defer { namespace.delete() }
        let (first, second) = try namespace.inside { () throws -> (TunDevice, TunDevice) in
            let first = try TunDevice.open(TunOptions(name: "ktq0", virtioHeader: true, multiQueue: true))
            return (first, try first.openQueue())
        }
        #expect(first.name == "ktq0" && second.name == "ktq0" && first.descriptor != second.descriptor)
        let details = try namespace.run(["ip", "-d", "link", "show", "ktq0"])
        #expect(details.output.contains("multi_queue"))
        first.close()
        #expect(try namespace.run(["ip", "link", "show", "ktq0"]).status == 0)
        second.close()
        #expect(try namespace.run(["ip", "link", "show", "ktq0"]).status != 0)
        let single = try namespace.inside { try TunDevice.open(TunOptions(name: "ktq1", virtioHeader: false)) }
        defer { single.close() }
        #expect(throws: NetlinkError.self) { try single.openQueue() }
    }

    // MARK: - Without CAP_NET_ADMIN

    @Test func withoutNetAdminCreationFailsClearly() throws {
        let namespace = try TestNamespace(prefix: "kttun-cap")
        defer { namespace.delete() }
        let outcome = try namespace.inside { () -> String in
            try dropNetAdminOnThisThread()
            guard !Netlink.haveNetAdmin else { return "capability still present" }
            do {
                let device = try TunDevice.open(TunOptions(name: "kt0", virtioHeader: false))
                device.close()
                return "created"
            } catch {
                return "\(error)"
            }
        }
        #expect(outcome.hasPrefix("open TUN device kt0 failed: Operation not permitted (EPERM). Nothing was changed."))
        #expect(outcome.contains("needs root or CAP_NET_ADMIN"))
        let links = try json(namespace.run(["ip", "-j", "link"]))
        #expect(links.compactMap { $0["ifname"] as? String } == ["lo"])
    }
}

// MARK: - Helpers

func json(_ result: TestNamespace.CommandResult) throws -> [[String: Any]] {
    try TestNamespace.check(result)
    let value = try JSONSerialization.jsonObject(with: Data(result.output.utf8))
    return value as? [[String: Any]] ?? []
}

/// A process started in a namespace that a test stops when it is done (or that ends by itself).
final class BackgroundCommand: @unchecked Sendable {
    let process = Process()

    init(_ namespace: TestNamespace, python: String) throws {
        process.executableURL = URL(fileURLWithPath: TestNamespace.findExecutable("ip") ?? "/usr/sbin/ip")
        process.arguments = ["netns", "exec", namespace.name, "python3", "-c", python]
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
    }

    func stop() {
        if process.isRunning { process.terminate() }
        process.waitUntilExit()
    }

    /// Waits up to `seconds` for the process to end by itself.
    func wait(seconds: Double) {
        let deadline = Date().addingTimeInterval(seconds)
        while process.isRunning, Date() < deadline { Thread.sleep(forTimeInterval: 0.02) }
    }
}
