import NIOCore
import PropertyBased
import Testing

@testable import KtWire

/// IPv4 and IPv6 views against packets the Linux kernel sent (see CapturedPackets.swift for how they were taken).
@Suite struct IPTests {
    // MARK: - IPv4

    @Test func ipv4ReadsEveryFieldOfAKernelSYN() throws {
        let packet = try IPv4Packet(validating: ByteBuffer(Captured.ipv4TCPSyn))
        #expect(packet.headerLength == 20)
        #expect(packet.totalLength == 60)
        #expect(packet.trafficClass == TrafficClass(byte: 0))
        #expect(packet.identification == 31646)
        #expect(packet.dontFragment && !packet.moreFragments && !packet.isFragment)
        #expect(packet.fragmentOffset == 0)
        #expect(packet.ttl == 64)
        #expect(packet.protocol == .tcp)
        #expect(packet.source == IPv4Address(10, 77, 0, 1))
        #expect(packet.destination == IPv4Address(10, 77, 0, 2))
        #expect(packet.isHeaderChecksumValid)
        #expect(packet.options.readableBytes == 0)
        #expect(packet.payload.readableBytes == 40)
    }

    @Test func ipv4ReadsTOSAndFragments() throws {
        let unreachable = try IPv4Packet(validating: ByteBuffer(Captured.icmpv4PortUnreachable))
        #expect(unreachable.trafficClass == TrafficClass(dscp: 48, ecn: 0))  // tos 0xc0
        #expect(!unreachable.dontFragment)
        let first = try IPv4Packet(validating: ByteBuffer(Captured.ipv4FirstFragment))
        #expect(first.moreFragments && first.fragmentOffset == 0 && first.isFragment)
        #expect(first.identification == 53911 && first.totalLength == 1500)
        let last = try IPv4Packet(validating: ByteBuffer(Captured.ipv4LastFragment))
        #expect(!last.moreFragments && last.fragmentOffset == 2960 && last.isFragment)
        #expect(last.payload.readableBytes == 48)
        #expect(IPPacket.v4(last).isFragment)
    }

    @Test func ipv4EmitRebuildsTheKernelsBytes() throws {
        for bytes in [
            Captured.ipv4TCPSyn, Captured.icmpv4EchoReply, Captured.ipv4LastFragment, Captured.ipv4UDPDNSQuery,
        ] {
            let packet = try IPv4Packet(validating: ByteBuffer(bytes))
            let rebuilt = emitted { buffer in
                packet.header.emit(into: &buffer, payloadLength: packet.payload.readableBytes)
                var payload = packet.payload
                buffer.writeBuffer(&payload)
            }
            #expect(rebuilt == bytes)
        }
    }

    @Test func ipv4DropsLinkPaddingAfterTotalLength() throws {
        let padded = Captured.ipv4TCPSyn + [0, 0, 0, 0, 0, 0]
        let packet = try IPv4Packet(validating: ByteBuffer(padded))
        #expect(packet.buffer.readableBytes == 60)
    }

    @Test func ipv4RefusesEveryTruncation() {
        for cut in truncations(of: Captured.ipv4TCPSyn) {
            #expect(throws: WireError.self, "\(cut.count) bytes") { try IPv4Packet(validating: ByteBuffer(cut)) }
        }
    }

