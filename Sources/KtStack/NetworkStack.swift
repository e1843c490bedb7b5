import KtWire
import NIOCore

/// A userspace TCP/UDP/ICMP endpoint for every address routed into the TUN.
///
/// It terminates each TCP connection itself, asks the engine to dial the real destination through the tunnel
/// (``StackEvent/dial(_:_:)``), and answers the SYN only once the dial succeeded. It holds no clock, no random
/// source of its own and does no I/O: packets come in through ``receive(_:now:)``, timers through
/// ``advance(to:)`` (``nextDeadline`` says when), and what it sends accumulates for ``takeOutput()``.
public struct NetworkStack {
    public let configuration: StackConfiguration
    private var random: any RandomNumberGenerator

    // MARK: TCP flows

    private var slots: [TCPConnection?] = []
    private var generations: [UInt32] = []
    private var freeSlots: [UInt32] = []
    private var flows: [FlowKey: UInt32] = [:]
    private var dialing: Set<UInt32> = []
    private var timers = TimerHeap()
    /// The deadline each slot last put on the heap, so that an unchanged deadline is not pushed again.
    private var scheduled: [StackInstant?] = []

    // MARK: UDP flows

    private var udpFlows: [FlowKey: StackInstant] = [:]
    private var nextUDPSweep: StackInstant?

    // MARK: Output

    private var emitter: Emitter
    private var events: [StackEvent] = []
    public private(set) var counters = StackCounters()

    /// A stack with `configuration`; `random` supplies initial sequence numbers, timestamp offsets and ephemeral
    /// ports (tests pass a seeded generator).
    public init(configuration: StackConfiguration = StackConfiguration(), random: any RandomNumberGenerator) {
        self.configuration = configuration
        self.random = random
        self.emitter = Emitter(checksumOffload: configuration.checksumOffload)
    }

    // MARK: - Packets in

    /// Takes a batch of IP packets read from the TUN.
    public mutating func receive(_ packets: [ByteBuffer], now: StackInstant) {
        for packet in packets { receive(packet, now: now) }
    }

    /// Takes a batch of packets read from a packet device. A packet whose offload metadata says its transport
    /// checksum was left partial by the sending kernel, or verified by the device, is not checked again.
    public mutating func receive(_ packets: [DevicePacket], now: StackInstant) {
        for packet in packets { receive(packet.bytes, trusted: packet.offload.transportChecksumTrusted, now: now) }
    }

    /// Takes one IP packet read from the TUN.
    public mutating func receive(_ packet: ByteBuffer, now: StackInstant) {
        receive(packet, trusted: false, now: now)
    }

    /// Takes one IP packet; `trusted`: its checksums are not checked (the device vouches for it).
    mutating func receive(_ packet: ByteBuffer, trusted: Bool, now: StackInstant) {
        counters.packetsIn += 1
        let verify = configuration.verifyChecksums && !trusted
        let ip: IPPacket
        do {
            ip = try IPPacket(validating: packet, verifyChecksum: verify)
        } catch {
            counters.malformed += 1
            return
        }
        if ip.isFragment {
            // Reassembly is not implemented: TCP never fragments (DF, PMTU discovery), and DNS answers fit.
            counters.fragmentsDropped += 1
            return
        }
        if let hopLimit = hopLimit(ip), hopLimit <= 1, sendTimeExceeded(for: ip) { return }
        switch ip.transportProtocol {
        case .tcp: receiveTCP(ip, verify: verify, now: now)
        case .udp: receiveUDP(ip, verify: verify, now: now)
        case .icmp, .icmpv6: receiveICMP(ip, now: now)
        default: counters.unsupportedProtocol += 1
        }
    }

    private func hopLimit(_ ip: IPPacket) -> UInt8? {
        switch ip {
        case .v4(let packet): return packet.ttl
        case .v6(let packet): return packet.hopLimit
        }
    }

