import KtStack
import KtWire
import NIOCore
import Testing

/// Loss recovery and the timers around it, segment by segment: each test is a way a flow used to stall or resend a
/// whole flight where one segment was due.
@Suite struct LossRecoveryTests {
    /// An established flow with SACK and timestamps (as Linux offers them) and `segments` full segments sent.
    static func flight(_ segments: Int) throws -> (peer: ScriptedPeer, flow: FlowID, start: TCPSequenceNumber, mss: Int)
    {
        var peer = ScriptedPeer()
        let synAck = peer.establish()
        let flow = try #require(peer.flow)
        let mss = 1448  // 1460 minus 12 bytes of timestamps
        _ = peer.stack.write(flow, ByteBuffer(bytes: Array(repeating: 9, count: segments * mss)), now: peer.now)
        let sent = peer.collect()
        #expect(sent.reduce(0) { $0 + $1.payloadLength } == segments * mss, "the flight went out")
        return (peer, flow, synAck.sequenceNumber + UInt32(1), mss)
    }

    static func sack(_ start: TCPSequenceNumber, _ mss: Int, _ from: Int, _ to: Int) -> TCPSACKBlock {
        TCPSACKBlock(left: start + UInt32(from * mss), right: start + UInt32(to * mss))
    }

    static func ack(
        _ peer: ScriptedPeer, _ acknowledgement: TCPSequenceNumber, sack: [TCPSACKBlock] = [], window: UInt16 = 65535
    )
        -> ByteBuffer
    {
        var options = TCPOptions()
        options.sackBlocks = sack
        return peer.segment(.ack, acknowledgement: acknowledgement, window: window, options: options)
    }

    /// RFC 6298 §5.4: the timer's expiry resends the first unacknowledged segment; the rest follows as ACKs come
    /// back (slow start from one segment), not the whole flight at once.
    @Test func aTimeoutResendsOneSegmentNotTheWholeFlight() throws {
        var (peer, _, start, _) = try Self.flight(10)
        // Nothing comes back: the tail-loss probe (the last segment) first, then the retransmission timeout.
        var sent: [[TCPSegment]] = []
        for _ in 0..<200 where !sent.joined().contains(where: { $0.sequenceNumber == start && $0.payloadLength > 0 }) {
            sent.append(peer.advance(by: .milliseconds(5)).filter { $0.payloadLength > 0 })
        }
        let data = sent.joined()
        #expect(data.last?.sequenceNumber == start, "no retransmission of the first segment within 1 s")
        #expect(data.count == 2, "probe and timeout sent \(data.count) segments")
        #expect(sent.last?.count == 1, "the timeout resent \(sent.last?.count ?? 0) segments")
    }

    /// A duplicate segment makes Linux send a D-SACK (RFC 2883) for it, with an unchanged ACK. It says nothing was
    /// lost; three of them must not start fast recovery.
    @Test func duplicateSACKsAreNotDuplicateACKs() throws {
        var (peer, flow, start, mss) = try Self.flight(10)
        peer.send(Self.ack(peer, start + UInt32(5 * mss)))
        var resent: [TCPSegment] = []
        for _ in 0..<3 {
            resent += peer.send(Self.ack(peer, start + UInt32(5 * mss), sack: [Self.sack(start, mss, 0, 1)]))
        }
        #expect(resent.allSatisfy { $0.payloadLength == 0 }, "resent: \(resent.map(\.sequenceNumber))")
        #expect(peer.stack.info(flow)?.retransmittedSegments == 0)
    }

    /// An ACK that arrives after a newer one (reordered on the way) is old news: its SACK blocks must not start
    /// recovery.
    @Test func aStaleACKDoesNotStartRecovery() throws {
        var (peer, flow, start, mss) = try Self.flight(10)
        peer.send(Self.ack(peer, start + UInt32(6 * mss)))
        let window = peer.stack.info(flow)?.congestionWindow
        let resent = peer.send(Self.ack(peer, start + UInt32(mss), sack: [Self.sack(start, mss, 2, 6)]))
        #expect(resent.allSatisfy { $0.payloadLength == 0 }, "resent: \(resent.map(\.sequenceNumber))")
        #expect(peer.stack.info(flow)?.congestionWindow == window)
        #expect(peer.stack.info(flow)?.retransmittedSegments == 0)
    }

