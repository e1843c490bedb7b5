import NIOCore
import Testing

@testable import KtWire

/// ICMPv4 and ICMPv6 messages that the Linux kernel and a router namespace sent.
@Suite struct ICMPTests {
    private func icmp(_ bytes: [UInt8]) throws -> (ByteBuffer, IPPseudoHeader) {
        let packet = try IPPacket(validating: ByteBuffer(bytes))
        return (packet.transportPayload, packet.pseudoHeader)
    }

    // MARK: - ICMPv4

    @Test func echoRequestAndReply() throws {
        let request = try ICMPv4Message(parsing: try icmp(Captured.icmpv4EchoRequest).0)
        let reply = try ICMPv4Message(parsing: try icmp(Captured.icmpv4EchoReply).0)
        guard case .echoRequest(let asked) = request, case .echoReply(let answered) = reply else {
            Issue.record("decoded \(request) and \(reply)")
            return
        }
        #expect(asked.identifier == 14406 && asked.sequenceNumber == 1 && asked.data.readableBytes == 56)
        #expect(answered.identifier == 14406 && answered.data == asked.data)
        // Turning the request into a reply is what the kernel did: the bytes match.
        let rebuilt = emitted { ICMPv4Message.echoReply(asked).emit(into: &$0) }
        #expect(rebuilt == Array(buffer: try icmp(Captured.icmpv4EchoReply).0))
    }

    @Test func portUnreachableQuotesTheOriginal() throws {
        let buffer = try icmp(Captured.icmpv4PortUnreachable).0
        let message = try ICMPv4Message(parsing: buffer)
        guard case .destinationUnreachable(let code, _, let original) = message else {
            Issue.record("decoded \(message)")
            return
        }
        #expect(code == .port)
        #expect(original.totalLength == 41 && original.identification == 49317 && original.dontFragment)
        #expect(original.source == IPv4Address(10, 77, 0, 1) && original.protocol == .udp)
        let udp = try UDPDatagram(validating: original.payload)
        #expect(udp.sourcePort == 54457 && udp.destinationPort == 33434)
        #expect(String(buffer: udp.payload) == "KtWire probe\n")
        #expect(emitted { message.emit(into: &$0) } == Array(buffer: buffer))
    }

    @Test func timeExceededFromARouter() throws {
        let message = try ICMPv4Message(parsing: try icmp(Captured.icmpv4TimeExceeded).0)
        guard case .timeExceeded(let code, let original) = message else {
            Issue.record("decoded \(message)")
            return
        }
        #expect(code == 0 && original.ttl == 1 && original.identification == 23224)
        #expect(original.destination == IPv4Address(10, 77, 2, 2))
    }