    private mutating func receiveTCP(_ ip: IPPacket, verify: Bool, now: StackInstant) {
        guard let segment = try? TCPSegment(validating: ip.transportPayload) else {
            counters.malformed += 1
            return
        }
        if verify, !segment.isChecksumValid(ip.pseudoHeader) {
            counters.badChecksums += 1
            return
        }
        counters.segmentsIn += 1
        let key = FlowKey(
            local: Endpoint(ip.destination, segment.destinationPort), remote: Endpoint(ip.source, segment.sourcePort))
        let flags = segment.flags
        if let slot = flows[key], let existing = slots[Int(slot)] {
            let isNewSYN = flags.contains(.syn) && !flags.contains(.ack)
            if existing.state == .timeWait, isNewSYN, existing.receiveNext < segment.sequenceNumber {
                // RFC 9293 §3.10.7.4 and RFC 6191: a new SYN beyond the old connection's sequence space may reopen it.
                free(slot)
            } else {
                update(slot) { connection, emitter, events in
                    connection.handle(segment, now: now, emitter: &emitter, events: &events)
                }
                return
            }
        }
        if flags.contains(.rst) { return }
        guard flags == .syn || flags == [.syn, .ece, .cwr] || flags == [.syn, .ece] else {
            // No connection (RFC 9293 §3.10.7.1): RST, unless it was one.
            counters.resetsForUnknownFlows += 1
            let reset: TCPHeader
            if flags.contains(.ack) {
                reset = TCPHeader(
                    sourcePort: key.local.port, destinationPort: key.remote.port,
                    sequenceNumber: segment.acknowledgementNumber,
                    flags: .rst, window: 0)
            } else {
                reset = TCPHeader(
                    sourcePort: key.local.port, destinationPort: key.remote.port, sequenceNumber: TCPSequenceNumber(0),
                    acknowledgementNumber: segment.sequenceNumber + UInt32(segment.sequenceLength),
                    flags: [.rst, .ack], window: 0)
            }
            emitter.tcp(key, reset)
            return
        }
        guard dialing.count < configuration.maximumPendingDials else {
            counters.synsDroppedPendingFull += 1
            return
        }
        let slot = allocateSlot()
        let id = FlowID(slot: slot, generation: generations[Int(slot)])
        slots[Int(slot)] = TCPConnection(
            id: id, key: key, syn: segment, configuration: configuration, initialSequence: random.next(),
            timestampOffset: random.next(), now: now)
        flows[key] = slot
        dialing.insert(slot)
        settle(slot)
        events.append(.dial(id, key))
    }

    private mutating func receiveUDP(_ ip: IPPacket, verify: Bool, now: StackInstant) {
        guard let datagram = try? UDPDatagram(validating: ip.transportPayload) else {
            counters.malformed += 1
            return
        }
        if verify, !datagram.isChecksumValid(ip.pseudoHeader) {
            counters.badChecksums += 1
            return
        }
        let key = FlowKey(
            local: Endpoint(ip.destination, datagram.destinationPort), remote: Endpoint(ip.source, datagram.sourcePort))
        if udpFlows[key] == nil, udpFlows.count >= configuration.maximumUDPFlows,
            let oldest = udpFlows.min(by: { $0.value < $1.value })?.key
        {
            udpFlows[oldest] = nil
            events.append(.udpFlowExpired(oldest))
        }
        udpFlows[key] = now
        if nextUDPSweep == nil { nextUDPSweep = now + configuration.udpIdleTimeout }
        counters.datagramsIn += 1
        events.append(.udpDatagram(key, datagram.payload))
    }

    private mutating func receiveICMP(_ ip: IPPacket, now: StackInstant) {
        switch ip {
        case .v4(let packet):
            guard
                let message = try? ICMPv4Message(parsing: packet.payload, verifyChecksum: configuration.verifyChecksums)
            else {
                counters.malformed += 1
                return
            }
            switch message {
            case .echoRequest(let echo):
                events.append(
                    .echoRequest(
                        EchoRequest(
                            source: .v4(packet.source), destination: .v4(packet.destination),
                            identifier: echo.identifier,
                            sequenceNumber: echo.sequenceNumber, data: echo.data)))
            case .destinationUnreachable(let code, let mtu, let original) where code == .fragmentationNeeded:
                pathMTU(quoted: .v4(original), mtu: Int(mtu), now: now)
            default:
                counters.icmpIgnored += 1
            }
        case .v6(let packet):
            let pseudo = configuration.verifyChecksums ? ip.pseudoHeader : nil
            guard let message = try? ICMPv6Message(parsing: packet.upperLayerPayload, pseudoHeader: pseudo) else {
                counters.malformed += 1
                return
            }
            switch message {
            case .echoRequest(let echo):
                events.append(
                    .echoRequest(
                        EchoRequest(
                            source: .v6(packet.source), destination: .v6(packet.destination),
                            identifier: echo.identifier,
                            sequenceNumber: echo.sequenceNumber, data: echo.data)))
            case .packetTooBig(let mtu, let original):
                pathMTU(quoted: .v6(original), mtu: Int(min(mtu, 65535)), now: now)
            default:
                counters.icmpIgnored += 1
            }
        }
    }

