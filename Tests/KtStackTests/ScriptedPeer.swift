import KtStack
import KtWire
import NIOCore

/// A hand-driven TCP client facing a stack, as the kernel would be: it builds segments from `client` to `server`
/// and reads what the stack sends back. Unit tests use it to put a flow in a given state and poke it.
struct ScriptedPeer {
    var stack: NetworkStack
    let client: Endpoint
    let server: Endpoint
    var now = StackInstant(nanoseconds: 5_000_000_000)
    var flow: FlowID?
    /// The flow of the last event, when that event asked for a dial.
    var lastDial: FlowID? {
        if case .dial(let flow, _)? = events.last { return flow }
        return nil
    }
    var events: [StackEvent] = []
    /// The client's next sequence number and what it acknowledges.
    var sequence = TCPSequenceNumber(1000)
    var acknowledgement = TCPSequenceNumber(0)
    var timestampValue: UInt32 = 100

    init(configuration: StackConfiguration = StackConfiguration(), v6: Bool = false, seed: UInt64 = 7) {
        stack = NetworkStack(configuration: configuration, random: SeededGenerator(seed: seed))
        if v6 {
            client = Endpoint(.v6(IPv6Address(bits: 0xFD00 << 112 | 1)), 40000)
            server = Endpoint(.v6(IPv6Address(bits: 0xFD00_0096 << 96 | 0x15)), 80)
        } else {
            client = Endpoint(.v4(IPv4Address(10, 0, 0, 1)), 40000)
            server = Endpoint(.v4(IPv4Address(10, 96, 0, 15)), 80)
        }
    }

    /// Builds a segment from the client.
    func segment(
        _ flags: TCPFlags, sequence: TCPSequenceNumber? = nil, acknowledgement: TCPSequenceNumber? = nil,
        payload: [UInt8] = [],
        window: UInt16 = 65535, options: TCPOptions? = nil
    ) -> ByteBuffer {
        var options = options ?? TCPOptions()
        if options.timestamps == nil, !flags.contains(.syn) || options.maximumSegmentSize == nil {
            options.timestamps = TCPTimestamps(value: timestampValue, echoReply: 0)
        }
        let header = TCPHeader(
            sourcePort: client.port, destinationPort: server.port, sequenceNumber: sequence ?? self.sequence,
            acknowledgementNumber: flags.contains(.ack)
                ? acknowledgement ?? self.acknowledgement : TCPSequenceNumber(0),
            flags: flags, window: window, options: options)
        var packet = ByteBuffer()
        let length = header.headerLength + payload.count
        switch (client.address, server.address) {
        case (.v4(let source), .v4(let destination)):
            IPv4Header(protocol: .tcp, source: source, destination: destination).emit(
                into: &packet, payloadLength: length)
            header.emit(
                into: &packet, payload: ByteBuffer(bytes: payload),
                pseudoHeader: .v4(source: source, destination: destination))
        case (.v6(let source), .v6(let destination)):
            IPv6Header(nextHeader: .tcp, source: source, destination: destination).emit(
                into: &packet, payloadLength: length)
            header.emit(
                into: &packet, payload: ByteBuffer(bytes: payload),
                pseudoHeader: .v6(source: source, destination: destination))
        default:
            preconditionFailure()
        }
        return packet
    }

    /// Sends a segment to the stack and returns the TCP segments it answered with.
    @discardableResult
    mutating func send(_ packet: ByteBuffer) -> [TCPSegment] {
        stack.receive([packet], now: now)
        return collect()
    }

    /// What the stack sent since the last call, as TCP segments (other packets are dropped).
    mutating func collect() -> [TCPSegment] {
        let output = stack.takeOutput()
        events += stack.takeEvents()
        let segments = output.compactMap { packet -> TCPSegment? in
            // Copy: the stack reuses the buffer after recycle.
            let bytes = ByteBuffer(bytes: packet.bytes.readableBytesView)
            guard let ip = try? IPPacket(validating: bytes), ip.transportProtocol == .tcp,
                let tcp = try? TCPSegment(validating: ip.transportPayload)
            else { return nil }
            return tcp
        }
        stack.recycle(output)
        return segments
    }

    /// All packets the stack sent, raw.
    mutating func collectPackets() -> [ByteBuffer] {
        let output = stack.takeOutput()
        events += stack.takeEvents()
        let packets = output.map { ByteBuffer(bytes: $0.bytes.readableBytesView) }
        stack.recycle(output)
        return packets
    }

    /// Moves the clock and fires timers.
    @discardableResult
    mutating func advance(by duration: StackDuration) -> [TCPSegment] {
        now = now + duration
        stack.advance(to: now)
        return collect()
    }

    /// SYN, dial accepted, SYN-ACK, ACK: an ESTABLISHED flow with the usual Linux options.
    mutating func establish(
        options: TCPOptions = TCPOptions(maximumSegmentSize: 1460, windowScale: 7, sackPermitted: true)
    ) -> TCPSegment {
        var synOptions = options
        synOptions.timestamps = TCPTimestamps(value: timestampValue, echoReply: 0)
        send(segment(.syn, options: synOptions))
        guard case .dial(let id, _)? = events.last else { preconditionFailure("no dial event for the SYN") }
        flow = id
        stack.acceptDial(id, now: now)
        let synAck = collect()[0]
        sequence = sequence + UInt32(1)
        acknowledgement = synAck.sequenceNumber + UInt32(1)
        send(segment(.ack))
        return synAck
    }
}