    @Test func quotedHeaderMayBeCutShortButMustBeWhole() throws {
        // A router that quotes only the header and 8 bytes (RFC 792) still parses.
        let full = Captured.icmpv4PortUnreachable
        let short = Array(full[..<(20 + 8 + 20 + 8)])
        let icmpBytes = Array(short[20...])
        var fixed = icmpBytes
        fixed[2] = 0
        fixed[3] = 0
        let value = referenceChecksum(fixed)
        fixed[2] = UInt8(value >> 8)
        fixed[3] = UInt8(value & 0xFF)
        let message = try ICMPv4Message(parsing: ByteBuffer(fixed))
        guard case .destinationUnreachable(_, _, let original) = message else {
            Issue.record("decoded \(message)")
            return
        }
        #expect(original.totalLength == 41 && original.payload.readableBytes == 8)
        // Fewer than 20 quoted bytes is not a usable error.
        #expect(throws: WireError.self) {
            try ICMPv4Message(parsing: ByteBuffer(Array(fixed[..<20])), verifyChecksum: false)
        }
    }

    @Test func icmpv4RefusesTruncationAndBadChecksums() throws {
        let bytes = Array(buffer: try icmp(Captured.icmpv4EchoRequest).0)
        for cut in truncations(of: bytes) where cut.count < 8 {
            #expect(throws: WireError.self) { try ICMPv4Message(parsing: ByteBuffer(cut)) }
        }
        var bad = bytes
        bad[10] ^= 0xFF
        #expect(throws: WireError.self) { try ICMPv4Message(parsing: ByteBuffer(bad)) }
        #expect((try? ICMPv4Message(parsing: ByteBuffer(bad), verifyChecksum: false)) != nil)
    }

    // MARK: - ICMPv6

    @Test func icmpv6Echo() throws {
        let (buffer, pseudo) = try icmp(Captured.icmpv6EchoRequest)
        let message = try ICMPv6Message(parsing: buffer, pseudoHeader: pseudo)
        guard case .echoRequest(let echo) = message else {
            Issue.record("decoded \(message)")
            return
        }
        #expect(echo.identifier == 14646 && echo.sequenceNumber == 1 && echo.data.readableBytes == 56)
        let (replyBuffer, replyPseudo) = try icmp(Captured.icmpv6EchoReply)
        #expect(
            emitted { ICMPv6Message.echoReply(echo).emit(into: &$0, pseudoHeader: replyPseudo) }
                == Array(buffer: replyBuffer))
        // The pseudo-header sum does not depend on which address is the source, so check against another pair.
        #expect(throws: WireError.self) {
            try ICMPv6Message(parsing: buffer, pseudoHeader: .v6(source: .loopback, destination: .loopback))
        }
    }

    @Test func icmpv6Errors() throws {
        let (unreachableBuffer, unreachablePseudo) = try icmp(Captured.icmpv6PortUnreachable)
        let unreachable = try ICMPv6Message(parsing: unreachableBuffer, pseudoHeader: unreachablePseudo)
        guard case .destinationUnreachable(let code, let original) = unreachable else {
            Issue.record("decoded \(unreachable)")
            return
        }
        #expect(code == 4 && original.upperLayerProtocol == .udp && original.flowLabel == 0x294D0)
        #expect(try UDPDatagram(validating: original.upperLayerPayload).destinationPort == 33434)
        #expect(
            emitted { unreachable.emit(into: &$0, pseudoHeader: unreachablePseudo) } == Array(buffer: unreachableBuffer)
        )

        let (bigBuffer, bigPseudo) = try icmp(Captured.icmpv6PacketTooBig)
        let tooBig = try ICMPv6Message(parsing: bigBuffer, pseudoHeader: bigPseudo)
        guard case .packetTooBig(let mtu, let cut) = tooBig else {
            Issue.record("decoded \(tooBig)")
            return
        }
        // The quote stops 216 bytes short of the original's 1448, and still parses.
        #expect(mtu == 1280 && cut.payloadLength == 1408 && cut.buffer.readableBytes == 1232)
        #expect(cut.destination == IPv6Address("fd00:77:2::2"))

        let (timeBuffer, timePseudo) = try icmp(Captured.icmpv6TimeExceeded)
        let time = try ICMPv6Message(parsing: timeBuffer, pseudoHeader: timePseudo)
        guard case .timeExceeded(0, let expired) = time else {
            Issue.record("decoded \(time)")
            return
        }
        #expect(expired.hopLimit == 1 && expired.upperLayerProtocol == .icmpv6)
    }

    @Test func icmpv6RefusesTruncation() throws {
        let (buffer, pseudo) = try icmp(Captured.icmpv6PortUnreachable)
        let bytes = Array(buffer: buffer)
        for cut in truncations(of: bytes) where cut.count < 48 {
            #expect(throws: WireError.self, "\(cut.count) bytes") { try ICMPv6Message(parsing: ByteBuffer(cut)) }
        }
        #expect(throws: WireError.self) {
            try ICMPv6Message(parsing: ByteBuffer(Array(bytes.dropLast())), pseudoHeader: pseudo)
        }
    }
}
