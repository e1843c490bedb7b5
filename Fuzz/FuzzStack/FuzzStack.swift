import KtStack
import KtWire
import NIOCore

/// Random segment sequences, timer jumps and application calls against one flow, starting from a state chosen by
/// the first byte. The stack must never trap (its preconditions are its invariants), everything it emits must be a
/// valid packet, and a flow's readable bytes must never exceed its receive buffer.
func fuzzStack(_ data: UnsafePointer<UInt8>?, _ count: Int) -> CInt {
    guard let data, count > 1 else { return 0 }
    var input = ByteBuffer(bytes: UnsafeRawBufferPointer(start: data, count: count))
    var random = SplitMix(state: 0x5EED)
    var configuration = StackConfiguration()
    configuration.initialReceiveBuffer = 16384
    configuration.maximumReceiveBuffer = 65536
    configuration.sendBufferLimit = 65536
    configuration.verifyChecksums = false
    guard let setup = input.readInteger(as: UInt8.self) else { return 0 }
    configuration.congestionControl = setup & 1 == 0 ? .cubic : .newReno
    var stack = NetworkStack(configuration: configuration, random: random)
    let client = Endpoint(.v4(IPv4Address(10, 0, 0, 1)), 40000)
    let server = Endpoint(.v4(IPv4Address(10, 96, 0, 15)), 80)
    var now = StackInstant(nanoseconds: 1_000_000_000)
    var clientSequence = TCPSequenceNumber(1000)
    var serverSequence = TCPSequenceNumber(0)
    var flow: FlowID?

    func segment(
        _ flags: TCPFlags, _ sequence: TCPSequenceNumber, _ ack: TCPSequenceNumber, _ payload: Int, _ window: UInt16,
        _ options: TCPOptions
    ) -> ByteBuffer {
        let header = TCPHeader(
            sourcePort: client.port, destinationPort: server.port, sequenceNumber: sequence, acknowledgementNumber: ack,
            flags: flags, window: window, options: options)
        var packet = ByteBuffer()
        IPv4Header(protocol: .tcp, source: IPv4Address(10, 0, 0, 1), destination: IPv4Address(10, 96, 0, 15))
            .emit(into: &packet, payloadLength: header.headerLength + payload)
        header.emit(
            into: &packet, payload: ByteBuffer(repeating: 0x61, count: payload),
            pseudoHeader: .v4(source: IPv4Address(10, 0, 0, 1), destination: IPv4Address(10, 96, 0, 15)))
        return packet
    }

    func drain() {
        let output = stack.takeOutput()
        for packet in output {
            guard let ip = try? IPPacket(validating: packet.bytes),
                ip.source == .v4(IPv4Address(10, 96, 0, 15)) || ip.transportProtocol != .tcp
            else { preconditionFailure("the stack emitted an invalid packet") }
            if ip.transportProtocol == .tcp {
                guard let tcp = try? TCPSegment(validating: ip.transportPayload) else {
                    preconditionFailure("invalid TCP emitted")
                }
                if tcp.flags.contains(.syn) { serverSequence = tcp.sequenceNumber + UInt32(1) }
            }
        }
        stack.recycle(output)
        for event in stack.takeEvents() {
            if case .dial(let id, _) = event { flow = id }
        }
    }

    // Start: a SYN with options from the setup byte; accept the dial unless told not to; maybe complete the handshake.
    let synOptions = TCPOptions(
        maximumSegmentSize: setup & 2 == 0 ? 1460 : 536, windowScale: setup & 4 == 0 ? 7 : nil,
        sackPermitted: setup & 8 == 0,
        timestamps: setup & 16 == 0 ? TCPTimestamps(value: 1, echoReply: 0) : nil)
    stack.receive(segment(.syn, clientSequence, TCPSequenceNumber(0), 0, 65535, synOptions), now: now)
    drain()
    guard let id = flow else { return 0 }
    if setup & 32 == 0 { stack.acceptDial(id, now: now) }
    drain()
    clientSequence = clientSequence + UInt32(1)
    if setup & 64 == 0 {
        stack.receive(segment(.ack, clientSequence, serverSequence, 0, 65535, TCPOptions()), now: now)
        drain()
    }

    // Then: operations until the input runs out.
    while let op = input.readInteger(as: UInt8.self) {
        switch op % 8 {
        case 0, 1, 2:
            guard let flags = input.readInteger(as: UInt8.self), let seqDelta = input.readInteger(as: Int16.self),
                let ackDelta = input.readInteger(as: Int16.self), let length = input.readInteger(as: UInt8.self),
                let window = input.readInteger(as: UInt16.self), let optionByte = input.readInteger(as: UInt8.self)
            else { break }
            var options = TCPOptions()
            if optionByte & 1 != 0 {
                options.timestamps = TCPTimestamps(
                    value: UInt32(optionByte), echoReply: UInt32(now.nanoseconds / 1_000_000))
            }
            if optionByte & 2 != 0 {
                let left = serverSequence + UInt32(Int(optionByte) * 97)
                options.sackBlocks = [TCPSACKBlock(left: left, right: left + UInt32(Int(length) * 13 + 1))]
            }
            let sequence = clientSequence + UInt32(bitPattern: Int32(seqDelta))
            let ack = serverSequence + UInt32(bitPattern: Int32(ackDelta))
            let packet = segment(TCPFlags(rawValue: flags), sequence, ack, Int(length) * 8, window, options)
            stack.receive(packet, now: now)
            if seqDelta == 0, flags & TCPFlags.syn.rawValue == 0 {
                clientSequence = clientSequence + UInt32(Int(length) * 8)
            }
        case 3:
            guard let step = input.readInteger(as: UInt16.self) else { break }
            now = now + .microseconds(UInt64(step) * 100)
            stack.advance(to: now)
        case 4:
            guard let size = input.readInteger(as: UInt16.self) else { break }
            _ = stack.write(id, ByteBuffer(repeating: 0x62, count: Int(size)), now: now)
        case 5:
            if let bytes = stack.read(id, maximum: Int(op) * 64, now: now) {
                precondition(bytes.readableBytes <= Int(op) * 64, "read returned more than asked")
            }
        case 6:
            op & 16 == 0 ? stack.shutdownWrite(id, now: now) : stack.abort(id, now: now)
        default:
            if let info = stack.info(id) {
                precondition(
                    info.readableBytes <= configuration.maximumReceiveBuffer,
                    "more buffered than the receive buffer allows")
            }
        }
        drain()
        _ = stack.nextDeadline
    }
    _ = random.next()
    return 0
}

/// A tiny seeded generator for the stack's ISNs.
struct SplitMix: RandomNumberGenerator {
    var state: UInt64
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
