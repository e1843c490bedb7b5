import KtWire
import NIOCore

/// One TCP connection: the RFC 9293 state machine with RFC 7323 (window scale, timestamps), RFC 2018/6675
/// (SACK), RFC 6298 (RTO), RFC 5681/6582 (fast retransmit and recovery), RFC 9438 (CUBIC), RFC 5961 (blind
/// RST/SYN/ACK checks), delayed ACKs, zero-window probes, keep-alive and receive-buffer auto-tuning.
///
/// It never reads a clock or a random source and performs no I/O: segments come in through
/// ``handle(_:now:emitter:events:)``, timers through ``fireTimers(now:emitter:events:)``, and everything it sends
/// goes into the ``Emitter``.
struct TCPConnection {
    enum State: Equatable, CustomStringConvertible {
        /// A SYN arrived; the engine is dialling the destination. Nothing has been sent to the client yet.
        case dialing
        case synSent
        case synReceived
        case established
        case finWait1
        case finWait2
        case closing
        case timeWait
        case closeWait
        case lastAck
        case closed

        var description: String {
            switch self {
            case .dialing: return "DIALING"
            case .synSent: return "SYN-SENT"
            case .synReceived: return "SYN-RECEIVED"
            case .established: return "ESTABLISHED"
            case .finWait1: return "FIN-WAIT-1"
            case .finWait2: return "FIN-WAIT-2"
            case .closing: return "CLOSING"
            case .timeWait: return "TIME-WAIT"
            case .closeWait: return "CLOSE-WAIT"
            case .lastAck: return "LAST-ACK"
            case .closed: return "CLOSED"
            }
        }

        /// States in which data from the peer is still accepted (RFC 9293 §3.10.7.4, seventh step).
        var receivesData: Bool { self == .established || self == .finWait1 || self == .finWait2 }
        /// States in which our application may still send.
        var sendsData: Bool { self == .established || self == .closeWait }
    }

    let id: FlowID
    let key: FlowKey
    private(set) var state: State
    /// Our SYN was acknowledged (the state alone cannot say: an early close moves SYN-RECEIVED to FIN-WAIT-1).
    private var handshakeComplete = false
    let configuration: StackConfiguration
    /// Why the connection closed, once it has.
    private(set) var closeReason: FlowCloseReason?

    // MARK: Send sequence space (RFC 9293 §3.3.1)

    private let initialSendSequence: TCPSequenceNumber
    private(set) var sendUnacknowledged: TCPSequenceNumber
    private(set) var sendNext: TCPSequenceNumber
    /// The highest sequence number sent so far (SND.NXT can go back on a timeout).
    private var sendMaximum: TCPSequenceNumber
    /// The peer's window in bytes, scaled.
    private(set) var sendWindow: Int = 0
    private var sendWindowUpdateSequence = TCPSequenceNumber(0)
    private var sendWindowUpdateAcknowledgement = TCPSequenceNumber(0)
    /// The largest window the peer offered, for RFC 5961 §5's ACK check.
    private var maximumSendWindow = 0
    private(set) var sendQueue = SendQueue()
    /// The application will send nothing more; a FIN follows the queued bytes.
    private(set) var finQueued = false
    /// The FIN was sent; it occupies the sequence number `finSequence`.
    private var finSequence: TCPSequenceNumber?

    // MARK: Negotiated options

    /// The most payload bytes one segment to the peer may carry.
    private(set) var sendMSS: Int
    /// The MSS we announce.
    private let ourMSS: Int
    private var peerWindowScale: UInt8 = 0
    private var ourWindowScale: UInt8 = 0
    private var sackPermitted = false
    private var timestampsEnabled = false
    /// TS.Recent (RFC 7323 §4.3).
    private var timestampRecent: UInt32 = 0
    /// Added to our clock's milliseconds to make TSval, so that TSvals do not reveal uptime (RFC 7323 §7.1).
    private let timestampOffset: UInt32
    /// The last ACK number we sent (Last.ACK.sent in RFC 7323 §4.3).
    private var lastAcknowledgementSent = TCPSequenceNumber(0)

    // MARK: Loss recovery and congestion

    private(set) var congestion: CongestionControl
    private(set) var rtt: RTTEstimator
    /// Without timestamps: one segment timed for RTT (Karn's algorithm: never a retransmitted one).
    private var timedSegment: (sequence: TCPSequenceNumber, sentAt: StackInstant)?
    /// Retransmissions of the oldest segment in a row, and of the SYN or SYN-ACK.
    private var consecutiveRetransmissions = 0
    /// Counters for tests and `ss`-like reports.
    private(set) var retransmittedSegments = 0

    // MARK: Receive sequence space

    private var initialReceiveSequence = TCPSequenceNumber(0)
    private(set) var receiveNext = TCPSequenceNumber(0)
    /// The right edge of the window we last advertised; never moves left (RFC 9293 §3.8.6.2.2).
    private var advertisedRightEdge = TCPSequenceNumber(0)
    private(set) var receiveQueue = ReceiveQueue()
    /// The receive buffer's current size; grows with auto-tuning.
    private(set) var receiveBuffer: Int
    private(set) var finReceived = false
    /// The peer's SYN options, kept while the engine dials.
    private var peerSYN: (sequence: TCPSequenceNumber, window: UInt16, options: TCPOptions)?

    // MARK: ACK policy

    /// An ACK is owed; the delayed-ACK timer bounds how long it may wait.
    private var acknowledgementPending = false
    /// An ACK must go out with the next flush (out-of-order data, a window update, a probe answer…).
    private var acknowledgeNow = false
    /// Bytes received since the last ACK we sent.
    private var bytesSinceAcknowledgement = 0
    /// Data that arrived twice, for the next ACK's first SACK block (a D-SACK, RFC 2883): it tells the sender its
    /// retransmission was spurious, and Linux widens its reordering window instead of cutting its rate again.
    private var duplicateReport: TCPSACKBlock?

    // MARK: Timers

    /// Every timer, as one value.
    private var timers = TCPTimers()
    /// What is known about losses and how they are being repaired.
    private var loss = LossRecovery()
    private var lastSendTime = StackInstant.zero

    // MARK: Auto-tuning (Linux's DRS: size the buffer to twice what the application reads per RTT)

    private var tuningEpochStart = StackInstant.zero
    private var bytesReadInEpoch = 0

    // MARK: Signals for the engine

    /// A `readable` event was reported and not yet consumed by reads.
    private var readableReported = false
    /// A write was cut short; report `writable` when room returns.
    private var writerBlocked = false

    // MARK: - Making connections

    /// A connection for a SYN that arrived: state DIALING until the engine accepts or refuses the dial.
    init(
        id: FlowID, key: FlowKey, syn: TCPSegment, configuration: StackConfiguration, initialSequence: UInt32,
        timestampOffset: UInt32, now: StackInstant
    ) {
        self.init(
            id: id, key: key, state: .dialing, configuration: configuration, initialSequence: initialSequence,
            timestampOffset: timestampOffset, now: now)
        peerSYN = (syn.sequenceNumber, syn.window, syn.options)
        initialReceiveSequence = syn.sequenceNumber
        receiveNext = syn.sequenceNumber + UInt32(1)
        advertisedRightEdge = receiveNext
    }

