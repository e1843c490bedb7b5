import KtWire
import NIOCore

/// One datagram on kt-shadow's datagram channel: a `session` channel opened with `exec kt-udp`, carrying UDP
/// datagrams and ICMP echoes for many flows at once.
///
/// One channel for all flows (not one per flow): an SSH channel open costs a round trip and a few hundred bytes of
/// state on both sides, while a DNS query is one datagram; a flow id in each frame keeps the flows apart.
///
/// Wire form, big-endian:
///
///     u16 length of everything after this field
///     u8  kind: 0 UDP, 1 ICMP echo, 2 flow closed
///     u32 flow id (chosen by the client; the shadow keeps one socket per flow)
///     u8  family: 4, 6, or 0 for "the pod's nameserver" (its resolv.conf)
///     4 or 16 bytes of address (none for family 0)
///     u16 port (the remote end's; for family 0 ignored, 53 is used)
///     payload: the UDP payload, or the ICMP echo's identifier, sequence number and data
public struct DatagramFrame: Hashable, Sendable {
    public enum Kind: UInt8, Sendable {
        case udp = 0
        case echo = 1
        case closed = 2
    }

    public enum Address: Hashable, Sendable {
        case v4(IPv4Address)
        case v6(IPv6Address)
        /// The shadow pod's own nameserver.
        case nameserver
    }

    public var kind: Kind
    public var flow: UInt32
    public var address: Address
    public var port: UInt16
    public var payload: ByteBuffer

    public init(kind: Kind, flow: UInt32, address: Address, port: UInt16, payload: ByteBuffer) {
        self.kind = kind
        self.flow = flow
        self.address = address
        self.port = port
        self.payload = payload
    }

    /// The largest frame: the length field is 16 bits.
    public static let maximumLength = 65535

    private var addressLength: Int {
        switch address {
        case .v4: return 4
        case .v6: return 16
        case .nameserver: return 0
        }
    }

    /// Bytes after the length field.
    public var encodedLength: Int { 1 + 4 + 1 + addressLength + 2 + payload.readableBytes }

    /// Appends the frame; false (nothing written) when it would exceed ``maximumLength``.
    @discardableResult
    public func encode(into buffer: inout ByteBuffer) -> Bool {
        guard encodedLength <= Self.maximumLength else { return false }
        buffer.writeInteger(UInt16(encodedLength))
        buffer.writeInteger(kind.rawValue)
        buffer.writeInteger(flow)
        switch address {
        case .v4(let v4):
            buffer.writeInteger(UInt8(4))
            buffer.writeInteger(v4.bits)
        case .v6(let v6):
            buffer.writeInteger(UInt8(6))
            buffer.writeInteger(UInt64(truncatingIfNeeded: v6.bits >> 64))
            buffer.writeInteger(UInt64(truncatingIfNeeded: v6.bits))
        case .nameserver:
            buffer.writeInteger(UInt8(0))
        }
        buffer.writeInteger(port)
        buffer.writeImmutableBuffer(payload)
        return true
    }

    /// Takes one frame from the front of `buffer`: nil when it is not all there yet; throws (and takes nothing) when
    /// the frame is malformed, which ends the channel.
    public static func decode(from buffer: inout ByteBuffer) throws(WireError) -> DatagramFrame? {
        guard let length = buffer.getInteger(at: buffer.readerIndex, as: UInt16.self) else { return nil }
        guard buffer.readableBytes >= 2 + Int(length) else { return nil }
        guard length >= 8 else { throw WireError(.invalidValue, "DatagramFrame.length", "\(length)") }
        var frame = buffer.getSlice(at: buffer.readerIndex + 2, length: Int(length)) ?? ByteBuffer()
        guard let kindByte = frame.readInteger(as: UInt8.self), let kind = Kind(rawValue: kindByte) else {
            throw WireError(.invalidValue, "DatagramFrame.kind")
        }
        guard let flow = frame.readInteger(as: UInt32.self), let family = frame.readInteger(as: UInt8.self) else {
            throw WireError(.truncated, "DatagramFrame.flow")
        }
        let address: Address
        switch family {
        case 4:
            guard let bits = frame.readInteger(as: UInt32.self) else {
                throw WireError(.truncated, "DatagramFrame.address")
            }
            address = .v4(IPv4Address(bits: bits))
        case 6:
            guard let high = frame.readInteger(as: UInt64.self), let low = frame.readInteger(as: UInt64.self) else {
                throw WireError(.truncated, "DatagramFrame.address")
            }
            address = .v6(IPv6Address(bits: UInt128(high) << 64 | UInt128(low)))
        case 0:
            address = .nameserver
        default:
            throw WireError(.invalidValue, "DatagramFrame.family", "\(family)")
        }
        guard let port = frame.readInteger(as: UInt16.self) else { throw WireError(.truncated, "DatagramFrame.port") }
        buffer.moveReaderIndex(forwardBy: 2 + Int(length))
        return DatagramFrame(kind: kind, flow: flow, address: address, port: port, payload: frame)
    }
}