    /// A "too big" error quoting a segment we sent: shrink that flow's MSS.
    private mutating func pathMTU(quoted: IPPacket, mtu: Int, now: StackInstant) {
        guard quoted.transportProtocol == .tcp else { return }
        let transport = quoted.transportPayload
        guard let source = transport.getInteger(at: transport.readerIndex, as: UInt16.self),
            let destination = transport.getInteger(at: transport.readerIndex + 2, as: UInt16.self)
        else { return }
        // We sent it: its source is our local end.
        let key = FlowKey(
            local: Endpoint(quoted.source, PortNumber(source)),
            remote: Endpoint(quoted.destination, PortNumber(destination)))
        guard let slot = flows[key] else { return }
        counters.pathMTUUpdates += 1
        update(slot) { connection, emitter, _ in connection.pathMTUDropped(to: mtu, now: now, emitter: &emitter) }
    }

    /// A router's answer to a packet whose TTL ran out (RFC 792; RFC 4443 §3.3), from the configured router address.
    private mutating func sendTimeExceeded(for ip: IPPacket) -> Bool {
        switch ip {
        case .v4(let packet):
            guard let router = configuration.routerAddressV4 else { return false }
            // RFC 1812 §4.3.2.3: quote as much as fits in 576 bytes.
            let quoted = packet.buffer.getSlice(
                at: packet.buffer.readerIndex, length: min(packet.buffer.readableBytes, 576 - 28))
            guard let quoted, let original = try? IPv4Packet(validatingQuoted: quoted) else { return false }
            emitter.icmp(
                source: .v4(router), destination: .v4(packet.source), v4: .timeExceeded(code: 0, original: original),
                v6: nil)
        case .v6(let packet):
            guard let router = configuration.routerAddressV6 else { return false }
            let quoted = packet.buffer.getSlice(
                at: packet.buffer.readerIndex, length: min(packet.buffer.readableBytes, 1280 - 48))
            guard let quoted, let original = try? IPv6Packet(validatingQuoted: quoted) else { return false }
            emitter.icmp(
                source: .v6(router), destination: .v6(packet.source), v4: nil,
                v6: .timeExceeded(code: 0, original: original))
        }
        counters.timeExceededSent += 1
        return true
    }

    // MARK: - Dials

    /// The tunnel reached `flow`'s destination: complete the handshake with the client.
    public mutating func acceptDial(_ flow: FlowID, now: StackInstant) {
        guard connection(flow)?.state == .dialing else { return }
        dialing.remove(flow.slot)
        update(flow.slot) { connection, emitter, _ in connection.acceptDial(now: now, emitter: &emitter) }
    }

    /// The tunnel could not dial `flow`: tell the client (RST or ICMP, per ``StackConfiguration/refusal``).
    public mutating func refuseDial(_ flow: FlowID, reason: DialFailure, now: StackInstant) {
        guard let key = connection(flow)?.key, connection(flow)?.state == .dialing else { return }
        dialing.remove(flow.slot)
        let useICMP = configuration.refusal == .icmp || reason != .refused
        if useICMP { sendUnreachable(for: key, reason: reason) }
        update(flow.slot) { connection, emitter, events in
            connection.refuseDial(emitter: &emitter, sendReset: !useICMP)
            events.append(.closed(flow, .refused))
        }
    }

    /// ICMP destination unreachable for a SYN on `key`, quoting a reconstructed SYN header.
    private mutating func sendUnreachable(for key: FlowKey, reason: DialFailure) {
        var quoted = ByteBuffer()
        let header = TCPHeader(
            sourcePort: key.remote.port, destinationPort: key.local.port, sequenceNumber: TCPSequenceNumber(0),
            flags: .syn, window: 0)
        switch (key.remote.address, key.local.address) {
        case (.v4(let source), .v4(let destination)):
            IPv4Header(protocol: .tcp, source: source, destination: destination).emit(into: &quoted, payloadLength: 20)
            header.emit(
                into: &quoted, payload: ByteBuffer(), pseudoHeader: .v4(source: source, destination: destination))
            guard let original = try? IPv4Packet(validatingQuoted: quoted) else { return }
            let code: ICMPv4UnreachableCode = reason == .refused ? .port : .host
            emitter.icmp(
                source: key.local.address, destination: key.remote.address,
                v4: .destinationUnreachable(code: code, nextHopMTU: 0, original: original), v6: nil)
        case (.v6(let source), .v6(let destination)):
            IPv6Header(nextHeader: .tcp, source: source, destination: destination).emit(
                into: &quoted, payloadLength: 20)
            header.emit(
                into: &quoted, payload: ByteBuffer(), pseudoHeader: .v6(source: source, destination: destination))
            guard let original = try? IPv6Packet(validatingQuoted: quoted) else { return }
            // RFC 4443 §3.1: 4 port unreachable, 3 address unreachable.
            emitter.icmp(
                source: key.local.address, destination: key.remote.address, v4: nil,
                v6: .destinationUnreachable(code: reason == .refused ? 4 : 3, original: original))
        default:
            return
        }
    }

