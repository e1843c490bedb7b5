import NIOCore

/// An IPv4 or IPv6 packet, told apart by its version nibble: what a TUN device hands over.
public enum IPPacket: Hashable, Sendable {
    case v4(IPv4Packet)
    case v6(IPv6Packet)

    /// Validates the readable bytes of `buffer` as an IPv4 or IPv6 packet.
    public init(validating buffer: ByteBuffer, verifyChecksum: Bool = true) throws(WireError) {
        guard let first = buffer.getInteger(at: buffer.readerIndex, as: UInt8.self) else {
            throw WireError(.truncated, "IP.version", "empty packet")
        }
        switch first >> 4 {
        case 4: self = .v4(try IPv4Packet(validating: buffer, verifyChecksum: verifyChecksum))
        case 6: self = .v6(try IPv6Packet(validating: buffer))
        default: throw WireError(.invalidValue, "IP.version", "\(first >> 4)")
        }
    }

    /// The source address.
    public var source: IPAddress {
        switch self {
        case .v4(let packet): return .v4(packet.source)
        case .v6(let packet): return .v6(packet.source)
        }
    }

    /// The destination address.
    public var destination: IPAddress {
        switch self {
        case .v4(let packet): return .v4(packet.destination)
        case .v6(let packet): return .v6(packet.destination)
        }
    }

    /// The protocol of the transport payload (after any IPv6 extension headers).
    public var transportProtocol: IPProtocol {
        switch self {
        case .v4(let packet): return packet.protocol
        case .v6(let packet): return packet.upperLayerProtocol
        }
    }

    /// The transport payload: the TCP, UDP or ICMP message.
    public var transportPayload: ByteBuffer {
        switch self {
        case .v4(let packet): return packet.payload
        case .v6(let packet): return packet.upperLayerPayload
        }
    }

    /// True for a fragment; its transport payload is not a whole message.
    public var isFragment: Bool {
        switch self {
        case .v4(let packet): return packet.isFragment
        case .v6(let packet): return packet.isFragment
        }
    }

    /// The pseudo-header for the transport checksum.
    public var pseudoHeader: IPPseudoHeader {
        switch self {
        case .v4(let packet): return .v4(source: packet.source, destination: packet.destination)
        case .v6(let packet): return .v6(source: packet.source, destination: packet.destination)
        }
    }
}
