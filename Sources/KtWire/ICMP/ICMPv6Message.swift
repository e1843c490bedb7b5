import NIOCore

/// An ICMPv6 message (RFC 4443), decoded. Errors carry the quoted original packet, already validated.
public enum ICMPv6Message: Hashable, Sendable {
    /// Type 1; code 4 is port unreachable.
    case destinationUnreachable(code: UInt8, original: IPv6Packet)
    /// Type 2, with the MTU of the next hop (RFC 8201).
    case packetTooBig(mtu: UInt32, original: IPv6Packet)
    /// Type 3; code 0 is hop limit exceeded in transit.
    case timeExceeded(code: UInt8, original: IPv6Packet)
    /// Type 4, with the offset of the offending byte.
    case parameterProblem(code: UInt8, pointer: UInt32, original: IPv6Packet)
    case echoRequest(ICMPEcho)
    case echoReply(ICMPEcho)
    /// Any other type (neighbour discovery, MLD, …), kept whole.
    case other(type: UInt8, code: UInt8, restOfHeader: UInt32, body: ByteBuffer)

    /// The fixed part: type, code, checksum and four bytes that depend on the type.
    public static let headerLength = 8

    // MARK: - Parse

    /// Decodes `buffer`'s readable bytes as an ICMPv6 message. The checksum covers the IPv6 pseudo-header, so
    /// it is checked only when `pseudoHeader` is given.
    public init(parsing buffer: ByteBuffer, pseudoHeader: IPPseudoHeader? = nil) throws(WireError) {
        guard buffer.readableBytes >= Self.headerLength else {
            throw WireError(.truncated, "ICMPv6.header", "\(buffer.readableBytes) bytes, need 8")
        }
        if let pseudoHeader {
            var sum = InternetChecksum()
            pseudoHeader.add(to: &sum, protocol: .icmpv6, length: buffer.readableBytes)
            sum.add(buffer)
            guard sum.isValid else {
                throw WireError(
                    .badChecksum, "ICMPv6.checksum",
                    "0x" + String(buffer.checkedInteger(at: 2, as: UInt16.self), radix: 16))
            }
        }
        let type: UInt8 = buffer.checkedInteger(at: 0)
        let code: UInt8 = buffer.checkedInteger(at: 1)
        let rest: UInt32 = buffer.checkedInteger(at: 4)
        let body = buffer.checkedSlice(at: 8, length: buffer.readableBytes - 8)
        switch type {
        case 1:
            self = .destinationUnreachable(
                code: code, original: try Self.quoted(body, "ICMPv6.destinationUnreachable.original"))
        case 2:
            self = .packetTooBig(mtu: rest, original: try Self.quoted(body, "ICMPv6.packetTooBig.original"))
        case 3:
            self = .timeExceeded(code: code, original: try Self.quoted(body, "ICMPv6.timeExceeded.original"))
        case 4:
            self = .parameterProblem(
                code: code, pointer: rest, original: try Self.quoted(body, "ICMPv6.parameterProblem.original"))
        case 128, 129:
            let echo = ICMPEcho(
                identifier: UInt16(truncatingIfNeeded: rest >> 16), sequenceNumber: UInt16(truncatingIfNeeded: rest),
                data: body)
            self = type == 128 ? .echoRequest(echo) : .echoReply(echo)
        default:
            self = .other(type: type, code: code, restOfHeader: rest, body: body)
        }
    }

    private static func quoted(_ body: ByteBuffer, _ field: String) throws(WireError) -> IPv6Packet {
        do {
            return try IPv6Packet(validatingQuoted: body)
        } catch {
            throw WireError(error.kind, field, error.description)
        }
    }

    // MARK: - Emit

    /// The type number.
    public var type: UInt8 {
        switch self {
        case .destinationUnreachable: return 1
        case .packetTooBig: return 2
        case .timeExceeded: return 3
        case .parameterProblem: return 4
        case .echoRequest: return 128
        case .echoReply: return 129
        case .other(let type, _, _, _): return type
        }
    }

    private var parts: (code: UInt8, rest: UInt32, body: ByteBuffer) {
        switch self {
        case .destinationUnreachable(let code, let original): return (code, 0, original.buffer)
        case .packetTooBig(let mtu, let original): return (0, mtu, original.buffer)
        case .timeExceeded(let code, let original): return (code, 0, original.buffer)
        case .parameterProblem(let code, let pointer, let original): return (code, pointer, original.buffer)
        case .echoRequest(let echo), .echoReply(let echo):
            return (0, UInt32(echo.identifier) << 16 | UInt32(echo.sequenceNumber), echo.data)
        case .other(_, let code, let rest, let body): return (code, rest, body)
        }
    }

    /// The encoded size in bytes.
    public var encodedLength: Int { Self.headerLength + parts.body.readableBytes }

    /// Writes exactly ``encodedLength`` bytes with the checksum computed for `pseudoHeader`.
    public func emit(into buffer: inout ByteBuffer, pseudoHeader: IPPseudoHeader) {
        let start = buffer.writerIndex
        var (code, rest, body) = parts
        buffer.writeInteger(type)
        buffer.writeInteger(code)
        buffer.writeInteger(UInt16(0))
        buffer.writeInteger(rest)
        buffer.writeBuffer(&body)
        var checksum = InternetChecksum()
        pseudoHeader.add(to: &checksum, protocol: .icmpv6, length: buffer.writerIndex - start)
        checksum.add(buffer, at: start, length: buffer.writerIndex - start)
        buffer.setInteger(checksum.value, at: start + 2)
    }
}
