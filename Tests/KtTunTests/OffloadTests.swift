import KtWire
import NIOCore
import PropertyBased
import Testing

@testable import KtTun

/// Segmentation (what the kernel writes with TSO/USO) and coalescing (what we write back), as pure functions.
@Suite struct OffloadTests {
    static let client = IPv4Address(10, 77, 0, 1)
    static let server = IPv4Address(10, 96, 0, 15)

    /// A TCP segment from `client` to `server` with timestamps, complete checksums.
    static func segment(
        sequence: UInt32, payload: [UInt8], flags: TCPFlags = [.ack], identification: UInt16 = 100,
        v6: Bool = false, sourcePort: PortNumber = 40000
    ) -> ByteBuffer {
        let tcp = TCPHeader(
            sourcePort: sourcePort, destinationPort: 8080, sequenceNumber: TCPSequenceNumber(sequence),
            acknowledgementNumber: TCPSequenceNumber(777), flags: flags, window: 1024,
            options: TCPOptions(timestamps: TCPTimestamps(value: 5, echoReply: 6)))
        var buffer = ByteBuffer()
        let tcpLength = tcp.headerLength + payload.count
        if v6 {
            let source = IPv6Address(bits: 0xFD00 << 112 | 1)
            let destination = IPv6Address(bits: 0xFD00 << 112 | 0x15)
            IPv6Header(nextHeader: .tcp, source: source, destination: destination).emit(
                into: &buffer, payloadLength: tcpLength)
            tcp.emit(
                into: &buffer, payload: ByteBuffer(bytes: payload),
                pseudoHeader: .v6(source: source, destination: destination))
        } else {
            IPv4Header(identification: identification, protocol: .tcp, source: client, destination: server)
                .emit(into: &buffer, payloadLength: tcpLength)
            tcp.emit(
                into: &buffer, payload: ByteBuffer(bytes: payload),
                pseudoHeader: .v4(source: client, destination: server))
        }
        return buffer
    }

    /// Checks that `packet` is a valid IP/TCP packet with correct checksums and returns its parts.
    static func validTCP(_ packet: ByteBuffer) throws -> (IPPacket, TCPSegment) {
        let ip = try IPPacket(validating: packet)
        let tcp = try TCPSegment(validating: ip.transportPayload)
        #expect(tcp.isChecksumValid(ip.pseudoHeader), "TCP checksum")
        return (ip, tcp)
    }

    // MARK: - Splitting