    /// In recovery, the retransmission of a later hole is lost too: once data sent after it is SACKed and a
    /// reordering window has passed, it goes again, without waiting for the retransmission timeout.
    @Test func aLostRetransmissionOfALaterHoleIsResentWithoutATimeout() throws {
        var (peer, flow, start, mss) = try Self.flight(10)
        // Segments 0 and 3 are lost: the receiver holds 1–2 and 4–9.
        let repaired = peer.send(
            Self.ack(peer, start, sack: [Self.sack(start, mss, 4, 10), Self.sack(start, mss, 1, 3)]))
        let holes = Set(repaired.filter { $0.payloadLength > 0 }.map(\.sequenceNumber))
        #expect(holes.contains(start) && holes.contains(start + UInt32(3 * mss)), "both holes resent: \(holes)")
        // Segment 0's retransmission arrives, segment 3's is lost again: the ACK moves to segment 3.
        peer.now = peer.now + .milliseconds(1)
        peer.send(Self.ack(peer, start + UInt32(3 * mss), sack: [Self.sack(start, mss, 4, 10)]))
        // New data goes out and is SACKed above the hole.
        _ = peer.stack.write(flow, ByteBuffer(bytes: Array(repeating: 8, count: 4 * mss)), now: peer.now)
        let more = peer.collect().filter { $0.payloadLength > 0 && start + UInt32(10 * mss) <= $0.sequenceNumber }
        #expect(!more.isEmpty, "new data went out")
        peer.now = peer.now + .milliseconds(3)
        var again = peer.send(
            Self.ack(peer, start + UInt32(3 * mss), sack: [Self.sack(start, mss, 4, 12)]))
        for _ in 0..<4 where !again.contains(where: { $0.sequenceNumber == start + UInt32(3 * mss) }) {
            again += peer.advance(by: .milliseconds(5))
        }
        #expect(
            again.contains { $0.sequenceNumber == start + UInt32(3 * mss) && $0.payloadLength > 0 },
            "the lost retransmission waited for the timeout")
    }

    /// The peer's window is smaller than a segment and nothing is in flight: silly-window avoidance holds the data,
    /// and a persist timer must still be running, or the flow waits forever.
    @Test func aWindowSmallerThanASegmentIsProbedNotForgotten() throws {
        var peer = ScriptedPeer()
        let synAck = peer.establish()
        let flow = try #require(peer.flow)
        let start = synAck.sequenceNumber + UInt32(1)
        // The client's window: 8 << 7 = 1024 bytes, less than one segment.
        peer.send(Self.ack(peer, start, window: 8))
        _ = peer.stack.write(flow, ByteBuffer(bytes: Array(repeating: 4, count: 3000)), now: peer.now)
        let first = peer.collect()
        let sentFirst = first.reduce(0) { $0 + $1.payloadLength }
        #expect(sentFirst <= 1024)
        if sentFirst > 0 {
            peer.send(Self.ack(peer, start + UInt32(sentFirst), window: 8))
        }
        let next = peer.stack.nextDeadline
        let deadline = try #require(next, "no timer while data waits for the window")
        #expect(deadline.since(peer.now) <= .seconds(2))
        var sent = 0
        for _ in 0..<30 where sent == 0 {
            sent = peer.advance(by: .milliseconds(100)).reduce(0) { $0 + $1.payloadLength }
        }
        #expect(sent > 0, "the small window was never used")
    }

    /// A flow that probed a zero window for a while and sees it open must not carry the probes' backoff into its
    /// next flight: a lost segment then is resent at the normal timeout, not after seconds.
    @Test func openingTheWindowEndsThePersistBackoff() throws {
        var peer = ScriptedPeer()
        let synAck = peer.establish()
        let flow = try #require(peer.flow)
        let start = synAck.sequenceNumber + UInt32(1)
        peer.send(Self.ack(peer, start, window: 0))
        _ = peer.stack.write(flow, ByteBuffer(bytes: Array(repeating: 3, count: 1000)), now: peer.now)
        // Five probes, each answered with a closed window: 1 + 2 + 4 + 8 + 16 s of backoff.
        for _ in 0..<5 {
            var probe: [TCPSegment] = []
            for _ in 0..<700 where probe.isEmpty { probe = peer.advance(by: .milliseconds(100)) }
            #expect(probe.count == 1)
            peer.send(Self.ack(peer, start, window: 0))
        }
        // The window opens; the data goes and is lost (no ACK).
        let data = peer.send(Self.ack(peer, start, window: 65535))
        #expect(data.reduce(0) { $0 + $1.payloadLength } == 1000)
        var resent: [TCPSegment] = []
        for _ in 0..<30 where resent.isEmpty { resent = peer.advance(by: .milliseconds(100)) }
        #expect(
            resent.contains { $0.sequenceNumber == start && $0.payloadLength > 0 },
            "no retransmission within 3 s of the window opening")
    }

    /// A timeout while the peer's window is zero still sends the first segment (as Linux does): its answer carries
    /// the window, and the flow does not back off in silence until it is aborted.
    @Test func aTimeoutIntoAClosedWindowStillSendsTheHead() throws {
        var (peer, _, start, mss) = try Self.flight(4)
        // The receiver acknowledges one segment and shrinks its window to nothing.
        peer.send(Self.ack(peer, start + UInt32(mss), window: 0))
        var resent: [TCPSegment] = []
        for _ in 0..<300 where !resent.contains(where: { $0.sequenceNumber == start + UInt32(mss) }) {
            resent += peer.advance(by: .milliseconds(10))
        }
        #expect(
            resent.contains { $0.sequenceNumber == start + UInt32(mss) && $0.payloadLength > 0 },
            "the head was not sent within 3 s: \(resent.map(\.sequenceNumber))")
    }

    /// RFC 7323 §5.3 with Linux's tolerance: a timestamp one tick older than the last one is not an old duplicate.
    @Test func aTimestampOneTickOlderIsStillAccepted() throws {
        var peer = ScriptedPeer()
        _ = peer.establish()
        let flow = try #require(peer.flow)
        peer.timestampValue = 200
        peer.send(peer.segment([.ack, .psh], payload: [1, 2, 3]))
        peer.sequence = peer.sequence + UInt32(3)
        peer.timestampValue = 199
        peer.send(peer.segment([.ack, .psh], payload: [4, 5, 6]))
        peer.sequence = peer.sequence + UInt32(3)
        let read = peer.stack.read(flow, maximum: 100, now: peer.now)
        #expect(read.map { Array($0.readableBytesView) } == [1, 2, 3, 4, 5, 6])
    }
}