    /// A connection we open (SYN-SENT), for the reverse direction and for tests with two stacks.
    init(
        id: FlowID, key: FlowKey, configuration: StackConfiguration, initialSequence: UInt32, timestampOffset: UInt32,
        now: StackInstant, emitter: inout Emitter
    ) {
        self.init(
            id: id, key: key, state: .synSent, configuration: configuration, initialSequence: initialSequence,
            timestampOffset: timestampOffset, now: now)
        sendSYN(acknowledging: false, now: now, emitter: &emitter)
    }

    private init(
        id: FlowID, key: FlowKey, state: State, configuration: StackConfiguration, initialSequence: UInt32,
        timestampOffset: UInt32, now: StackInstant
    ) {
        self.id = id
        self.key = key
        self.state = state
        self.configuration = configuration
        self.timestampOffset = timestampOffset
        initialSendSequence = TCPSequenceNumber(initialSequence)
        sendUnacknowledged = initialSendSequence
        sendNext = initialSendSequence
        sendMaximum = initialSendSequence
        ourMSS = configuration.mtu - (key.isIPv6 ? 60 : 40)
        sendMSS = 536  // RFC 9293 §3.7.1: the default when the peer announces none
        congestion = CongestionControl(algorithm: configuration.congestionControl, mss: ourMSS)
        rtt = RTTEstimator(
            initial: configuration.initialRTO, minimum: configuration.minimumRTO, maximum: configuration.maximumRTO)
        receiveBuffer = configuration.initialReceiveBuffer
        tuningEpochStart = now
        lastSendTime = now
    }

    // MARK: - The engine's answer to a dial

    /// The tunnel reached the destination: answer the SYN with SYN-ACK (RFC 9293 §3.10.7.2).
    mutating func acceptDial(now: StackInstant, emitter: inout Emitter) {
        guard state == .dialing, let syn = peerSYN else { return }
        adoptPeerOptions(syn.options, synWindow: syn.window, synSequence: syn.sequence, acknowledging: false)
        state = .synReceived
        sendSYN(acknowledging: true, now: now, emitter: &emitter)
    }

    /// The tunnel could not dial: RST the client (or let the stack send ICMP) and close.
    mutating func refuseDial(emitter: inout Emitter, sendReset: Bool) {
        guard state == .dialing else { return }
        if sendReset {
            // RFC 9293 §3.10.7.1 for a segment without ACK: <SEQ=0><ACK=SEG.SEQ+SEG.LEN><CTL=RST,ACK>.
            emitter.tcp(
                key,
                TCPHeader(
                    sourcePort: key.local.port, destinationPort: key.remote.port, sequenceNumber: TCPSequenceNumber(0),
                    acknowledgementNumber: receiveNext, flags: [.rst, .ack], window: 0))
        }
        close(.refused)
    }

    private mutating func adoptPeerOptions(
        _ options: TCPOptions, synWindow: UInt16, synSequence: TCPSequenceNumber, acknowledging: Bool
    ) {
        sendMSS = max(64, min(Int(options.maximumSegmentSize ?? 536), ourMSS))
        congestion.updateMSS(sendMSS - (options.timestamps != nil ? 12 : 0))
        if let scale = options.windowScale {
            // RFC 7323 §2.3: a shift above 14 is used as 14.
            peerWindowScale = min(scale, 14)
            ourWindowScale = configuration.windowScale
        } else {
            peerWindowScale = 0
            ourWindowScale = 0
        }
        sackPermitted = options.sackPermitted
        if let timestamps = options.timestamps {
            timestampsEnabled = true
            timestampRecent = timestamps.value
        }
        // RFC 7323 §2.2: the window in a SYN is never scaled.
        sendWindow = Int(synWindow)
        maximumSendWindow = sendWindow
        sendWindowUpdateSequence = synSequence
        sendWindowUpdateAcknowledgement = sendUnacknowledged
    }

    // MARK: - Application calls

    /// Up to `maximum` bytes the peer sent, in order; nil when none are ready. Reading opens the window.
    mutating func read(maximum: Int, now: StackInstant, emitter: inout Emitter) -> ByteBuffer? {
        guard let bytes = receiveQueue.read(maximum: maximum) else {
            readableReported = false
            return nil
        }
        if receiveQueue.readyCount == 0 { readableReported = false }
        autoTune(read: bytes.readableBytes, now: now)
        // Silly-window avoidance (RFC 9293 §3.8.6.2.2): announce the larger window only once it grew by
        // min(buffer / 2, MSS); then do it at once, so a sender blocked on a zero window resumes.
        if state.receivesData || state == .synReceived {
            let newRight = receiveNext + receiveSpace
            if advertisedRightEdge < newRight,
                Int(newRight - advertisedRightEdge) >= min(receiveBuffer / 2, ourMSS)
                    && (Int(advertisedRightEdge - receiveNext) < receiveBuffer / 2)
            {
                acknowledgeNow = true
            }
        }
        flush(now: now, emitter: &emitter)
        return bytes
    }

    /// Queues bytes to send; returns how many were taken (the rest must wait for `writable`).
    mutating func write(_ bytes: ByteBuffer, now: StackInstant, emitter: inout Emitter) -> Int {
        guard state.sendsData || state == .synReceived || state == .synSent, !finQueued else { return 0 }
        let room = configuration.sendBufferLimit - sendQueue.count
        guard room > 0 else {
            writerBlocked = true
            return 0
        }
        var taken = bytes
        if taken.readableBytes > room {
            taken = taken.getSlice(at: taken.readerIndex, length: room) ?? ByteBuffer()
            writerBlocked = true
        }
        sendQueue.append(taken)
        flush(now: now, emitter: &emitter)
        return taken.readableBytes
    }

    /// No more bytes will be written: send FIN after what is queued (RFC 9293 §3.10.4).
    mutating func shutdownWrite(now: StackInstant, emitter: inout Emitter) {
        switch state {
        case .established:
            finQueued = true
            state = .finWait1
        case .closeWait:
            finQueued = true
            state = .lastAck
        case .synReceived:
            finQueued = true
            state = .finWait1
        case .dialing, .synSent:
            close(.aborted)
            return
        case .finWait1, .finWait2, .closing, .timeWait, .lastAck, .closed:
            return
        }
        flush(now: now, emitter: &emitter)
    }

    /// Drops the connection and sends RST (RFC 9293 §3.10.5).
    mutating func abort(emitter: inout Emitter) {
        switch state {
        case .synReceived, .established, .finWait1, .finWait2, .closeWait, .closing, .lastAck:
            emitter.tcp(
                key,
                TCPHeader(
                    sourcePort: key.local.port, destinationPort: key.remote.port, sequenceNumber: sendNext,
                    acknowledgementNumber: receiveNext, flags: [.rst, .ack], window: 0))
        case .dialing, .synSent, .timeWait, .closed:
            break
        }
        receiveQueue = ReceiveQueue()
        close(.aborted)
    }

    /// Bytes the application may still write before `writable`.
    var writableBytes: Int { max(0, configuration.sendBufferLimit - sendQueue.count) }

    // MARK: - Segment arrival (RFC 9293 §3.10.7)

