import KtStack
import KtWire
import NIOCore
import Testing

/// The TCP state machine, one section per RFC 9293 state, each starting from a fixture already in that state,
/// on a manual clock.
@Suite struct TCPStateTests {
    // MARK: - DIALING (LISTEN for the forwarder)

    @Test func synIsAnsweredOnlyAfterTheDialSucceeds() {
        var peer = ScriptedPeer()
        let answer = peer.send(
            peer.segment(
                .syn,
                options: TCPOptions(
                    maximumSegmentSize: 1460, windowScale: 7, sackPermitted: true,
                    timestamps: TCPTimestamps(value: 100, echoReply: 0))))
        #expect(answer.isEmpty, "no SYN-ACK before the tunnel dialled")
        guard case .dial(let flow, let key)? = peer.events.last else {
            Issue.record("no dial event")
            return
        }
        #expect(key.local == peer.server && key.remote == peer.client)
        peer.stack.acceptDial(flow, now: peer.now)
        let synAck = peer.collect()
        #expect(synAck.count == 1 && synAck[0].flags == [.syn, .ack])
        #expect(synAck[0].acknowledgementNumber == TCPSequenceNumber(1001))
        #expect(
            synAck[0].options.maximumSegmentSize == 1460 && synAck[0].options.windowScale == 7
                && synAck[0].options.sackPermitted)
        #expect(synAck[0].options.timestamps?.echoReply == 100)
    }

    @Test func refusedDialResetsTheClient() {
        var peer = ScriptedPeer()
        peer.send(peer.segment(.syn))
        guard case .dial(let flow, _)? = peer.events.last else { return }
        peer.stack.refuseDial(flow, reason: .refused, now: peer.now)
        let reset = peer.collect()
        #expect(
            reset.count == 1 && reset[0].flags == [.rst, .ack]
                && reset[0].acknowledgementNumber == TCPSequenceNumber(1001))
        #expect(peer.stack.info(flow) == nil)
    }

    @Test func unreachableDialAnswersWithICMP() throws {
        var peer = ScriptedPeer()
        peer.send(peer.segment(.syn))
        guard case .dial(let flow, _)? = peer.events.last else { return }
        peer.stack.refuseDial(flow, reason: .unreachable, now: peer.now)
        let packets = peer.collectPackets()
        #expect(packets.count == 1)
        guard case .v4(let ip) = try IPPacket(validating: packets[0]),
            case .destinationUnreachable(let code, _, let original) = try ICMPv4Message(parsing: ip.payload)
        else {
            Issue.record("not an ICMP unreachable")
            return
        }
        #expect(code == .host && original.destination == IPv4Address(10, 96, 0, 15))
    }

    @Test func pendingDialsAreBounded() {
        var configuration = StackConfiguration()
        configuration.maximumPendingDials = 3
        var peer = ScriptedPeer(configuration: configuration)
        for port in 0..<5 {
            var packet = peer.segment(.syn)
            packet.setInteger(UInt16(50000 + port), at: 20)
            // Fix the TCP checksum after changing the port.
            packet.setInteger(UInt16(0), at: 36)
            var sum = InternetChecksum()
            sum.addPseudoHeader(
                source: IPv4Address(10, 0, 0, 1), destination: IPv4Address(10, 96, 0, 15), protocol: .tcp,
                length: packet.readableBytes - 20)
            sum.add(packet, at: 20, length: packet.readableBytes - 20)
            packet.setInteger(sum.value, at: 36)
            peer.send(packet)
        }
        let dials = peer.events.filter { if case .dial = $0 { true } else { false } }
        #expect(dials.count == 3)
        #expect(peer.stack.counters.synsDroppedPendingFull == 2)
    }

    // MARK: - SYN-RECEIVED

    @Test func synReceivedRetransmitsTheSynAckAndCompletesOnACK() {
        var peer = ScriptedPeer()
        peer.send(peer.segment(.syn, options: TCPOptions(maximumSegmentSize: 1460)))
        guard case .dial(let flow, _)? = peer.events.last else { return }
        peer.stack.acceptDial(flow, now: peer.now)
        let first = peer.collect()
        // The SYN-ACK is lost: after the initial RTO (1 s) it comes again.
        #expect(peer.advance(by: .milliseconds(999)).isEmpty)
        let again = peer.advance(by: .milliseconds(2))
        #expect(
            again.count == 1 && again[0].flags == [.syn, .ack] && again[0].sequenceNumber == first[0].sequenceNumber)
        peer.sequence = TCPSequenceNumber(1001)
        peer.acknowledgement = first[0].sequenceNumber + UInt32(1)
        peer.send(peer.segment(.ack))
        #expect(peer.events.contains { if case .connected = $0 { true } else { false } })
        #expect(peer.stack.info(flow)?.state == "ESTABLISHED")
    }

    @Test func dataQueuedBeforeTheHandshakeEndsStartsAtTheFirstByte() {
        var peer = ScriptedPeer()
        peer.send(peer.segment(.syn, options: TCPOptions(maximumSegmentSize: 1460)))
        guard case .dial(let flow, _)? = peer.events.last else { return }
        peer.stack.acceptDial(flow, now: peer.now)
        let synAck = peer.collect()[0]
        let data = (0..<3000).map { UInt8(truncatingIfNeeded: $0) }
        #expect(peer.stack.write(flow, ByteBuffer(bytes: data), now: peer.now) == 3000)
        #expect(peer.collect().isEmpty, "no data before the handshake completes")
        peer.sequence = TCPSequenceNumber(1001)
        peer.acknowledgement = synAck.sequenceNumber + UInt32(1)
        let sent = peer.send(peer.segment(.ack))
        #expect(sent.count == 3)
        #expect(sent.first?.sequenceNumber == synAck.sequenceNumber + UInt32(1))
        #expect(sent.flatMap { Array(buffer: $0.payload) } == data)
    }

    @Test(arguments: [false, true])
    func handshakeACKCarryingDataWithAllOptions(v6: Bool) {
        var configuration = StackConfiguration()
        configuration.congestionControl = .newReno
        var peer = ScriptedPeer(configuration: configuration, v6: v6)
        let options = TCPOptions(
            maximumSegmentSize: 1460, windowScale: 7, sackPermitted: true,
            timestamps: TCPTimestamps(value: 100, echoReply: 0))
        peer.send(peer.segment(.syn, options: options))
        guard case .dial(let flow, _)? = peer.events.last else { return }
        peer.stack.acceptDial(flow, now: peer.now)
        let synAck = peer.collect()[0]
        let data = (0..<3000).map { UInt8(truncatingIfNeeded: $0) }
        #expect(peer.stack.write(flow, ByteBuffer(bytes: data), now: peer.now) == 3000)
        peer.sequence = TCPSequenceNumber(1001)
        peer.acknowledgement = synAck.sequenceNumber + UInt32(1)
        peer.now = peer.now + .milliseconds(1)
        let sent = peer.send(peer.segment(.ack, payload: Array(repeating: 7, count: 1000)))
        let payload = sent.flatMap { Array(buffer: $0.payload) }
        #expect(payload == data, "first bytes \(payload.prefix(4))")
        #expect(sent.first?.sequenceNumber == synAck.sequenceNumber + UInt32(1))
    }
}