    @Test func ipv4NamesTheBadField() {
        var bytes = Captured.ipv4TCPSyn
        bytes[0] = 0x65
        #expect(throws: WireError(.invalidValue, "IPv4.version", "6")) { try IPv4Packet(validating: ByteBuffer(bytes)) }
        bytes[0] = 0x44
        #expect(throws: WireError(.invalidValue, "IPv4.ihl", "4 words; the minimum is 5")) {
            try IPv4Packet(validating: ByteBuffer(bytes))
        }
        bytes[0] = 0x4F  // 60-byte header, longer than the 60-byte... total length says 60: options need 40 more
        bytes[2] = 0
        bytes[3] = 61
        #expect(throws: WireError.self) { try IPv4Packet(validating: ByteBuffer(bytes)) }
        bytes = Captured.ipv4TCPSyn
        bytes[3] = 19  // total length 19 < header 20
        #expect(throws: WireError(.invalidValue, "IPv4.totalLength", "19 is less than the header's 20")) {
            try IPv4Packet(validating: ByteBuffer(bytes))
        }
        bytes = Captured.ipv4TCPSyn
        bytes[8] = 63  // TTL changed without fixing the checksum
        #expect(throws: WireError(.badChecksum, "IPv4.headerChecksum", "0xaa81")) {
            try IPv4Packet(validating: ByteBuffer(bytes))
        }
        #expect((try? IPv4Packet(validating: ByteBuffer(bytes), verifyChecksum: false)) != nil)
    }

    @Test func ipv4OptionsAreSkippedSafely() throws {
        // A header with a 4-byte option (NOP NOP NOP EOL): IHL 6.
        let header = IPv4Header(
            protocol: .udp, source: IPv4Address(10, 0, 0, 1), destination: IPv4Address(10, 0, 0, 2),
            options: [1, 1, 1, 0])
        let bytes = emitted { buffer in
            header.emit(into: &buffer, payloadLength: 3)
            buffer.writeBytes([7, 8, 9])
        }
        let packet = try IPv4Packet(validating: ByteBuffer(bytes))
        #expect(packet.headerLength == 24)
        #expect(Array(buffer: packet.options) == [1, 1, 1, 0])
        #expect(Array(buffer: packet.payload) == [7, 8, 9])
        #expect(packet.header == header)
    }

    @Test func ipv4HeaderRoundTripsForAnyValues() async {
        let fields = Gen.uint8().array(of: 12)
        await propertyCheck(input: fields, Gen.uint16(in: 0...1400)) { f, payloadLength in
            let header = IPv4Header(
                trafficClass: TrafficClass(byte: f[0]), identification: UInt16(f[1]) << 8 | UInt16(f[2]),
                dontFragment: f[3] & 1 == 1, moreFragments: f[3] & 2 == 2, fragmentOffset: Int(f[4]) * 8,
                ttl: f[5], protocol: IPProtocol(rawValue: f[6]), source: IPv4Address(f[7], f[8], f[9], f[10]),
                destination: IPv4Address(f[11], f[10], f[9], f[8]))
            let bytes = emitted { buffer in
                header.emit(into: &buffer, payloadLength: Int(payloadLength))
                buffer.writeRepeatingByte(0xAB, count: Int(payloadLength))
            }
            #expect(bytes.count == 20 + Int(payloadLength))
            #expect((try? IPv4Packet(validating: ByteBuffer(bytes)))?.header == header)
        }
    }

    // MARK: - IPv6

    @Test func ipv6ReadsEveryFieldOfAKernelSYN() throws {
        let packet = try IPv6Packet(validating: ByteBuffer(Captured.ipv6TCPSyn))
        #expect(packet.trafficClass == TrafficClass(byte: 0))
        #expect(packet.flowLabel == 0xCF4A5)
        #expect(packet.payloadLength == 40)
        #expect(packet.nextHeader == .tcp && packet.upperLayerProtocol == .tcp)
        #expect(packet.upperLayerOffset == 40)
        #expect(packet.hopLimit == 64)
        #expect(packet.source == IPv6Address("fd00:77::1"))
        #expect(packet.destination == IPv6Address("fd00:77::2"))
        #expect(packet.fragment == nil && !packet.isFragment)
        #expect(packet.upperLayerPayload.readableBytes == 40)
    }

    @Test func ipv6WalksHopByHopToICMPv6() throws {
        let packet = try IPv6Packet(validating: ByteBuffer(Captured.ipv6HopByHopMLD))
        #expect(packet.nextHeader == .hopByHop)
        #expect(packet.upperLayerProtocol == .icmpv6)
        #expect(packet.upperLayerOffset == 48)
        #expect(packet.source == .any && packet.destination == IPv6Address("ff02::16"))
        #expect(packet.hopLimit == 1)
        let mld = try ICMPv6Message(parsing: packet.upperLayerPayload, pseudoHeader: IPPacket.v6(packet).pseudoHeader)
        guard case .other(let type, _, _, _) = mld else {
            Issue.record("MLD report decoded as \(mld)")
            return
        }
        #expect(type == 143)
    }

    @Test func ipv6FragmentHeaders() throws {
        let first = try IPv6Packet(validating: ByteBuffer(Captured.ipv6Fragment))
        #expect(first.nextHeader == .ipv6Fragment)
        #expect(first.fragment == IPv6FragmentHeader(offset: 0, moreFragments: true, identification: 0xBA74_B5A5))
        #expect(first.upperLayerProtocol == .icmpv6 && first.upperLayerOffset == 48 && first.isFragment)
        let last = try IPv6Packet(validating: ByteBuffer(Captured.ipv6LastFragment))
        #expect(last.fragment == IPv6FragmentHeader(offset: 2896, moreFragments: false, identification: 0xBA74_B5A5))
        #expect(last.isFragment && last.upperLayerPayload.readableBytes == 112)
    }

    @Test func ipv6EmitRebuildsTheKernelsBytes() throws {
        for bytes in [Captured.ipv6TCPSyn, Captured.icmpv6EchoReply, Captured.ipv6HopByHopMLD] {
            let packet = try IPv6Packet(validating: ByteBuffer(bytes))
            let rebuilt = emitted { buffer in
                packet.header.emit(into: &buffer, payloadLength: packet.payloadLength)
                buffer.writeBytes(bytes[40...])
            }
            #expect(rebuilt == bytes)
        }
    }

    @Test func ipv6RefusesEveryTruncationAndBadChains() {
        for cut in truncations(of: Captured.ipv6HopByHopMLD) {
            #expect(throws: WireError.self, "\(cut.count) bytes") { try IPv6Packet(validating: ByteBuffer(cut)) }
        }
        // An extension header whose length runs past the packet.
        var long = Captured.ipv6HopByHopMLD
        long[41] = 20
        #expect(throws: WireError(.truncated, "IPv6.extensionHeader[0]", "length 168")) {
            try IPv6Packet(validating: ByteBuffer(long))
        }
        // Nine destination-options headers of 8 bytes each: longer than we walk.
        var chain = emitted { buffer in
            IPv6Header(nextHeader: .ipv6DestinationOptions, source: .loopback, destination: .loopback)
                .emit(into: &buffer, payloadLength: 9 * 8)
        }
        for index in 0..<9 { chain += [index == 8 ? 59 : 60, 0, 1, 4, 0, 0, 0, 0] }
        #expect(throws: WireError(.loop, "IPv6.extensionHeaders", "more than 8")) {
            try IPv6Packet(validating: ByteBuffer(chain))
        }
        // Hop-by-Hop anywhere but first is refused (RFC 8200 §4.1).
        var misplaced = Captured.ipv6HopByHopMLD
        misplaced[40] = 0
        #expect(throws: WireError(.invalidValue, "IPv6.hopByHop", "not directly after the fixed header")) {
            try IPv6Packet(validating: ByteBuffer(misplaced))
        }
    }

    @Test func ipPacketDispatchesOnVersion() throws {
        let v4 = try IPPacket(validating: ByteBuffer(Captured.ipv4TCPSyn))
        #expect(v4.source == .v4(IPv4Address(10, 77, 0, 1)) && v4.transportProtocol == .tcp)
        let v6 = try IPPacket(validating: ByteBuffer(Captured.ipv6Fragment))
        #expect(v6.destination == IPAddress("fd00:77::2") && v6.isFragment)
        #expect(throws: WireError(.truncated, "IP.version", "empty packet")) { try IPPacket(validating: ByteBuffer()) }
        #expect(throws: WireError(.invalidValue, "IP.version", "5")) { try IPPacket(validating: ByteBuffer([0x50])) }
    }
}