    mutating func handle(_ segment: TCPSegment, now: StackInstant, emitter: inout Emitter, events: inout [StackEvent]) {
        switch state {
        case .closed:
            return
        case .dialing:
            // The client retransmitted its SYN or gave up; nothing to answer until the dial ends.
            if segment.flags.contains(.rst) { close(.reset, events: &events) }
            return
        case .synSent:
            handleInSYNSent(segment, now: now, emitter: &emitter, events: &events)
            return
        case .synReceived, .established, .finWait1, .finWait2, .closing, .timeWait, .closeWait, .lastAck:
            break
        }
        let flags = segment.flags
        let sequence = segment.sequenceNumber
        let length = segment.sequenceLength
        let window = Int(advertisedRightEdge - receiveNext)

        // First: is the segment in the window? (§3.10.7.4 first step.)
        var acceptable: Bool
        if length == 0 {
            acceptable =
                window == 0
                ? sequence == receiveNext : sequence.isInWindow(start: receiveNext, size: UInt32(max(window, 1)))
        } else if window == 0 {
            acceptable = false
        } else {
            acceptable =
                sequence.isInWindow(start: receiveNext, size: UInt32(window))
                || (sequence + UInt32(length - 1)).isInWindow(start: receiveNext, size: UInt32(window))
        }
        // PAWS (RFC 7323 §5.3): an old timestamp marks an old duplicate. One tick of slack, as Linux allows
        // (`TCP_PAWS_WINDOW`): segments reordered across a clock tick are not old.
        if acceptable, timestampsEnabled, !flags.contains(.rst), let timestamps = segment.options.timestamps,
            Int32(bitPattern: timestamps.value &- timestampRecent) < -1
        {
            acceptable = false
        }
        if !acceptable {
            if !flags.contains(.rst) { acknowledgeNow = true }
            let end = sequence + UInt32(segment.payloadLength)
            if sackPermitted, segment.payloadLength > 0, !(receiveNext < end) {
                duplicateReport = TCPSACKBlock(left: sequence, right: end)
            }
            // A zero window still takes ACKs (RFC 9293 §3.10.7.4: "valid ACKs ... should be processed").
            if window == 0, flags.contains(.ack), !flags.contains(.rst), !flags.contains(.syn) {
                _ = processAcknowledgement(segment, now: now, emitter: &emitter, events: &events)
            }
            flush(now: now, emitter: &emitter)
            return
        }
        // Only an acceptable segment shows the peer is there (an old duplicate may come from anywhere).
        restartKeepAlive(now: now)

        // Second: RST (RFC 5961 §3.2): only an exact match resets; others in the window get a challenge ACK.
        if flags.contains(.rst) {
            if sequence == receiveNext {
                receiveQueue = ReceiveQueue()
                close(state == .synReceived ? .refused : .reset, events: &events)
            } else {
                acknowledgeNow = true
                flush(now: now, emitter: &emitter)
            }
            return
        }

        // Fourth: SYN in a synchronized state (RFC 5961 §4): challenge ACK. A retransmitted SYN in SYN-RECEIVED
        // means our SYN-ACK was lost: send it again.
        if flags.contains(.syn) {
            if !handshakeComplete, sequence == initialReceiveSequence {
                sendSYN(acknowledging: true, now: now, emitter: &emitter)
            } else {
                acknowledgeNow = true
                flush(now: now, emitter: &emitter)
            }
            return
        }

        // Fifth: ACK.
        guard flags.contains(.ack) else { return }
        // Our SYN not yet acknowledged: SYN-RECEIVED, or FIN-WAIT-1 when the application closed before the
        // handshake ended (§3.10.4 lets CLOSE in SYN-RECEIVED queue the FIN).
        if !handshakeComplete {
            let acknowledgement = segment.acknowledgementNumber
            guard sendUnacknowledged < acknowledgement, !(sendNext < acknowledgement) else {
                sendReset(sequence: acknowledgement, emitter: &emitter)
                return
            }
            // The SYN is acknowledged: it takes one sequence number that no queued byte has.
            sendUnacknowledged = initialSendSequence + UInt32(1)
            if timestampsEnabled, let echo = segment.options.timestamps?.echoReply, echo != 0 {
                sampleRTT(echo: echo, now: now)
            } else if consecutiveRetransmissions == 0 {
                rtt.sample(now.since(lastSendTime))
            }
            handshakeComplete = true
            if state == .synReceived { state = .established }
            timers.retransmit = nil
            consecutiveRetransmissions = 0
            sendWindowUpdateSequence = sequence
            sendWindowUpdateAcknowledgement = acknowledgement
            restartKeepAlive(now: now)
            events.append(.connected(id))
        }
        guard processAcknowledgement(segment, now: now, emitter: &emitter, events: &events) else {
            flush(now: now, emitter: &emitter)
            return
        }
        if state == .closed { return }

        // TS.Recent update (RFC 7323 §4.3): only from a segment that covers Last.ACK.sent.
        if timestampsEnabled, let timestamps = segment.options.timestamps, !(lastAcknowledgementSent < sequence),
            !(sequence + UInt32(max(length, 1)) < lastAcknowledgementSent)
        {
            timestampRecent = timestamps.value
        }

        // Seventh: data.
        if segment.payloadLength > 0 {
            if state.receivesData {
                receiveData(segment, now: now, events: &events)
            } else {
                // CLOSE-WAIT, CLOSING, LAST-ACK, TIME-WAIT: the peer already sent FIN; this is a duplicate.
                acknowledgeNow = true
            }
        }

        // Eighth: FIN.
        if flags.contains(.fin) {
            let finAt = sequence + UInt32(segment.payloadLength)
            if finAt == receiveNext {
                acceptFIN(now: now, events: &events)
            } else if receiveNext < finAt {
                receiveQueue.pendingFIN = finAt
                acknowledgeNow = true
            } else if state == .timeWait {
                // A retransmitted FIN: ACK it again and restart 2 MSL (§3.10.7.4).
                acknowledgeNow = true
                timers.timeWait = now + configuration.timeWait
            }
        }
        flush(now: now, emitter: &emitter)
    }

    private mutating func handleInSYNSent(
        _ segment: TCPSegment, now: StackInstant, emitter: inout Emitter, events: inout [StackEvent]
    ) {
        let flags = segment.flags
        if flags.contains(.ack) {
            // §3.10.7.3: an ACK for something we did not send gets a RST (unless it is one).
            let acknowledgement = segment.acknowledgementNumber
            if !(initialSendSequence < acknowledgement) || sendNext < acknowledgement {
                if !flags.contains(.rst) { sendReset(sequence: acknowledgement, emitter: &emitter) }
                return
            }
            if flags.contains(.rst) {
                close(.refused, events: &events)
                return
            }
        } else if flags.contains(.rst) {
            return
        }
        guard flags.contains(.syn) else { return }
        initialReceiveSequence = segment.sequenceNumber
        receiveNext = segment.sequenceNumber + UInt32(1)
        advertisedRightEdge = receiveNext
        adoptPeerOptions(
            segment.options, synWindow: segment.window, synSequence: segment.sequenceNumber, acknowledging: true)
        if flags.contains(.ack) {
            let acknowledgement = segment.acknowledgementNumber
            if timestampsEnabled, let echo = segment.options.timestamps?.echoReply, echo != 0 {
                sampleRTT(echo: echo, now: now)
            } else if consecutiveRetransmissions == 0 {
                rtt.sample(now.since(lastSendTime))
            }
            sendUnacknowledged = acknowledgement
            timers.retransmit = nil
            consecutiveRetransmissions = 0
            handshakeComplete = true
            state = .established
            events.append(.connected(id))
            acknowledgeNow = true
            flush(now: now, emitter: &emitter)
        } else {
            // Simultaneous open (§3.10.7.3 fourth step).
            state = .synReceived
            sendSYN(acknowledging: true, now: now, emitter: &emitter)
        }
    }