    @Test(arguments: [false, true])
    func splitsATSOSuperPacketIntoValidSegments(v6: Bool) throws {
        let payload = (0..<10000).map { UInt8(truncatingIfNeeded: $0 &* 7) }
        let superPacket = Self.segment(sequence: 1000, payload: payload, flags: [.ack, .psh], v6: v6)
        let ipHeader = v6 ? 40 : 20
        let header = VirtioNetHeader(
            flags: .needsChecksum, gsoType: v6 ? .tcpv6 : .tcpv4, headerLength: UInt16(ipHeader + 32), gsoSize: 1448,
            checksumStart: UInt16(ipHeader), checksumOffset: 16)
        var output: [ByteBuffer] = []
        try SegmentationOffload.split(header, packet: superPacket, into: &output)
        #expect(output.count == 7)
        var joined: [UInt8] = []
        for (index, packet) in output.enumerated() {
            let (ip, tcp) = try Self.validTCP(packet)
            #expect(tcp.sequenceNumber == TCPSequenceNumber(1000 + UInt32(index * 1448)))
            #expect(tcp.payloadLength == (index < 6 ? 1448 : 10000 - 6 * 1448))
            #expect(tcp.flags == (index == 6 ? [.ack, .psh] : [.ack]))
            #expect(tcp.options.timestamps == TCPTimestamps(value: 5, echoReply: 6))
            if case .v4(let v4) = ip { #expect(v4.identification == 100 + UInt16(index)) }
            joined += Array(buffer: tcp.payload)
        }
        #expect(joined == payload)
    }

    @Test func completesAPartialChecksum() throws {
        let packet = Self.segment(sequence: 1, payload: Array("hello".utf8))
        var partial = packet
        var pseudo = InternetChecksum()
        pseudo.addPseudoHeader(source: Self.client, destination: Self.server, protocol: .tcp, length: 32 + 5)
        partial.setInteger(pseudo.foldedSum, at: 20 + 16)
        let header = VirtioNetHeader(
            flags: .needsChecksum, gsoType: .none, headerLength: 0, gsoSize: 0, checksumStart: 20, checksumOffset: 16)
        var output: [ByteBuffer] = []
        try SegmentationOffload.split(header, packet: partial, into: &output)
        #expect(output == [packet])
    }

    @Test func splitsUDPSegmentationOffload() throws {
        var superPacket = ByteBuffer()
        let payload = [UInt8](repeating: 9, count: 3000)
        IPv4Header(identification: 7, protocol: .udp, source: Self.client, destination: Self.server)
            .emit(into: &superPacket, payloadLength: 8 + payload.count)
        UDPHeader(sourcePort: 5000, destinationPort: 53).emit(
            into: &superPacket, payload: ByteBuffer(bytes: payload),
            pseudoHeader: .v4(source: Self.client, destination: Self.server))
        let header = VirtioNetHeader(
            flags: .needsChecksum, gsoType: .udpL4, headerLength: 28, gsoSize: 1200, checksumStart: 20,
            checksumOffset: 6)
        var output: [ByteBuffer] = []
        try SegmentationOffload.split(header, packet: superPacket, into: &output)
        #expect(output.count == 3)
        for (index, packet) in output.enumerated() {
            let ip = try IPPacket(validating: packet)
            let udp = try UDPDatagram(validating: ip.transportPayload)
            #expect(udp.isChecksumValid(ip.pseudoHeader))
            #expect(udp.payload.readableBytes == [1200, 1200, 600][index])
        }
    }

    @Test func refusesNonsenseHeaders() {
        var output: [ByteBuffer] = []
        let packet = Self.segment(sequence: 1, payload: [1, 2, 3])
        let zeroMSS = VirtioNetHeader(
            flags: [], gsoType: .tcpv4, headerLength: 52, gsoSize: 0, checksumStart: 20, checksumOffset: 16)
        #expect(throws: WireError.self) { try SegmentationOffload.split(zeroMSS, packet: packet, into: &output) }
        let tinyMSS = VirtioNetHeader(
            flags: [], gsoType: .tcpv4, headerLength: 52, gsoSize: 1, checksumStart: 20, checksumOffset: 16)
        let big = Self.segment(sequence: 1, payload: [UInt8](repeating: 0, count: 1000))
        #expect(throws: WireError(.tooLong, "virtio_net_hdr.gso_size", "1000 segments of 1")) {
            try SegmentationOffload.split(tinyMSS, packet: big, into: &output)
        }
        let wrongProtocol = VirtioNetHeader(
            flags: [], gsoType: .udpL4, headerLength: 28, gsoSize: 100, checksumStart: 20, checksumOffset: 6)
        #expect(throws: WireError.self) { try SegmentationOffload.split(wrongProtocol, packet: packet, into: &output) }
        let pastEnd = VirtioNetHeader(
            flags: .needsChecksum, gsoType: .none, headerLength: 0, gsoSize: 0, checksumStart: 60, checksumOffset: 16)
        #expect(throws: WireError.self) { try SegmentationOffload.split(pastEnd, packet: packet, into: &output) }
        #expect(output.isEmpty)
        var short = ByteBuffer(bytes: [1, 2, 3])
        #expect(throws: WireError.self) { try VirtioNetHeader(reading: &short) }
    }

    @Test func virtioHeaderRoundTrips() throws {
        let header = VirtioNetHeader(
            flags: .needsChecksum, gsoType: .tcpv6, headerLength: 72, gsoSize: 1428, checksumStart: 40,
            checksumOffset: 16)
        var buffer = ByteBuffer()
        header.write(into: &buffer)
        #expect(Array(buffer: buffer) == [1, 4, 72, 0, 0x94, 0x05, 40, 0, 16, 0])
        #expect(try VirtioNetHeader(reading: &buffer) == header)
        #expect(buffer.readableBytes == 0)
    }

    // MARK: - Coalescing

