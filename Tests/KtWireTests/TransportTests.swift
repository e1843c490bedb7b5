import NIOCore
import PropertyBased
import Testing

@testable import KtWire

/// TCP and UDP views against segments the Linux kernel sent.
@Suite struct TransportTests {
    private func transport(_ bytes: [UInt8]) throws -> (ByteBuffer, IPPseudoHeader) {
        let packet = try IPPacket(validating: ByteBuffer(bytes))
        return (packet.transportPayload, packet.pseudoHeader)
    }

    // MARK: - TCP

    @Test func tcpReadsEveryFieldAndOptionOfAKernelSYN() throws {
        let (bytes, pseudo) = try transport(Captured.ipv4TCPSyn)
        let segment = try TCPSegment(validating: bytes)
        #expect(segment.sourcePort == 49422 && segment.destinationPort == 8080)
        #expect(segment.sequenceNumber == TCPSequenceNumber(4_270_323_486))
        #expect(segment.acknowledgementNumber == TCPSequenceNumber(0))
        #expect(segment.headerLength == 40)
        #expect(segment.flags == .syn)
        #expect(segment.window == 64240)
        #expect(segment.checksum == 0xDF12)
        #expect(segment.urgentPointer == 0)
        #expect(segment.payloadLength == 0 && segment.sequenceLength == 1)
        #expect(segment.isChecksumValid(pseudo))
        #expect(
            segment.options
                == TCPOptions(
                    maximumSegmentSize: 1460, windowScale: 10, sackPermitted: true,
                    timestamps: TCPTimestamps(value: 1_911_296_299, echoReply: 0)))
    }

    @Test func tcpSynAckDataAndSACK() throws {
        let synAck = try TCPSegment(validating: try transport(Captured.ipv4TCPSynAck).0)
        #expect(synAck.flags == [.syn, .ack])
        #expect(synAck.acknowledgementNumber == TCPSequenceNumber(4_270_323_487))
        #expect(synAck.options.timestamps == TCPTimestamps(value: 1_366_089_331, echoReply: 1_911_296_299))

        let (dataBytes, dataPseudo) = try transport(Captured.ipv4TCPDataWithTimestamps)
        let data = try TCPSegment(validating: dataBytes)
        #expect(data.flags == [.psh, .ack])
        #expect(data.payloadLength == 87 && data.sequenceLength == 87)
        #expect(String(buffer: data.payload).hasPrefix("GET /hello.txt HTTP/1.1\r\n"))
        #expect(data.options.timestamps == TCPTimestamps(value: 1_911_296_299, echoReply: 1_366_089_331))
        #expect(data.options.maximumSegmentSize == nil && data.options.windowScale == nil)
        #expect(data.isChecksumValid(dataPseudo))

        let (sackBytes, sackPseudo) = try transport(Captured.ipv4TCPAckWithSACK)
        let sack = try TCPSegment(validating: sackBytes)
        #expect(sack.flags == .ack && sack.window == 76)
        #expect(
            sack.options.sackBlocks == [
                TCPSACKBlock(left: TCPSequenceNumber(1_174_579_973), right: TCPSequenceNumber(1_174_581_421)),
                TCPSACKBlock(left: TCPSequenceNumber(1_174_568_389), right: TCPSequenceNumber(1_174_578_525)),
            ])
        #expect(sack.options.timestamps == TCPTimestamps(value: 2_871_414_117, echoReply: 1_668_436_339))
        #expect(sack.isChecksumValid(sackPseudo))
    }

    @Test func tcpOverIPv6() throws {
        let (bytes, pseudo) = try transport(Captured.ipv6TCPSyn)
        let segment = try TCPSegment(validating: bytes)
        #expect(segment.sourcePort == 35168 && segment.options.maximumSegmentSize == 1440)
        #expect(segment.isChecksumValid(pseudo))
        #expect(!segment.isChecksumValid(.v6(source: .loopback, destination: .loopback)))
    }

    @Test func tcpEmitRebuildsTheKernelsBytesWhereTheLayoutIsLinuxs() throws {
        // Linux lays out SYN-ACK and SACK options exactly as TCPOptions.emit does, so the bytes match one for one.
        for fixture in [
            Captured.ipv4TCPSynAck, Captured.ipv4TCPDataWithTimestamps, Captured.ipv4TCPAckWithSACK,
            Captured.ipv6TCPSynAck,
        ] {
            let (bytes, pseudo) = try transport(fixture)
            let segment = try TCPSegment(validating: bytes)
            let rebuilt = emitted { segment.header.emit(into: &$0, payload: segment.payload, pseudoHeader: pseudo) }
            #expect(rebuilt == Array(buffer: bytes))
        }
    }

    @Test func tcpUnknownOptionsArePreserved() throws {
        // MSS, then a TCP Fast Open cookie (kind 34) and an experimental option (kind 254) with data.
        var options = TCPOptions(maximumSegmentSize: 1400)
        options.unknown = [
            TCPUnknownOption(kind: 34, data: [1, 2, 3, 4, 5, 6, 7, 8]),
            TCPUnknownOption(kind: 254, data: [0xF9, 0x89]),
        ]
        let header = TCPHeader(
            sourcePort: 1, destinationPort: 2, sequenceNumber: TCPSequenceNumber(7), flags: .syn, window: 100,
            options: options)
        let pseudo = IPPseudoHeader.v4(source: IPv4Address(1, 1, 1, 1), destination: IPv4Address(2, 2, 2, 2))
        let bytes = emitted { header.emit(into: &$0, payload: ByteBuffer(), pseudoHeader: pseudo) }
        #expect(bytes.count == 20 + 20)
        let segment = try TCPSegment(validating: ByteBuffer(bytes))
        #expect(segment.options == options)
        #expect(segment.isChecksumValid(pseudo))
    }

    @Test func tcpRefusesTruncationsAndMalformedOptions() throws {
        let syn = Array(buffer: try transport(Captured.ipv4TCPSyn).0)
        for cut in truncations(of: syn) {
            #expect(throws: WireError.self, "\(cut.count) bytes") { try TCPSegment(validating: ByteBuffer(cut)) }
        }
        var bytes = syn
        bytes[12] = 0x40  // data offset 4 words
        #expect(throws: WireError(.invalidValue, "TCP.dataOffset", "4 words; the minimum is 5")) {
            try TCPSegment(validating: ByteBuffer(bytes))
        }
        bytes = syn
        bytes[21] = 5  // MSS with length 5
        #expect(throws: WireError.self) { try TCPSegment(validating: ByteBuffer(bytes)) }
        bytes = syn
        bytes[21] = 1  // an option length below 2 would never advance
        #expect(throws: WireError(.invalidValue, "TCP.option[2].length", "1 is less than 2")) {
            try TCPSegment(validating: ByteBuffer(bytes))
        }
        bytes = syn
        bytes[38] = 4  // window scale whose length runs past the options area
        #expect(throws: WireError(.truncated, "TCP.option[3]", "length 4, 3 bytes left")) {
            try TCPSegment(validating: ByteBuffer(bytes))
        }
        bytes = syn
        bytes[26] = 5
        bytes[27] = 9  // SACK length that is not 2 + 8n
        #expect(throws: WireError(.invalidValue, "TCP.option.sack.length", "9 is not 2 + 8n")) {
            try TCPSegment(validating: ByteBuffer(bytes))
        }
    }

    @Test func tcpOptionsRoundTripForAnyValues() async {
        let gen = Gen.uint32().array(of: 0...8)
        await propertyCheck(input: gen, Gen.uint16(), Gen.uint8(in: 0...14), Gen.bool) { words, mss, scale, flag in
            var options = TCPOptions(sackPermitted: flag)
            if flag { options.maximumSegmentSize = mss } else { options.windowScale = scale }
            if words.count >= 2 { options.timestamps = TCPTimestamps(value: words[0], echoReply: words[1]) }
            let blocks = stride(from: 2, to: words.count - 1, by: 2).map {
                TCPSACKBlock(left: TCPSequenceNumber(words[$0]), right: TCPSequenceNumber(words[$0 + 1]))
            }
            options.sackBlocks = Array(blocks.prefix(options.timestamps == nil ? 4 : 2))
            guard options.encodedLength <= TCPOptions.maximumLength else { return }
            var buffer = ByteBuffer()
            options.emit(into: &buffer)
            #expect(buffer.readableBytes == options.encodedLength && buffer.readableBytes % 4 == 0)
            #expect((try? TCPOptions(parsing: buffer)) == options)
        }
    }

    // MARK: - UDP

    @Test func udpReadsADigQuery() throws {
        let (bytes, pseudo) = try transport(Captured.ipv4UDPDNSQuery)
        let datagram = try UDPDatagram(validating: bytes)
        #expect(datagram.sourcePort == 51606 && datagram.destinationPort == 53)
        #expect(datagram.length == 60)
        #expect(datagram.isChecksumValid(pseudo))
        #expect(Array(buffer: datagram.payload) == Captured.dnsQueryFromDig)
        let rebuilt = emitted { datagram.header.emit(into: &$0, payload: datagram.payload, pseudoHeader: pseudo) }
        #expect(rebuilt == Array(buffer: bytes))
    }

    @Test func udpChecksumRules() throws {
        var bytes = Array(buffer: try transport(Captured.ipv4UDPDNSQuery).0)
        bytes[6] = 0
        bytes[7] = 0
        let datagram = try UDPDatagram(validating: ByteBuffer(bytes))
        // Zero means "no checksum" over IPv4 (RFC 768) but is invalid over IPv6 (RFC 8200 §8.1).
        #expect(datagram.isChecksumValid(.v4(source: .any, destination: .any)))
        #expect(!datagram.isChecksumValid(.v6(source: .any, destination: .any)))
    }

    @Test func udpRefusesBadLengths() throws {
        let bytes = Array(buffer: try transport(Captured.ipv4UDPDNSQuery).0)
        for cut in truncations(of: bytes) {
            #expect(throws: WireError.self, "\(cut.count) bytes") { try UDPDatagram(validating: ByteBuffer(cut)) }
        }
        var short = bytes
        short[4] = 0
        short[5] = 7
        #expect(throws: WireError(.invalidValue, "UDP.length", "7 is less than the header's 8")) {
            try UDPDatagram(validating: ByteBuffer(short))
        }
        // Bytes after the length field's end are not part of the datagram.
        let padded = try UDPDatagram(validating: ByteBuffer(bytes + [1, 2, 3]))
        #expect(padded.buffer.readableBytes == 60)
    }

    @Test func udpEmitGivesAValidChecksumForAnyPayload() async {
        await propertyCheck(input: Gen.uint8().array(of: 0...600), Gen.uint16(), Gen.uint16()) {
            payload, source, destination in
            let header = UDPHeader(sourcePort: PortNumber(source), destinationPort: PortNumber(destination))
            for pseudo in [
                IPPseudoHeader.v4(source: IPv4Address(10, 0, 0, 1), destination: IPv4Address(10, 0, 0, 2)),
                .v6(source: .loopback, destination: IPv6Address(bits: 0xFD00 << 112 | 7)),
            ] {
                let bytes = emitted { header.emit(into: &$0, payload: ByteBuffer(payload), pseudoHeader: pseudo) }
                guard let datagram = try? UDPDatagram(validating: ByteBuffer(bytes)) else {
                    Issue.record("emitted UDP does not parse")
                    return
                }
                #expect(datagram.checksum != 0 && datagram.isChecksumValid(pseudo))
                #expect(Array(buffer: datagram.payload) == payload && datagram.header == header)
            }
        }
    }
}