/// The receiving side's part (RFC 2883): data that arrives twice is reported in a D-SACK block, so that a Linux sender
/// learns its retransmission was spurious (reordering, not loss) and stops cutting its rate for it.
@Suite struct DuplicateReportTests {
    @Test func aSegmentReceivedTwiceIsReportedInADuplicateSACK() throws {
        var peer = ScriptedPeer()
        _ = peer.establish()
        let first = peer.sequence
        peer.send(peer.segment([.ack, .psh], payload: Array(repeating: 1, count: 500)))
        peer.sequence = peer.sequence + UInt32(500)
        _ = peer.advance(by: .milliseconds(10))
        // The same segment again (a spurious retransmission).
        let answer = peer.send(peer.segment([.ack, .psh], sequence: first, payload: Array(repeating: 1, count: 500)))
        let ack = try #require(answer.last, "no ACK for the duplicate")
        #expect(ack.options.sackBlocks.first == TCPSACKBlock(left: first, right: first + UInt32(500)))
        // Reported once: the next ACK carries no D-SACK.
        let next = peer.send(peer.segment([.ack, .psh], payload: Array(repeating: 2, count: 100)))
        _ = next
        let later = peer.advance(by: .milliseconds(10))
        #expect(later.allSatisfy { $0.options.sackBlocks.isEmpty }, "\(later.map(\.options.sackBlocks))")
    }

    @Test func aSegmentOverlappingWhatArrivedReportsTheOverlap() throws {
        var peer = ScriptedPeer()
        _ = peer.establish()
        let first = peer.sequence
        peer.send(peer.segment([.ack, .psh], payload: Array(repeating: 1, count: 500)))
        peer.sequence = peer.sequence + UInt32(500)
        let answer = peer.send(
            peer.segment([.ack, .psh], sequence: first + UInt32(300), payload: Array(repeating: 1, count: 400)))
        peer.sequence = first + UInt32(700)
        let ack = try #require(answer.last, "no ACK")
        #expect(ack.options.sackBlocks.first == TCPSACKBlock(left: first + UInt32(300), right: first + UInt32(500)))
        #expect(ack.acknowledgementNumber == first + UInt32(700))
    }
}