    // MARK: - Opening a connection

    /// Opens a TCP connection from `local` (port 0: an ephemeral one) to `remote`; `connected` or `closed` follows.
    public mutating func connect(from local: Endpoint, to remote: Endpoint, now: StackInstant) -> FlowID {
        var local = local
        if local.port.rawValue == 0 {
            repeat {
                local.port = PortNumber(UInt16(32768 + random.next() % 28232))  // Linux's ip_local_port_range
            } while flows[FlowKey(local: local, remote: remote)] != nil
        }
        let key = FlowKey(local: local, remote: remote)
        let slot = allocateSlot()
        let id = FlowID(slot: slot, generation: generations[Int(slot)])
        slots[Int(slot)] = TCPConnection(
            id: id, key: key, configuration: configuration, initialSequence: random.next(),
            timestampOffset: random.next(),
            now: now, emitter: &emitter)
        flows[key] = slot
        settle(slot)
        return id
    }

    // MARK: - Flow API

    /// Up to `maximum` bytes the client sent on `flow`, in order; nil when none are ready.
    public mutating func read(_ flow: FlowID, maximum: Int, now: StackInstant) -> ByteBuffer? {
        guard connection(flow) != nil else { return nil }
        return update(flow.slot) { connection, emitter, _ in
            connection.read(maximum: maximum, now: now, emitter: &emitter)
        } ?? nil
    }

    /// Queues bytes for the client; returns how many were taken. When fewer than offered, wait for `writable`.
    public mutating func write(_ flow: FlowID, _ bytes: ByteBuffer, now: StackInstant) -> Int {
        guard connection(flow) != nil else { return 0 }
        return update(flow.slot) { connection, emitter, _ in connection.write(bytes, now: now, emitter: &emitter) } ?? 0
    }

    /// Nothing more will be written to the client: FIN after the queued bytes.
    public mutating func shutdownWrite(_ flow: FlowID, now: StackInstant) {
        guard connection(flow) != nil else { return }
        update(flow.slot) { connection, emitter, _ in connection.shutdownWrite(now: now, emitter: &emitter) }
    }

    /// Resets the flow (the client sees ECONNRESET) and forgets it.
    public mutating func abort(_ flow: FlowID, now: StackInstant) {
        guard let state = connection(flow)?.state else { return }
        dialing.remove(flow.slot)
        let reported = state == .closed || state == .timeWait
        update(flow.slot) { connection, emitter, events in
            connection.abort(emitter: &emitter)
            if !reported { events.append(.closed(flow, .aborted)) }
        }
    }

    /// What a flow looks like now, or nil if it is gone.
    public func info(_ flow: FlowID) -> FlowInfo? {
        guard let connection = connection(flow) else { return nil }
        let negotiated = connection.negotiated
        return FlowInfo(
            key: connection.key, state: connection.state.description, readableBytes: connection.receiveQueue.readyCount,
            writableBytes: connection.writableBytes, unacknowledgedBytes: connection.sendQueue.count,
            sendMSS: negotiated.mss, peerWindowScale: negotiated.peerWindowScale,
            ourWindowScale: negotiated.ourWindowScale,
            sackPermitted: negotiated.sack, timestamps: negotiated.timestamps,
            congestionWindow: connection.congestion.window,
            smoothedRTT: connection.rtt.smoothed, retransmittedSegments: connection.retransmittedSegments,
            receiveBuffer: connection.receiveBuffer, closeReason: connection.closeReason)
    }

    /// Flows that exist now (any state but gone).
    public var flowCount: Int { flows.count }

    // MARK: - UDP and ICMP out