    /// The ACK field (§3.10.7.4 fifth step). Returns false when the segment must be dropped after it.
    private mutating func processAcknowledgement(
        _ segment: TCPSegment, now: StackInstant, emitter: inout Emitter, events: inout [StackEvent]
    ) -> Bool {
        let acknowledgement = segment.acknowledgementNumber
        // RFC 5961 §5.2: an ACK for data not yet sent, or older than the largest window allows, is answered with
        // an ACK and dropped.
        if sendMaximum < acknowledgement {
            acknowledgeNow = true
            return false
        }
        if acknowledgement < sendUnacknowledged - UInt32(max(maximumSendWindow, 65535)) {
            acknowledgeNow = true
            return false
        }
        let previousWindow = sendWindow
        // SND.WND update (§3.10.7.4): only from a newer segment, or the same one with a newer ACK.
        let segmentWindow = Int(segment.window) << Int(peerWindowScale)
        if sendWindowUpdateSequence < segment.sequenceNumber
            || (sendWindowUpdateSequence == segment.sequenceNumber
                && !(acknowledgement < sendWindowUpdateAcknowledgement))
        {
            sendWindow = segmentWindow
            sendWindowUpdateSequence = segment.sequenceNumber
            sendWindowUpdateAcknowledgement = acknowledgement
            maximumSendWindow = max(maximumSendWindow, sendWindow)
        }
        // An ACK older than SND.UNA (reordered behind a newer one) is old news: its window was handled above, and its
        // SACK blocks and duplicate count say nothing about losses now.
        if acknowledgement < sendUnacknowledged { return true }
        let blocks = segment.options.sackBlocks
        // A D-SACK (RFC 2883): the first block reports data received twice, below the ACK or inside the second block.
        // An ACK whose only news is a D-SACK answers a duplicate we sent; it is not a duplicate ACK.
        let onlyDuplicateReport =
            blocks.count == 1 && LossRecovery.startsWithDuplicateReport(blocks, acknowledgement: acknowledgement)
        if sackPermitted, !blocks.isEmpty, !onlyDuplicateReport {
            loss.scoreboard.add(blocks, unacknowledged: acknowledgement, sent: sendMaximum)
            // RFC 6675 §5: any ACK whose SACK information shows the first unacknowledged segment lost starts recovery,
            // duplicate or not (both sides sending data means few ACKs are pure duplicates). A probe that arrived
            // while the bytes before it did not is the same evidence (RFC 8985's RACK, in its simplest form).
            let dataMSS = sendMSS - (timestampsEnabled ? 12 : 0)
            let probeArrived =
                loss.probeOutstanding
                && loss.probeSequence.map { acknowledgement < $0 && loss.scoreboard.isSacked($0) } == true
            if loss.recoveryPoint == nil, acknowledgement < sendMaximum,
                loss.scoreboard.isLost(acknowledgement, mss: dataMSS) || probeArrived
            {
                // Entered after the ACK itself is taken, so that recovery starts from it.
                loss.pendingRecovery = true
            } else if loss.recoveryPoint == nil, timers.lossDetection == nil {
                timers.lossDetection = now + reorderWindow
            }
        }

        if sendUnacknowledged < acknowledgement {
            newlyAcknowledged(upTo: acknowledgement, segment: segment, now: now, events: &events)
            if loss.pendingRecovery, loss.recoveryPoint == nil, sendUnacknowledged != sendMaximum {
                enterRecovery(now: now)
            }
            loss.pendingRecovery = false
        } else if loss.pendingRecovery {
            loss.pendingRecovery = false
            enterRecovery(now: now)
        } else if acknowledgement == sendUnacknowledged, segment.payloadLength == 0, !segment.flags.contains(.fin),
            sendWindow == previousWindow, sendUnacknowledged != sendMaximum, !onlyDuplicateReport
        {
            // A duplicate ACK (RFC 5681 §2).
            loss.duplicateAcknowledgements += 1
            // Early retransmit (RFC 5827): with fewer than four segments out and nothing new to send, fewer duplicate
            // ACKs can ever arrive, so the threshold drops to the outstanding segments minus one.
            let outstandingSegments = (Int(sendMaximum - sendUnacknowledged) + sendMSS - 1) / sendMSS
            let nothingNew = sendQueue.count <= Int(sendMaximum - sendUnacknowledged)
            let threshold = nothingNew && outstandingSegments < 4 ? max(1, outstandingSegments - 1) : 3
            if loss.recoveryPoint == nil, loss.duplicateAcknowledgements >= threshold {
                enterRecovery(now: now)
            }
        }
        if timers.persisting, sendWindow > 0 {
            // The window opened: the probes' backoff ends with it (the next flight starts from the normal timeout).
            timers.persisting = false
            timers.retransmit = nil
            rtt.clearBackoff()
        }
        checkLostRetransmission(now: now)
        return true
    }

    /// In recovery, the hole at SND.UNA was retransmitted and bytes sent after that retransmission are SACKed: once a
    /// reordering window has passed, the retransmission was lost; the hole goes again now rather than at the timeout.
    private mutating func checkLostRetransmission(now: StackInstant) {
        let later = loss.checkLostRetransmission(
            sendUnacknowledged: sendUnacknowledged, now: now, reorderWindow: reorderWindow)
        if let later, timers.lossDetection == nil { timers.lossDetection = later }
    }

    private mutating func newlyAcknowledged(
        upTo acknowledgement: TCPSequenceNumber, segment: TCPSegment, now: StackInstant, events: inout [StackEvent]
    ) {
        var acknowledged = Int(acknowledgement - sendUnacknowledged)
        // RFC 7661: the window only grows while it is what limits the sender; an application- or receiver-limited flow
        // would otherwise inflate it without bound (it reached 288 MiB in a receiver-limited benchmark).
        let congestionLimited = Int(sendMaximum - sendUnacknowledged) * 2 >= congestion.window
        // RTT: the timestamp echo (RFC 7323 §4.1), or the timed segment (Karn).
        if timestampsEnabled, let echo = segment.options.timestamps?.echoReply, echo != 0 {
            sampleRTT(echo: echo, now: now)
        } else if let timed = timedSegment, timed.sequence < acknowledgement {
            rtt.sample(now.since(timed.sentAt))
            timedSegment = nil
        }
        // Was our FIN acknowledged?
        var finAcknowledged = false
        if let fin = finSequence, fin < acknowledgement {
            finAcknowledged = true
            acknowledged -= 1
        }
        let fromQueue = min(acknowledged, sendQueue.count)
        sendQueue.dropFirst(fromQueue)
        sendUnacknowledged = acknowledgement
        if sendNext < sendUnacknowledged { sendNext = sendUnacknowledged }
        loss.acknowledged(upTo: acknowledgement)
        if loss.scoreboard.isEmpty { timers.lossDetection = nil }
        consecutiveRetransmissions = 0
        if writerBlocked, sendQueue.count < configuration.sendBufferLimit / 2 {
            writerBlocked = false
            events.append(.writable(id))
        }

        if let recover = loss.recoveryPoint {
            if !(acknowledgement < recover) {
                // Full ACK: recovery is over (RFC 6582 §3.2 step 3).
                loss.end()
                congestion.onRecoveryEnd()
            } else if !sackPermitted {
                // Partial ACK: the next hole is lost too; retransmit it now (step 4).
                sendNext = sendUnacknowledged
                loss.highestRetransmitted = sendUnacknowledged
            }
        } else if congestionLimited {
            congestion.onAcknowledged(bytes: fromQueue, now: now, smoothedRTT: rtt.smoothed)
        }
        // RFC 6298 §5.2/5.3: stop the timer when all is acknowledged, restart it otherwise.
        timers.retransmit = sendUnacknowledged == sendMaximum ? nil : now + rtt.timeout
        loss.probeOutstanding = false
        armProbe(now: now)

        if finAcknowledged {
            switch state {
            case .finWait1:
                state = .finWait2
            case .closing:
                enterTimeWait(now: now, events: &events)
            case .lastAck:
                close(.normal, events: &events)
            default:
                break
            }
        }
    }