    @Test(arguments: [false, true])
    func coalescesAFlowAndSplitsBackToTheSameSegments(v6: Bool) throws {
        let sizes = [1448, 1448, 1448, 1448, 700]
        var sequence: UInt32 = 5000
        var segments: [ByteBuffer] = []
        for (index, size) in sizes.enumerated() {
            let flags: TCPFlags = index == sizes.count - 1 ? [.ack, .psh] : [.ack]
            segments.append(
                Self.segment(
                    sequence: sequence, payload: [UInt8](repeating: UInt8(index), count: size), flags: flags,
                    identification: 100 + UInt16(index), v6: v6))
            sequence &+= UInt32(size)
        }
        let written = TCPCoalescer.coalesce(segments)
        #expect(written.count == 1)
        let joined = try #require(written.first)
        #expect(joined.header.gsoType == (v6 ? .tcpv6 : .tcpv4) && joined.header.gsoSize == 1448)
        #expect(joined.header.flags == .needsChecksum && joined.header.checksumOffset == 16)
        var split: [ByteBuffer] = []
        try SegmentationOffload.split(joined.header, packet: joined.packet, into: &split)
        #expect(split == segments)
    }

    @Test func keepsFlowsApartAndOrderWithinAFlow() throws {
        let a0 = Self.segment(sequence: 0, payload: [UInt8](repeating: 1, count: 100))
        let b0 = Self.segment(sequence: 0, payload: [UInt8](repeating: 2, count: 100), sourcePort: 40001)
        let a1 = Self.segment(sequence: 100, payload: [UInt8](repeating: 1, count: 100), identification: 101)
        let b1 = Self.segment(
            sequence: 100, payload: [UInt8](repeating: 2, count: 100), identification: 101, sourcePort: 40001)
        let aFin = Self.segment(sequence: 200, payload: [], flags: [.ack, .fin])
        let a2 = Self.segment(sequence: 200, payload: [UInt8](repeating: 1, count: 100))
        let written = TCPCoalescer.coalesce([a0, b0, a1, b1, aFin, a2])
        // a0+a1 joined, b0+b1 joined, the FIN passes through and closes flow a, so a2 stays on its own after it.
        #expect(written.count == 4)
        #expect(written[0].header.gsoType == .tcpv4 && written[1].header.gsoType == .tcpv4)
        #expect(written[2].packet == aFin && written[2].header == .plain)
        #expect(written[3].packet == a2)
    }

    @Test func refusesWhatLinuxWouldNotJoin() {
        let first = Self.segment(sequence: 0, payload: [UInt8](repeating: 1, count: 100))
        let gap = Self.segment(sequence: 150, payload: [UInt8](repeating: 1, count: 100))
        let longer = Self.segment(sequence: 100, payload: [UInt8](repeating: 1, count: 200))
        let pushed = Self.segment(sequence: 0, payload: [UInt8](repeating: 1, count: 100), flags: [.ack, .psh])
        let afterPush = Self.segment(sequence: 100, payload: [UInt8](repeating: 1, count: 100))
        #expect(TCPCoalescer.coalesce([first, gap]).count == 2)
        #expect(TCPCoalescer.coalesce([first, longer]).count == 2)
        #expect(TCPCoalescer.coalesce([pushed, afterPush]).count == 2)
        #expect(TCPCoalescer.coalesce([first]).map(\.header) == [.plain])
    }

    @Test func anyBatchSplitsBackToWhatWentIn() async {
        // Random sizes and flows: whatever is joined, splitting gives back every packet in per-flow order.
        await propertyCheck(count: 100, input: Gen.int(in: 1...1448).array(of: 1...30), Gen.uint8().array(of: 30)) {
            sizes, flowChoice in
            var next: [UInt32] = [0, 0, 0]
            var packets: [ByteBuffer] = []
            for (index, size) in sizes.enumerated() {
                let flow = Int(flowChoice[index] % 3)
                packets.append(
                    Self.segment(
                        sequence: next[flow], payload: [UInt8](repeating: UInt8(index), count: size),
                        identification: UInt16(index), sourcePort: PortNumber(40000 + UInt16(flow))))
                next[flow] &+= UInt32(size)
            }
            var split: [ByteBuffer] = []
            for item in TCPCoalescer.coalesce(packets) {
                #expect((try? SegmentationOffload.split(item.header, packet: item.packet, into: &split)) != nil)
            }
            func payloads(_ list: [ByteBuffer], port: UInt16) -> [[UInt8]] {
                list.compactMap { packet in
                    guard let ip = try? IPPacket(validating: packet),
                        let tcp = try? TCPSegment(validating: ip.transportPayload),
                        tcp.isChecksumValid(ip.pseudoHeader), tcp.sourcePort.rawValue == port
                    else { return nil }
                    return Array(buffer: tcp.payload)
                }
            }
            for port in UInt16(40000)...40002 {
                #expect(payloads(split, port: port) == payloads(packets, port: port))
            }
        }
    }
}
