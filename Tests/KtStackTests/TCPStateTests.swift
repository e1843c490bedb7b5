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

    @Test func refusedDialResetsTheClient() throws {
        var peer = ScriptedPeer()
        peer.send(peer.segment(.syn))
        let flow = try #require(peer.lastDial, "no dial event")
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
        let flow = try #require(peer.lastDial, "no dial event")
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

    @Test func synReceivedRetransmitsTheSynAckAndCompletesOnACK() throws {
        var peer = ScriptedPeer()
        peer.send(peer.segment(.syn, options: TCPOptions(maximumSegmentSize: 1460)))
        let flow = try #require(peer.lastDial, "no dial event")
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

    @Test func dataQueuedBeforeTheHandshakeEndsStartsAtTheFirstByte() throws {
        var peer = ScriptedPeer()
        peer.send(peer.segment(.syn, options: TCPOptions(maximumSegmentSize: 1460)))
        let flow = try #require(peer.lastDial, "no dial event")
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
    func handshakeACKCarryingDataWithAllOptions(v6: Bool) throws {
        var configuration = StackConfiguration()
        configuration.congestionControl = .newReno
        var peer = ScriptedPeer(configuration: configuration, v6: v6)
        let options = TCPOptions(
            maximumSegmentSize: 1460, windowScale: 7, sackPermitted: true,
            timestamps: TCPTimestamps(value: 100, echoReply: 0))
        peer.send(peer.segment(.syn, options: options))
        let flow = try #require(peer.lastDial, "no dial event")
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

    // MARK: - ESTABLISHED

    @Test func establishedDeliversDataInOrderAndAcknowledges() throws {
        var peer = ScriptedPeer()
        _ = peer.establish()
        let flow = try #require(peer.flow, "the flow was not established")
        let first = Array("hello, ".utf8)
        let second = Array("cluster".utf8)
        peer.send(peer.segment([.ack, .psh], payload: first))
        peer.sequence = peer.sequence + UInt32(first.count)
        let acks = peer.send(peer.segment([.ack, .psh], payload: second))
        peer.sequence = peer.sequence + UInt32(second.count)
        // PSH asks for an ACK at once, covering both segments.
        #expect(acks.last?.acknowledgementNumber == peer.sequence)
        #expect(peer.events.contains { if case .readable(flow) = $0 { true } else { false } })
        let read = peer.stack.read(flow, maximum: 100, now: peer.now).map { Array(buffer: $0) }
        #expect(read == first + second)
    }

    @Test func outOfOrderSegmentsAreHeldAndReportedInSACKBlocks() throws {
        var peer = ScriptedPeer()
        _ = peer.establish()
        let flow = try #require(peer.flow, "the flow was not established")
        let later = peer.sequence + UInt32(1000)
        let answer = peer.send(peer.segment(.ack, sequence: later, payload: Array(repeating: 2, count: 500)))
        // An out-of-order segment is acknowledged at once with a duplicate ACK carrying its SACK block.
        #expect(answer.count == 1 && answer[0].acknowledgementNumber == peer.sequence)
        #expect(answer[0].options.sackBlocks == [TCPSACKBlock(left: later, right: later + UInt32(500))])
        #expect(peer.stack.read(flow, maximum: 10000, now: peer.now) == nil)
        // The gap is filled: everything becomes readable and the ACK covers both.
        let filled = peer.send(peer.segment(.ack, payload: Array(repeating: 1, count: 1000)))
        #expect(filled.last?.acknowledgementNumber == later + UInt32(500))
        #expect(filled.last?.options.sackBlocks.isEmpty == true)
        let data = peer.stack.read(flow, maximum: 10000, now: peer.now).map { Array(buffer: $0) }
        #expect(data == Array(repeating: 1, count: 1000) + Array(repeating: 2, count: 500))
    }

    @Test func duplicateAndOverlappingSegmentsAreTrimmed() throws {
        var peer = ScriptedPeer()
        _ = peer.establish()
        let flow = try #require(peer.flow, "the flow was not established")
        peer.send(peer.segment([.ack, .psh], payload: [1, 2, 3, 4]))
        // A retransmission that overlaps what arrived, and carries two new bytes.
        peer.send(peer.segment([.ack, .psh], payload: [1, 2, 3, 4, 5, 6]))
        let data = peer.stack.read(flow, maximum: 100, now: peer.now).map { Array(buffer: $0) }
        #expect(data == [1, 2, 3, 4, 5, 6])
    }

    @Test func slowReaderClosesTheWindowAndReadingReopensIt() throws {
        var configuration = StackConfiguration()
        configuration.initialReceiveBuffer = 8192
        configuration.maximumReceiveBuffer = 8192
        var peer = ScriptedPeer(configuration: configuration)
        _ = peer.establish(options: TCPOptions(maximumSegmentSize: 1460))
        let flow = try #require(peer.flow, "the flow was not established")
        var lastWindow: UInt16 = 0
        for _ in 0..<6 {
            let answer = peer.send(peer.segment([.ack, .psh], payload: Array(repeating: 9, count: 1460)))
            peer.sequence = peer.sequence + UInt32(1460)
            if let window = answer.last?.window { lastWindow = window }
        }
        // 8192 bytes of buffer, 8192 held after 5.6 segments: the advertised window is (nearly) closed.
        #expect(lastWindow < 1460)
        // Bytes beyond the window are not taken.
        let beyond = peer.send(peer.segment([.ack, .psh], payload: Array(repeating: 9, count: 1460)))
        #expect(beyond.last?.acknowledgementNumber != peer.sequence + UInt32(1460))
        _ = peer.stack.read(flow, maximum: 100_000, now: peer.now)
        let update = peer.collect()
        #expect(update.last.map { $0.window >= 4096 } == true, "a window update follows the read")
    }

    @Test func dataIsRetransmittedAfterTheRTOWithBackoff() throws {
        var peer = ScriptedPeer()
        _ = peer.establish(options: TCPOptions(maximumSegmentSize: 1460))
        let flow = try #require(peer.flow, "the flow was not established")
        _ = peer.stack.write(flow, ByteBuffer(bytes: Array(repeating: 5, count: 100)), now: peer.now)
        let sent = peer.collect()
        #expect(sent.count == 1 && sent[0].payloadLength == 100)
        // Unacknowledged. First a tail loss probe (RFC 8985): 2 SRTT (at least 2 ms) plus 40 ms, as one segment is out.
        #expect(peer.advance(by: .milliseconds(30)).isEmpty)
        let probe = peer.advance(by: .milliseconds(20))
        #expect(probe.count == 1 && probe[0].sequenceNumber == sent[0].sequenceNumber && probe[0].payloadLength == 100)
        // Then the RTO (200 ms, the floor) from the probe on...
        #expect(peer.advance(by: .milliseconds(150)).isEmpty)
        let first = peer.advance(by: .milliseconds(60))
        #expect(first.count == 1 && first[0].sequenceNumber == sent[0].sequenceNumber && first[0].payloadLength == 100)
        // ...and the next one twice as late, with no probe in between (none while the RTO backs off).
        #expect(peer.advance(by: .milliseconds(350)).isEmpty)
        let second = peer.advance(by: .milliseconds(100))
        #expect(second.count == 1 && second[0].sequenceNumber == sent[0].sequenceNumber)
        #expect(peer.stack.info(flow).map { $0.retransmittedSegments } == 3)
    }

    @Test func threeDuplicateACKsTriggerFastRetransmit() throws {
        var peer = ScriptedPeer()
        let synAck = peer.establish(options: TCPOptions(maximumSegmentSize: 1000))
        let flow = try #require(peer.flow, "the flow was not established")
        _ = peer.stack.write(flow, ByteBuffer(bytes: Array(repeating: 7, count: 6000)), now: peer.now)
        let burst = peer.collect()
        // 988 bytes per segment: the MSS of 1000 minus 12 bytes of timestamps.
        #expect(burst.count == 7 && burst[0].payloadLength == 988)
        let start = synAck.sequenceNumber + UInt32(1)
        // The client got segments 2..5 but not 1: it repeats its ACK for byte 0.
        var retransmitted: [TCPSegment] = []
        for _ in 0..<3 {
            retransmitted += peer.send(peer.segment(.ack, acknowledgement: start))
        }
        #expect(
            retransmitted.contains { $0.sequenceNumber == start && $0.payloadLength > 0 },
            "fast retransmit of the first segment")
    }

    // MARK: - Zero window

    @Test func zeroWindowIsProbedAndSendingResumesWhenItOpens() throws {
        var peer = ScriptedPeer()
        let synAck = peer.establish(options: TCPOptions(maximumSegmentSize: 1460))
        let flow = try #require(peer.flow, "the flow was not established")
        // The client closes its window.
        peer.send(peer.segment(.ack, window: 0))
        _ = peer.stack.write(flow, ByteBuffer(bytes: Array(repeating: 3, count: 3000)), now: peer.now)
        #expect(peer.collect().isEmpty, "nothing may be sent into a zero window")
        // A probe after the RTO: SEG.SEQ = SND.UNA - 1, no data.
        let probe = peer.advance(by: .milliseconds(1100))
        #expect(probe.count == 1 && probe[0].payloadLength == 0 && probe[0].sequenceNumber == synAck.sequenceNumber)
        // The window opens: the data flows.
        let resumed = peer.send(peer.segment(.ack, window: 65535))
        #expect(resumed.reduce(0) { $0 + $1.payloadLength } == 3000)
    }

    // MARK: - Keep-alive

    @Test func idleFlowsAreProbedAndDroppedWhenThePeerIsGone() throws {
        var configuration = StackConfiguration()
        configuration.keepAliveIdle = .seconds(10)
        configuration.keepAliveInterval = .seconds(1)
        configuration.keepAliveProbes = 3
        var peer = ScriptedPeer(configuration: configuration)
        _ = peer.establish()
        let flow = try #require(peer.flow, "the flow was not established")
        let first = peer.advance(by: .seconds(10))
        #expect(
            first.count == 1 && first[0].payloadLength == 0
                && first[0].sequenceNumber == peer.acknowledgement - UInt32(1))
        // An answer resets the timer.
        peer.send(peer.segment(.ack))
        #expect(peer.advance(by: .seconds(9)).isEmpty)
        // No answers: three probes, then the flow is reset and reported timed out.
        var probes = 0
        for _ in 0..<5 { probes += peer.advance(by: .seconds(1)).filter { $0.flags == .ack }.count }
        #expect(probes == 3)
        #expect(peer.events.contains { if case .closed(flow, .timedOut) = $0 { true } else { false } })
    }

    // MARK: - RST (RFC 5961)

    @Test func onlyAnExactRSTResetsOthersGetAChallengeACK() throws {
        var peer = ScriptedPeer()
        _ = peer.establish()
        let flow = try #require(peer.flow, "the flow was not established")
        // In the window but not exact: challenge ACK, the flow lives.
        let challenge = peer.send(peer.segment(.rst, sequence: peer.sequence + UInt32(100)))
        #expect(
            challenge.count == 1 && challenge[0].flags == .ack && challenge[0].acknowledgementNumber == peer.sequence)
        #expect(peer.stack.info(flow)?.state == "ESTABLISHED")
        // Outside the window: ignored silently.
        #expect(peer.send(peer.segment(.rst, sequence: peer.sequence + UInt32(50_000_000))).isEmpty)
        // Exact: reset.
        #expect(peer.send(peer.segment(.rst)).isEmpty)
        #expect(peer.events.contains { if case .closed(flow, .reset) = $0 { true } else { false } })
        #expect(peer.stack.info(flow) == nil)
    }

    @Test func aSYNInAnEstablishedFlowGetsAChallengeACK() throws {
        var peer = ScriptedPeer()
        _ = peer.establish()
        let flow = try #require(peer.flow, "the flow was not established")
        let answer = peer.send(peer.segment(.syn, sequence: peer.sequence + UInt32(5)))
        #expect(answer.count == 1 && answer[0].flags == .ack)
        #expect(peer.stack.info(flow)?.state == "ESTABLISHED")
    }

    @Test func anACKForUnsentDataIsAnsweredAndDropped() throws {
        var peer = ScriptedPeer()
        let synAck = peer.establish()
        let flow = try #require(peer.flow, "the flow was not established")
        let answer = peer.send(
            peer.segment([.ack, .psh], acknowledgement: synAck.sequenceNumber + UInt32(5000), payload: [1]))
        #expect(answer.count == 1 && answer[0].flags == .ack)
        #expect(peer.stack.read(flow, maximum: 10, now: peer.now) == nil, "the segment's data was dropped too")
    }

    // MARK: - CLOSE-WAIT and LAST-ACK (the client closes first)

    @Test func clientCloseThenOurs() throws {
        var peer = ScriptedPeer()
        _ = peer.establish()
        let flow = try #require(peer.flow, "the flow was not established")
        let ack = peer.send(peer.segment([.fin, .ack]))
        peer.sequence = peer.sequence + UInt32(1)
        #expect(ack.last?.acknowledgementNumber == peer.sequence)
        #expect(peer.stack.info(flow)?.state == "CLOSE-WAIT")
        #expect(peer.events.contains { if case .peerClosed(flow) = $0 { true } else { false } })
        // We may still send in CLOSE-WAIT.
        #expect(peer.stack.write(flow, ByteBuffer(bytes: [4, 2]), now: peer.now) == 2)
        peer.stack.shutdownWrite(flow, now: peer.now)
        let out = peer.collect()
        #expect(out.contains { $0.payloadLength == 2 } && out.last?.flags == [.fin, .ack])
        #expect(peer.stack.info(flow)?.state == "LAST-ACK")
        peer.acknowledgement = peer.acknowledgement + UInt32(3)
        peer.send(peer.segment(.ack))
        #expect(peer.stack.info(flow) == nil)
        #expect(peer.events.contains { if case .closed(flow, .normal) = $0 { true } else { false } })
    }

    // MARK: - FIN-WAIT-1, FIN-WAIT-2 and TIME-WAIT (we close first)

    @Test func ourCloseThenTheClientsThroughTimeWait() throws {
        var configuration = StackConfiguration()
        configuration.timeWait = .seconds(4)
        var peer = ScriptedPeer(configuration: configuration)
        _ = peer.establish()
        let flow = try #require(peer.flow, "the flow was not established")
        peer.stack.shutdownWrite(flow, now: peer.now)
        let fin = peer.collect()
        #expect(fin.count == 1 && fin[0].flags == [.fin, .ack])
        #expect(peer.stack.info(flow)?.state == "FIN-WAIT-1")
        peer.acknowledgement = peer.acknowledgement + UInt32(1)
        peer.send(peer.segment(.ack))
        #expect(peer.stack.info(flow)?.state == "FIN-WAIT-2")
        // The client still sends data, then its FIN.
        peer.send(peer.segment([.ack, .psh], payload: [8, 8]))
        peer.sequence = peer.sequence + UInt32(2)
        let finAck = peer.send(peer.segment([.fin, .ack]))
        peer.sequence = peer.sequence + UInt32(1)
        #expect(finAck.last?.acknowledgementNumber == peer.sequence)
        #expect(peer.stack.info(flow)?.state == "TIME-WAIT")
        // A retransmitted FIN is acknowledged again.
        let again = peer.send(peer.segment([.fin, .ack], sequence: peer.sequence - UInt32(1)))
        #expect(again.count == 1 && again[0].acknowledgementNumber == peer.sequence)
        // 2 MSL later the flow is gone (after its data was read).
        _ = peer.stack.read(flow, maximum: 10, now: peer.now)
        peer.advance(by: .seconds(5))
        #expect(peer.stack.info(flow) == nil)
    }

    // MARK: - CLOSING (simultaneous close)

    @Test func simultaneousCloseGoesThroughClosing() throws {
        var configuration = StackConfiguration()
        configuration.timeWait = .seconds(2)
        var peer = ScriptedPeer(configuration: configuration)
        _ = peer.establish()
        let flow = try #require(peer.flow, "the flow was not established")
        peer.stack.shutdownWrite(flow, now: peer.now)
        _ = peer.collect()
        // The client's FIN crosses ours: it does not acknowledge our FIN yet.
        peer.send(peer.segment([.fin, .ack]))
        peer.sequence = peer.sequence + UInt32(1)
        #expect(peer.stack.info(flow)?.state == "CLOSING")
        peer.acknowledgement = peer.acknowledgement + UInt32(1)
        peer.send(peer.segment(.ack))
        #expect(peer.stack.info(flow)?.state == "TIME-WAIT")
        peer.advance(by: .seconds(3))
        #expect(peer.stack.info(flow) == nil)
    }

    // MARK: - SYN-SENT (our active open)

    @Test func activeOpenThroughSYNSent() {
        var stack = NetworkStack(random: SeededGenerator(seed: 3))
        let local = Endpoint(.v4(IPv4Address(10, 96, 0, 15)), 0)
        let remote = Endpoint(.v4(IPv4Address(10, 0, 0, 1)), 8080)
        let now = StackInstant(nanoseconds: 1_000_000_000)
        let flow = stack.connect(from: local, to: remote, now: now)
        let syn = stack.takeOutput()
        #expect(syn.count == 1)
        #expect(stack.info(flow)?.state == "SYN-SENT")
        // No answer: the SYN is retransmitted after 1 s, then given up after the configured retries.
        var retries = 0
        var time = now
        // 1 + 2 + 4 + 8 + 16 + 32 s of backoff, then 60 s (the RTO's ceiling) before giving up.
        for _ in 0..<300 {
            time = time + .milliseconds(500)
            stack.advance(to: time)
            retries += stack.takeOutput().count
        }
        #expect(retries == StackConfiguration().maximumHandshakeRetransmissions)
        #expect(stack.takeEvents().contains { if case .closed(flow, .timedOut) = $0 { true } else { false } })
    }

    // MARK: - CLOSED (no flow)

    @Test func segmentsForUnknownFlowsAreReset() {
        var peer = ScriptedPeer()
        let reset = peer.send(peer.segment(.ack, acknowledgement: TCPSequenceNumber(777)))
        #expect(reset.count == 1 && reset[0].flags == .rst && reset[0].sequenceNumber == TCPSequenceNumber(777))
        let resetAck = peer.send(peer.segment([.fin], payload: [1, 2]))
        #expect(
            resetAck.count == 1 && resetAck[0].flags == [.rst, .ack]
                && resetAck[0].acknowledgementNumber == peer.sequence + UInt32(3))
        #expect(peer.send(peer.segment(.rst)).isEmpty, "never a RST for a RST")
    }

    // MARK: - Path MTU

    @Test func fragmentationNeededShrinksTheSegments() throws {
        var peer = ScriptedPeer()
        _ = peer.establish(options: TCPOptions(maximumSegmentSize: 1460))
        let flow = try #require(peer.flow, "the flow was not established")
        _ = peer.stack.write(flow, ByteBuffer(bytes: Array(repeating: 1, count: 4000)), now: peer.now)
        let big = peer.collectPackets()
        let first = try #require(big.first)
        // A router on the way says the next hop takes 1000 bytes, quoting our first segment.
        let original = try IPv4Packet(validatingQuoted: first.getSlice(at: 0, length: 48)!)
        let icmp = ICMPv4Message.destinationUnreachable(
            code: .fragmentationNeeded, nextHopMTU: 1000, original: original)
        var packet = ByteBuffer()
        IPv4Header(protocol: .icmp, source: IPv4Address(10, 0, 0, 254), destination: IPv4Address(10, 96, 0, 15))
            .emit(into: &packet, payloadLength: icmp.encodedLength)
        icmp.emit(into: &packet)
        let resent = peer.send(packet)
        #expect(!resent.isEmpty && resent.allSatisfy { $0.payloadLength <= 1000 - 40 - 12 })
        #expect(peer.stack.counters.pathMTUUpdates == 1)
    }

    // MARK: - Router behaviour

    @Test func expiringTTLGetsTimeExceededFromTheRouterAddress() throws {
        var configuration = StackConfiguration()
        configuration.routerAddressV4 = IPv4Address(10, 210, 0, 254)
        var peer = ScriptedPeer(configuration: configuration)
        var packet = peer.segment(.syn)
        packet.setInteger(UInt8(1), at: 8)  // TTL 1
        packet.setInteger(UInt16(0), at: 10)
        var sum = InternetChecksum()
        sum.add(packet, at: 0, length: 20)
        packet.setInteger(sum.value, at: 10)
        peer.stack.receive([packet], now: peer.now)
        let out = peer.collectPackets()
        guard case .v4(let ip)? = out.first.flatMap({ try? IPPacket(validating: $0) }),
            case .timeExceeded(0, let quoted) = try ICMPv4Message(parsing: ip.payload)
        else {
            Issue.record("no time exceeded")
            return
        }
        #expect(ip.source == IPv4Address(10, 210, 0, 254) && quoted.destination == IPv4Address(10, 96, 0, 15))
        #expect(!peer.events.contains { if case .dial = $0 { true } else { false } })
    }
}