    /// Sends a datagram from `key.local` to `key.remote` (a reply on a flow the client opened).
    public mutating func sendUDP(_ payload: ByteBuffer, on key: FlowKey, now: StackInstant) {
        guard
            key.isIPv6
                ? payload.readableBytes + 48 <= configuration.mtu : payload.readableBytes + 28 <= configuration.mtu
        else {
            // Fragmenting replies is not implemented; DNS answers stay under the MTU (EDNS payload 1232).
            counters.datagramsTooBig += 1
            return
        }
        if udpFlows[key] != nil { udpFlows[key] = now }
        emitter.udp(key, payload: payload)
    }

    /// Tells the client nothing listens where its datagram went (ICMP port unreachable quoting it).
    public mutating func sendPortUnreachable(for key: FlowKey, payload: ByteBuffer) {
        var quoted = ByteBuffer()
        let udp = UDPHeader(sourcePort: key.remote.port, destinationPort: key.local.port)
        let cut = payload.getSlice(at: payload.readerIndex, length: min(payload.readableBytes, 512)) ?? ByteBuffer()
        switch (key.remote.address, key.local.address) {
        case (.v4(let source), .v4(let destination)):
            IPv4Header(protocol: .udp, source: source, destination: destination).emit(
                into: &quoted, payloadLength: 8 + cut.readableBytes)
            udp.emit(into: &quoted, payload: cut, pseudoHeader: .v4(source: source, destination: destination))
            guard let original = try? IPv4Packet(validatingQuoted: quoted) else { return }
            emitter.icmp(
                source: key.local.address, destination: key.remote.address,
                v4: .destinationUnreachable(code: .port, nextHopMTU: 0, original: original), v6: nil)
        case (.v6(let source), .v6(let destination)):
            IPv6Header(nextHeader: .udp, source: source, destination: destination).emit(
                into: &quoted, payloadLength: 8 + cut.readableBytes)
            udp.emit(into: &quoted, payload: cut, pseudoHeader: .v6(source: source, destination: destination))
            guard let original = try? IPv6Packet(validatingQuoted: quoted) else { return }
            emitter.icmp(
                source: key.local.address, destination: key.remote.address, v4: nil,
                v6: .destinationUnreachable(code: 4, original: original))
        default:
            return
        }
    }

    /// Answers an echo request on behalf of the pinged address, once the cluster side answered. `data` defaults to
    /// the request's.
    public mutating func sendEchoReply(to request: EchoRequest, data: ByteBuffer? = nil) {
        let echo = ICMPEcho(
            identifier: request.identifier, sequenceNumber: request.sequenceNumber, data: data ?? request.data)
        emitter.icmp(
            source: request.destination, destination: request.source, v4: .echoReply(echo), v6: .echoReply(echo))
    }

    // MARK: - Time

    /// When ``advance(to:)`` must next be called, or nil if no timer runs.
    public var nextDeadline: StackInstant? {
        mutating get {
            while let top = timers.first, !isCurrent(top) { _ = timers.pop() }
            let tcp = timers.first?.deadline
            switch (tcp, nextUDPSweep) {
            case (let a?, let b?): return min(a, b)
            case (let a?, nil): return a
            case (nil, let b?): return b
            case (nil, nil): return nil
            }
        }
    }

    private func isCurrent(_ entry: TimerHeap.Entry) -> Bool {
        let slot = Int(entry.slot)
        return generations[slot] == entry.generation && scheduled[slot] == entry.deadline
    }

    /// Fires every timer due at `now`.
    public mutating func advance(to now: StackInstant) {
        while let top = timers.first, !(now < top.deadline) {
            _ = timers.pop()
            guard isCurrent(top) else { continue }
            let index = Int(top.slot)
            scheduled[index] = nil
            guard slots[index] != nil else { continue }
            // The entry may be older than the connection's current deadline (see `settle`): only fire what is due.
            if let actual = slots[index]!.nextDeadline, now < actual {
                settle(top.slot)
                continue
            }
            update(top.slot) { connection, emitter, events in
                connection.fireTimers(now: now, emitter: &emitter, events: &events)
            }
        }
        if let sweep = nextUDPSweep, !(now < sweep) {
            var earliest: StackInstant?
            for (key, last) in udpFlows {
                if !(now < last + configuration.udpIdleTimeout) {
                    udpFlows[key] = nil
                    events.append(.udpFlowExpired(key))
                } else {
                    earliest = min(earliest ?? last, last)
                }
            }
            nextUDPSweep = earliest.map { $0 + configuration.udpIdleTimeout }
        }
    }