    private mutating func sampleRTT(echo: UInt32, now: StackInstant) {
        let elapsed = ourTimestamp(now) &- echo
        // Ignore echoes from the future or absurdly old ones (wrapped clocks).
        guard elapsed < 60_000 else { return }
        rtt.sample(StackDuration.milliseconds(UInt64(max(elapsed, 0))) + StackDuration.microseconds(500))
    }

    /// How long a hole may wait for reordered segments before it counts as lost: a quarter RTT (RFC 8985 §6.2.1),
    /// but at least 2 ms, since paths inside one machine reorder by scheduling, not by distance.
    private var reorderWindow: StackDuration {
        max(StackDuration(nanoseconds: (rtt.smoothed ?? .milliseconds(8)).nanoseconds / 4), .milliseconds(2))
    }

    private mutating func enterRecovery(now: StackInstant) {
        timers.probe = nil
        timers.lossDetection = nil
        congestion.onFastRetransmit(flightSize: Int(sendMaximum - sendUnacknowledged))
        timedSegment = nil
        // Retransmit the first unacknowledged segment at once (RFC 5681 §3.2 step 2). With SACK the hole loop in
        // flush does it (and the other holes) from the scoreboard, while new data continues from SND.MAX; without
        // SACK information, going back to SND.UNA sends that one segment, and flush returns to SND.MAX after it.
        if loss.enter(sendUnacknowledged: sendUnacknowledged, sendMaximum: sendMaximum, sackPermitted: sackPermitted) {
            sendNext = sendUnacknowledged
        }
    }

    private mutating func receiveData(_ segment: TCPSegment, now: StackInstant, events: inout [StackEvent]) {
        let before = receiveNext
        if sackPermitted, segment.payloadLength > 0, segment.sequenceNumber < before {
            // Its start arrived before: report the part received twice.
            let end = segment.sequenceNumber + UInt32(segment.payloadLength)
            duplicateReport = TCPSACKBlock(left: segment.sequenceNumber, right: end < before ? end : before)
            acknowledgeNow = true
        }
        let hadOutOfOrder = receiveQueue.outOfOrderCount > 0
        let limit = advertisedRightEdge
        receiveNext = receiveQueue.receive(segment.payload, at: segment.sequenceNumber, next: receiveNext, limit: limit)
        let advanced = Int(receiveNext - before)
        if advanced > 0 {
            bytesSinceAcknowledgement += advanced
            if !readableReported {
                readableReported = true
                events.append(.readable(id))
            }
            // RFC 5681 §4.2: ACK at least every second full segment; at once when a hole was filled. A PSH marks the
            // end of a write on the other side: ACK it now rather than stall a request/response exchange.
            if bytesSinceAcknowledgement >= 2 * ourMSS || hadOutOfOrder || segment.flags.contains(.psh) {
                acknowledgeNow = true
            } else {
                acknowledgementPending = true
                if timers.delayedAcknowledgement == nil {
                    timers.delayedAcknowledgement = now + configuration.delayedACKTimeout
                }
            }
            if let fin = receiveQueue.pendingFIN, fin == receiveNext {
                receiveQueue.pendingFIN = nil
                acceptFIN(now: now, events: &events)
            }
        } else {
            // Out of order or duplicate: ACK at once so the sender sees duplicate ACKs and our SACK blocks (§4.2).
            acknowledgeNow = true
        }
    }

    private mutating func acceptFIN(now: StackInstant, events: inout [StackEvent]) {
        guard !finReceived else { return }
        finReceived = true
        receiveNext = receiveNext + UInt32(1)
        advertisedRightEdge = TCPSequenceNumber.later(advertisedRightEdge, receiveNext)
        acknowledgeNow = true
        events.append(.peerClosed(id))
        switch state {
        case .synReceived, .established:
            state = .closeWait
        case .finWait1:
            // Our FIN not yet acknowledged: simultaneous close (§3.6).
            state = .closing
        case .finWait2:
            enterTimeWait(now: now, events: &events)
        default:
            break
        }
    }

    private mutating func enterTimeWait(now: StackInstant, events: inout [StackEvent]) {
        state = .timeWait
        timers.timeWait = now + configuration.timeWait
        timers.retransmit = nil
        timers.keepAlive = nil
        timers.delayedAcknowledgement = nil
        events.append(.closed(id, .normal))
        closeReason = .normal
    }

    private mutating func close(_ reason: FlowCloseReason, events: inout [StackEvent]) {
        guard state != .closed else { return }
        let wasReported = state == .timeWait
        close(reason)
        if !wasReported { events.append(.closed(id, reason)) }
    }

    private mutating func close(_ reason: FlowCloseReason) {
        state = .closed
        closeReason = closeReason ?? reason
        timers.retransmit = nil
        timers.probe = nil
        timers.lossDetection = nil
        timers.delayedAcknowledgement = nil
        timers.keepAlive = nil
        timers.timeWait = nil
        sendQueue = SendQueue()
        receiveQueue.discardOutOfOrder()
        loss.scoreboard.clear()
    }

    // MARK: - Sending

    /// Our TSval for `now`: milliseconds plus the connection's offset.
    private func ourTimestamp(_ now: StackInstant) -> UInt32 {
        UInt32(truncatingIfNeeded: now.nanoseconds / 1_000_000) &+ timestampOffset
    }

    /// Free room in the receive buffer.
    private var receiveSpace: Int { max(0, receiveBuffer - receiveQueue.heldBytes) }

    /// The window field to send, moving the advertised right edge only forward.
    private mutating func windowField() -> UInt16 {
        let right = receiveNext + receiveSpace
        if advertisedRightEdge < right {
            let growth = Int(right - advertisedRightEdge)
            let current = Int(advertisedRightEdge - receiveNext)
            // Receiver silly-window avoidance: only grow by a worthwhile amount, unless the window is small.
            if growth >= min(receiveBuffer / 2, ourMSS) || current < ourMSS {
                advertisedRightEdge = right
            }
        }
        if advertisedRightEdge < receiveNext { advertisedRightEdge = receiveNext }
        let window = Int(advertisedRightEdge - receiveNext) >> Int(ourWindowScale)
        return UInt16(min(window, 65535))
    }

    private func options(now: StackInstant, syn: Bool) -> TCPOptions {
        var options = TCPOptions()
        if syn {
            options.maximumSegmentSize = UInt16(ourMSS)
            let offer = state == .synSent || peerSYN?.options.windowScale != nil
            if offer { options.windowScale = configuration.windowScale }
            options.sackPermitted = state == .synSent || sackPermitted
            if state == .synSent || timestampsEnabled {
                options.timestamps = TCPTimestamps(value: ourTimestamp(now), echoReply: timestampRecent)
            }
            return options
        }
        if timestampsEnabled {
            options.timestamps = TCPTimestamps(value: ourTimestamp(now), echoReply: timestampRecent)
        }
        let room = timestampsEnabled ? 3 : 4
        if sackPermitted, let duplicateReport {
            options.sackBlocks = [duplicateReport] + receiveQueue.recentBlocks.prefix(room - 1)
        } else if sackPermitted, !receiveQueue.recentBlocks.isEmpty {
            options.sackBlocks = Array(receiveQueue.recentBlocks.prefix(room))
        }
        return options
    }

    private mutating func sendSYN(acknowledging: Bool, now: StackInstant, emitter: inout Emitter) {
        let header = TCPHeader(
            sourcePort: key.local.port, destinationPort: key.remote.port, sequenceNumber: initialSendSequence,
            acknowledgementNumber: acknowledging ? receiveNext : TCPSequenceNumber(0),
            flags: acknowledging ? [.syn, .ack] : .syn,
            window: UInt16(min(receiveSpace, 65535)), options: options(now: now, syn: true))
        emitter.tcp(key, header)
        if acknowledging { lastAcknowledgementSent = receiveNext }
        advertisedRightEdge = receiveNext + min(receiveSpace, 65535)
        sendNext = initialSendSequence + UInt32(1)
        sendMaximum = sendNext
        lastSendTime = now
        timers.retransmit = now + rtt.timeout
    }

    private mutating func sendReset(sequence: TCPSequenceNumber, emitter: inout Emitter) {
        emitter.tcp(
            key,
            TCPHeader(
                sourcePort: key.local.port, destinationPort: key.remote.port, sequenceNumber: sequence, flags: .rst,
                window: 0))
    }

    /// Sends what may be sent now: retransmissions in recovery, new data within the windows, FIN, and an owed ACK.
    mutating func flush(now: StackInstant, emitter: inout Emitter) {
        switch state {
        case .dialing, .synSent, .closed:
            return
        case .synReceived:
            if acknowledgeNow { sendSYN(acknowledging: true, now: now, emitter: &emitter) }
            acknowledgeNow = false
            return
        case .timeWait, .finWait2:
            if acknowledgeNow || acknowledgementPending { sendAcknowledgement(now: now, emitter: &emitter) }
            return
        case .finWait1 where !handshakeComplete:
            if acknowledgeNow { sendSYN(acknowledging: true, now: now, emitter: &emitter) }
            acknowledgeNow = false
            return
        case .established, .finWait1, .closeWait, .lastAck, .closing:
            // CLOSING too: the application's FIN was queued (not necessarily sent) when the peer's arrived, so data,
            // the FIN and their retransmissions may still be due.
            break
        }
        var sentSomething = false
        // RFC 9293 §3.7.1 / RFC 6691: the MSS counts data only; options in the header come out of it.
        let mss = max(64, sendMSS - options(now: now, syn: false).encodedLength)
        let segmentLimit = configuration.segmentationOffload ? max(mss, (65535 - 120) / mss * mss) : mss
        // After an idle period longer than an RTO, start again from the initial window (RFC 5681 §4.1).
        if sendUnacknowledged == sendMaximum, now.since(lastSendTime) > rtt.timeout, !sendQueue.isEmpty {
            congestion.onIdleRestart()
        }
        while true {
            let inFlight = Int(sendMaximum - sendUnacknowledged)
            // Retransmissions during SACK recovery (RFC 6675 §5, NextSeg rule 1), within pipe < cwnd.
            if loss.recoveryPoint != nil, sackPermitted, let highest = loss.scoreboard.highestSacked {
                let from = TCPSequenceNumber.later(loss.highestRetransmitted, sendUnacknowledged)
                let pipe = inFlight - loss.scoreboard.sackedBytes - loss.scoreboard.holeBytes(from: from)
                if pipe >= congestion.window { break }
                // NextSeg rule 1: only a hole IsLost() calls lost (three segments' worth SACKed above it); the rest may
                // still be arriving out of order. Rule 3 retransmits them anyway when there is nothing new to send.
                let nothingNew = sendQueue.count <= Int(sendMaximum - sendUnacknowledged)
                if let hole = loss.scoreboard.nextHole(from: from), hole.start < highest,
                    hole.start == sendUnacknowledged || nothingNew || loss.scoreboard.isLost(hole.start, mss: mss)
                {
                    let length = min(hole.length, mss, sendQueue.count - Int(hole.start - sendUnacknowledged))
                    if length > 0 {
                        sendData(
                            at: hole.start, length: length, segmentSize: mss, now: now, emitter: &emitter,
                            retransmission: true)
                        loss.retransmitted(hole: hole.start, sendMaximum: sendMaximum, now: now)
                        loss.highestRetransmitted = hole.start + UInt32(length)
                        sentSomething = true
                        continue
                    }
                }
            }
            let offset = Int(sendNext - sendUnacknowledged)
            let unsent = sendQueue.count - offset
            let isRetransmission = sendNext < sendMaximum
            var congestionRoom: Int
            if loss.recoveryPoint != nil, sackPermitted {
                let from = TCPSequenceNumber.later(loss.highestRetransmitted, sendUnacknowledged)
                congestionRoom =
                    congestion.window - (inFlight - loss.scoreboard.sackedBytes - loss.scoreboard.holeBytes(from: from))
            } else if loss.recoveryPoint != nil {
                // NewReno without SACK: each duplicate ACK means a segment left the network (RFC 5681 §3.2 step 4).
                congestionRoom =
                    congestion.window + loss.duplicateAcknowledgements * mss - Int(sendNext - sendUnacknowledged)
            } else {
                congestionRoom = congestion.window - Int(sendNext - sendUnacknowledged)
            }
            var windowRoom = sendWindow - offset
            if isRetransmission, !sentSomething {
                // One retransmission per flush even when the window is used up (fast retransmit's first segment);
                // after a timeout, the head goes even into a closed receive window, as Linux sends it.
                congestionRoom = max(congestionRoom, mss)
                if loss.retransmitHead { windowRoom = max(windowRoom, min(mss, unsent)) }
            }
            let room = min(congestionRoom, windowRoom)
            guard unsent > 0, room > 0 else { break }
            var length = min(unsent, room, segmentLimit)
            if length > mss { length = length / mss * mss }
            // Sender silly-window avoidance (RFC 9293 §3.8.6.2.1): a short segment only if it is all we have, or the
            // peer's window is that small at most.
            if length < mss, length < unsent, length < maximumSendWindow / 2 { break }
            sendData(
                at: sendNext, length: length, segmentSize: mss, now: now, emitter: &emitter,
                retransmission: isRetransmission)
            sendNext = sendNext + UInt32(length)
            if sendMaximum < sendNext { sendMaximum = sendNext }
            sentSomething = true
            loss.retransmitHead = false
            if isRetransmission, loss.recoveryPoint != nil, !sackPermitted || loss.scoreboard.isEmpty {
                // NewReno retransmits one segment per partial ACK, and so does a fast retransmit without SACK
                // information; new data follows from SND.MAX.
                sendNext = sendMaximum
            }
        }
        // FIN after the last byte (RFC 9293 §3.10.4), once everything queued went out.
        if finQueued, finSequence == nil, Int(sendNext - sendUnacknowledged) == sendQueue.count {
            sendFIN(now: now, emitter: &emitter)
            sentSomething = true
        } else if let fin = finSequence, sendNext == fin, Int(sendNext - sendUnacknowledged) == sendQueue.count {
            // Go-back-N after a timeout reached the FIN again.
            sendFIN(now: now, emitter: &emitter)
            sentSomething = true
        }
        if sentSomething, !loss.probeOutstanding { armProbe(now: now) }
        // Nothing in flight, data waiting, and the window closed or too small for silly-window avoidance to use it:
        // probe it (§3.8.6.1), or nothing would ever send the data.
        if !sentSomething, sendUnacknowledged == sendMaximum, sendQueue.count > 0, timers.retransmit == nil,
            state == .established || state == .closeWait
        {
            timers.persisting = true
            timers.retransmit = now + rtt.timeout
        }
        if !sentSomething,
            acknowledgeNow || (acknowledgementPending && timers.delayedAcknowledgement.map { !(now < $0) } ?? false)
        {
            sendAcknowledgement(now: now, emitter: &emitter)
        }
    }