    // MARK: - Output and events

    /// The packets to write to the TUN since the last call.
    public mutating func takeOutput() -> [OutputPacket] {
        let packets = emitter.packets
        emitter.packets.removeAll(keepingCapacity: true)
        counters.packetsOut += packets.count
        return packets
    }

    /// Gives written packets' buffers back for reuse.
    public mutating func recycle(_ packets: [OutputPacket]) {
        for packet in packets { emitter.pool.recycle(packet.bytes) }
    }

    /// Drops the buffers kept for reuse (up to 256 of 70 KiB): for an idle engine, which then gives the memory back.
    public mutating func releaseSpareBuffers() {
        emitter.pool = PacketBufferPool()
    }

    /// What happened since the last call.
    public mutating func takeEvents() -> [StackEvent] {
        let taken = events
        events.removeAll(keepingCapacity: true)
        return taken
    }

    // MARK: - Slots

    private func connection(_ flow: FlowID) -> TCPConnection? {
        let slot = Int(flow.slot)
        guard slot < slots.count, generations[slot] == flow.generation else { return nil }
        return slots[slot]
    }

    private mutating func allocateSlot() -> UInt32 {
        if let slot = freeSlots.popLast() { return slot }
        slots.append(nil)
        generations.append(0)
        scheduled.append(nil)
        return UInt32(slots.count - 1)
    }

    /// Runs `body` on the connection in `slot` in place, then settles it. In place matters: a copy taken out of the
    /// array and written back would make every buffer inside the connection copy itself on its next change, which
    /// was several heap allocations per packet.
    @discardableResult
    private mutating func update<Result>(
        _ slot: UInt32, _ body: (inout TCPConnection, inout Emitter, inout [StackEvent]) -> Result
    ) -> Result? {
        let index = Int(slot)
        guard slots[index] != nil else { return nil }
        let result = body(&slots[index]!, &emitter, &events)
        settle(slot)
        return result
    }

    /// After a connection changed: frees it when finished, and makes sure the heap holds an entry no later than its
    /// next deadline. Later deadlines are not pushed (the earlier entry fires, finds nothing due, and re-settles), so
    /// a deadline that moves on every ACK costs no heap traffic.
    private mutating func settle(_ slot: UInt32) {
        let index = Int(slot)
        guard slots[index] != nil else { return }
        if slots[index]!.isFinished {
            free(slot)
            return
        }
        if slots[index]!.state != .dialing, !dialing.isEmpty { dialing.remove(slot) }
        guard let deadline = slots[index]!.nextDeadline else { return }
        if let current = scheduled[index], !(deadline < current) { return }
        scheduled[index] = deadline
        timers.push(TimerHeap.Entry(deadline: deadline, slot: slot, generation: generations[index]))
    }

    private mutating func free(_ slot: UInt32) {
        if let connection = slots[Int(slot)] { flows[connection.key] = nil }
        slots[Int(slot)] = nil
        dialing.remove(slot)
        scheduled[Int(slot)] = nil
        generations[Int(slot)] &+= 1
        freeSlots.append(slot)
    }
}

/// A flow's state for tests, `ktctl status` and `ss`-like reports.
public struct FlowInfo: Sendable {
    public var key: FlowKey
    public var state: String
    public var readableBytes: Int
    public var writableBytes: Int
    public var unacknowledgedBytes: Int
    public var sendMSS: Int
    public var peerWindowScale: UInt8
    public var ourWindowScale: UInt8
    public var sackPermitted: Bool
    public var timestamps: Bool
    public var congestionWindow: Int
    public var smoothedRTT: StackDuration?
    public var retransmittedSegments: Int
    public var receiveBuffer: Int
    public var closeReason: FlowCloseReason?
}

/// What the stack saw and did, for `--debug` and tests.
public struct StackCounters: Sendable, Hashable {
    public init() {}

    public var packetsIn = 0
    public var packetsOut = 0
    public var segmentsIn = 0
    public var datagramsIn = 0
    public var malformed = 0
    public var badChecksums = 0
    public var fragmentsDropped = 0
    public var unsupportedProtocol = 0
    public var resetsForUnknownFlows = 0
    public var synsDroppedPendingFull = 0
    public var icmpIgnored = 0
    public var pathMTUUpdates = 0
    public var timeExceededSent = 0
    public var datagramsTooBig = 0
}