    private mutating func sendData(
        at sequence: TCPSequenceNumber, length: Int, segmentSize: Int, now: StackInstant, emitter: inout Emitter,
        retransmission: Bool
    ) {
        let offset = Int(sequence - sendUnacknowledged)
        let pushes = offset + length == sendQueue.count
        let header = TCPHeader(
            sourcePort: key.local.port, destinationPort: key.remote.port, sequenceNumber: sequence,
            acknowledgementNumber: receiveNext, flags: pushes ? [.ack, .psh] : .ack, window: windowField(),
            options: options(now: now, syn: false))
        emitter.tcp(
            key, header, queue: sendQueue, payloadOffset: offset, payloadLength: length,
            segmentSize: length > segmentSize ? segmentSize : nil)
        noteAcknowledgementSent()
        lastSendTime = now
        if retransmission {
            retransmittedSegments += 1
            if let timed = timedSegment, !(timed.sequence < sequence) { timedSegment = nil }
        } else if !timestampsEnabled, timedSegment == nil {
            timedSegment = (sequence, now)
        }
        if timers.retransmit == nil || timers.persisting {
            timers.persisting = false
            timers.retransmit = now + rtt.timeout
        }
    }

    /// PTO = 2 SRTT, plus the peer's worst delayed ACK when only one segment is out (RFC 8985 §7.2); armed only when
    /// it would fire before the RTO, outside recovery, and not while a probe is already out.
    private mutating func armProbe(now: StackInstant) {
        // Not while recovering from a timeout either (RFC 8985 §7.2: the RTO's own backoff governs then).
        guard !loss.probeOutstanding, loss.recoveryPoint == nil, rtt.backoffs == 0, sendUnacknowledged != sendMaximum,
            let srtt = rtt.smoothed,
            state == .established || state == .closeWait || state == .finWait1 || state == .lastAck || state == .closing
        else {
            timers.probe = nil
            return
        }
        var timeout = max(srtt * 2, .milliseconds(2))
        if Int(sendMaximum - sendUnacknowledged) <= sendMSS { timeout = timeout + .milliseconds(40) }
        timers.probe = timeout < rtt.timeout ? now + timeout : nil
    }

    /// The probe timer fired (RFC 8985 §7.3): send one new segment if there is one, else the last one again.
    private mutating func sendProbe(now: StackInstant, emitter: inout Emitter) {
        loss.probeOutstanding = true
        timers.probe = nil
        let mss = max(64, sendMSS - options(now: now, syn: false).encodedLength)
        let sent =
            Int(sendMaximum - sendUnacknowledged)
            - (finSequence != nil && sendMaximum == finSequence! + UInt32(1) ? 1 : 0)
        let unsent = sendQueue.count - sent
        if unsent > 0, sendWindow > sent {
            let length = min(unsent, mss, sendWindow - sent)
            let at = sendUnacknowledged + UInt32(sent)
            loss.probeSequence = at
            sendData(at: at, length: length, segmentSize: mss, now: now, emitter: &emitter, retransmission: false)
            if sendNext < at + UInt32(length) { sendNext = at + UInt32(length) }
            if sendMaximum < sendNext { sendMaximum = sendNext }
        } else if let fin = finSequence, sendMaximum == fin + UInt32(1), sent == sendQueue.count {
            let header = TCPHeader(
                sourcePort: key.local.port, destinationPort: key.remote.port, sequenceNumber: fin,
                acknowledgementNumber: receiveNext, flags: [.fin, .ack], window: windowField(),
                options: options(now: now, syn: false))
            emitter.tcp(key, header)
        } else if sent > 0 {
            let length = min(sent, mss)
            loss.probeSequence = sendUnacknowledged + UInt32(sent - length)
            sendData(
                at: sendUnacknowledged + UInt32(sent - length), length: length, segmentSize: mss, now: now,
                emitter: &emitter, retransmission: true)
        }
        timers.retransmit = now + rtt.timeout
    }

    private mutating func sendFIN(now: StackInstant, emitter: inout Emitter) {
        let header = TCPHeader(
            sourcePort: key.local.port, destinationPort: key.remote.port, sequenceNumber: sendNext,
            acknowledgementNumber: receiveNext, flags: [.fin, .ack], window: windowField(),
            options: options(now: now, syn: false))
        emitter.tcp(key, header)
        noteAcknowledgementSent()
        finSequence = sendNext
        sendNext = sendNext + UInt32(1)
        if sendMaximum < sendNext { sendMaximum = sendNext }
        lastSendTime = now
        if timers.retransmit == nil { timers.retransmit = now + rtt.timeout }
    }

    private mutating func sendAcknowledgement(now: StackInstant, emitter: inout Emitter) {
        let header = TCPHeader(
            sourcePort: key.local.port, destinationPort: key.remote.port, sequenceNumber: sendNext,
            acknowledgementNumber: receiveNext, flags: .ack, window: windowField(),
            options: options(now: now, syn: false))
        emitter.tcp(key, header)
        noteAcknowledgementSent()
    }

    private mutating func noteAcknowledgementSent() {
        acknowledgeNow = false
        acknowledgementPending = false
        timers.delayedAcknowledgement = nil
        bytesSinceAcknowledgement = 0
        duplicateReport = nil
        lastAcknowledgementSent = receiveNext
    }

    // MARK: - Timers

    /// The earliest moment this connection needs ``fireTimers(now:emitter:events:)``.
    var nextDeadline: StackInstant? { timers.next }

    mutating func fireTimers(now: StackInstant, emitter: inout Emitter, events: inout [StackEvent]) {
        if let deadline = timers.timeWait, !(now < deadline) {
            timers.timeWait = nil
            close(.normal, events: &events)
            return
        }
        if let deadline = timers.retransmit, !(now < deadline) {
            timers.retransmit = nil
            retransmissionTimeout(now: now, emitter: &emitter, events: &events)
            if state == .closed { return }
        }
        if let deadline = timers.lossDetection, !(now < deadline) {
            timers.lossDetection = nil
            if loss.recoveryPoint == nil, let highest = loss.scoreboard.highestSacked, sendUnacknowledged < highest {
                enterRecovery(now: now)
            } else {
                checkLostRetransmission(now: now)
            }
        }
        if let deadline = timers.probe, !(now < deadline) {
            sendProbe(now: now, emitter: &emitter)
        }
        if let deadline = timers.keepAlive, !(now < deadline) {
            keepAliveTimeout(now: now, emitter: &emitter, events: &events)
            if state == .closed { return }
        }
        if let deadline = timers.delayedAcknowledgement, !(now < deadline) {
            timers.delayedAcknowledgement = nil
            if acknowledgementPending { acknowledgeNow = true }
        }
        flush(now: now, emitter: &emitter)
    }

    private mutating func retransmissionTimeout(now: StackInstant, emitter: inout Emitter, events: inout [StackEvent]) {
        consecutiveRetransmissions += 1
        // The handshake is still on: SYN-SENT, SYN-RECEIVED, or FIN-WAIT-1 reached from SYN-RECEIVED by an early close.
        if state == .synSent || state == .synReceived || (state == .finWait1 && !handshakeComplete) {
            guard consecutiveRetransmissions <= configuration.maximumHandshakeRetransmissions else {
                close(.timedOut, events: &events)
                return
            }
            rtt.backOff()
            retransmittedSegments += 1
            sendSYN(acknowledging: state != .synSent, now: now, emitter: &emitter)
            return
        }
        switch state {
        case .synSent, .synReceived:
            return
        case .established, .finWait1, .closeWait, .lastAck, .closing:
            break
        case .dialing, .finWait2, .timeWait, .closed:
            return
        }
        if timers.persisting, sendWindow > 0, sendUnacknowledged == sendMaximum, sendQueue.count > 0 {
            // A window smaller than silly-window avoidance would fill: use it as it is (Linux's tcp_write_wakeup).
            timers.persisting = false
            consecutiveRetransmissions = 0
            let mss = max(64, sendMSS - options(now: now, syn: false).encodedLength)
            let length = min(sendWindow, sendQueue.count, mss)
            sendData(at: sendNext, length: length, segmentSize: mss, now: now, emitter: &emitter, retransmission: false)
            sendNext = sendNext + UInt32(length)
            if sendMaximum < sendNext { sendMaximum = sendNext }
            timers.retransmit = now + rtt.timeout
            return
        }
        if timers.persisting {
            // Zero-window probe: one byte beyond SND.UNA - 1 would be data; an ACK with SEG.SEQ = SND.UNA - 1 makes the
            // peer answer with its current window without consuming anything (as Linux's tcp_xmit_probe_skb).
            consecutiveRetransmissions = 0
            let header = TCPHeader(
                sourcePort: key.local.port, destinationPort: key.remote.port,
                sequenceNumber: sendUnacknowledged - UInt32(1),
                acknowledgementNumber: receiveNext, flags: .ack, window: windowField(),
                options: options(now: now, syn: false))
            emitter.tcp(key, header)
            rtt.backOff()
            timers.retransmit = now + rtt.timeout
            return
        }
        guard consecutiveRetransmissions <= configuration.maximumRetransmissions else {
            abort(emitter: &emitter)
            closeReason = .timedOut
            events.append(.closed(id, .timedOut))
            return
        }
        timers.probe = nil
        // RFC 6298 §5.4-5.6 and RFC 5681 §3.1: back off, collapse the window, go back to SND.UNA.
        congestion.onTimeout(flightSize: Int(sendMaximum - sendUnacknowledged))
        rtt.backOff()
        loss.timedOut()
        timedSegment = nil
        sendNext = sendUnacknowledged
        if let fin = finSequence, sendUnacknowledged == fin + UInt32(1) { return }
        timers.retransmit = now + rtt.timeout
    }

    private mutating func restartKeepAlive(now: StackInstant) {
        timers.keepAliveProbesSent = 0
        if let idle = configuration.keepAliveIdle, state == .established || state == .closeWait {
            timers.keepAlive = now + idle
        } else {
            timers.keepAlive = nil
        }
    }

    private mutating func keepAliveTimeout(now: StackInstant, emitter: inout Emitter, events: inout [StackEvent]) {
        guard state == .established || state == .closeWait else {
            timers.keepAlive = nil
            return
        }
        guard timers.keepAliveProbesSent < configuration.keepAliveProbes else {
            abort(emitter: &emitter)
            closeReason = .timedOut
            events.append(.closed(id, .timedOut))
            return
        }
        timers.keepAliveProbesSent += 1
        // RFC 1122 §4.2.3.6: SEG.SEQ = SND.NXT - 1, no data; the peer answers with an ACK.
        let header = TCPHeader(
            sourcePort: key.local.port, destinationPort: key.remote.port, sequenceNumber: sendNext - UInt32(1),
            acknowledgementNumber: receiveNext, flags: .ack, window: windowField(),
            options: options(now: now, syn: false))
        emitter.tcp(key, header)
        timers.keepAlive = now + configuration.keepAliveInterval
    }

    // MARK: - Path MTU

    /// An ICMP "fragmentation needed" / "packet too big" quoted one of our segments (RFC 1191, RFC 8201).
    mutating func pathMTUDropped(to mtu: Int, now: StackInstant, emitter: inout Emitter) {
        let mss = mtu - (key.isIPv6 ? 60 : 40)
        // Never below the IPv4 minimum of 576 - 40 or the IPv6 minimum of 1280 - 60 (RFC 8201 §4).
        let floor = key.isIPv6 ? 1220 : 536
        let newMSS = max(mss, floor)
        guard newMSS < sendMSS else { return }
        sendMSS = newMSS
        congestion.updateMSS(newMSS)
        // Segments in flight were too big: send them again, smaller (RFC 1191 §6.4), without a congestion response.
        sendNext = sendUnacknowledged
        timedSegment = nil
        flush(now: now, emitter: &emitter)
    }

    // MARK: - Auto-tuning

    private mutating func autoTune(read bytes: Int, now: StackInstant) {
        bytesReadInEpoch += bytes
        let epoch = max(rtt.smoothed ?? .milliseconds(1), .milliseconds(1))
        guard now.since(tuningEpochStart) >= epoch else { return }
        if bytesReadInEpoch * 2 > receiveBuffer, receiveBuffer < configuration.maximumReceiveBuffer {
            receiveBuffer = min(configuration.maximumReceiveBuffer, max(receiveBuffer * 2, bytesReadInEpoch * 2))
        }
        bytesReadInEpoch = 0
        tuningEpochStart = now
    }

    // MARK: - For tests and reports

    /// Whether the connection may be forgotten: closed, with nothing left to read.
    var isFinished: Bool { state == .closed && receiveQueue.readyCount == 0 }

    var negotiated: (mss: Int, peerWindowScale: UInt8, ourWindowScale: UInt8, sack: Bool, timestamps: Bool) {
        (sendMSS - (timestampsEnabled ? 12 : 0), peerWindowScale, ourWindowScale, sackPermitted, timestampsEnabled)
    }
}
