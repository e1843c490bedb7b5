import NIOCore

/// The identifier, sequence number and data of an echo request or reply (RFC 792, RFC 4443 §4).
public struct ICMPEcho: Hashable, Sendable {
    public var identifier: UInt16
    public var sequenceNumber: UInt16
    public var data: ByteBuffer

    public init(identifier: UInt16, sequenceNumber: UInt16, data: ByteBuffer) {
        self.identifier = identifier
        self.sequenceNumber = sequenceNumber
        self.data = data
    }
}

/// An ICMPv4 message (RFC 792), decoded. Errors carry the quoted original packet, already validated.
public enum ICMPv4Message: Hashable, Sendable {
    case echoRequest(ICMPEcho)
    case echoReply(ICMPEcho)
    /// Type 3. For code 4 (fragmentation needed) `nextHopMTU` is the MTU the router could forward (RFC 1191).
    case destinationUnreachable(code: ICMPv4UnreachableCode, nextHopMTU: UInt16, original: IPv4Packet)
    /// Type 11; code 0 is TTL exceeded in transit, 1 fragment reassembly time exceeded.
    case timeExceeded(code: UInt8, original: IPv4Packet)
    /// Any other type, kept whole.
    case other(type: UInt8, code: UInt8, restOfHeader: UInt32, body: ByteBuffer)

    /// The fixed part: type, code, checksum and four bytes that depend on the type.
    public static let headerLength = 8

    // MARK: - Parse

    /// Decodes `buffer`'s readable bytes as an ICMPv4 message.
    ///
    /// - Parameter verifyChecksum: also check the checksum over the whole message.
    public init(parsing buffer: ByteBuffer, verifyChecksum: Bool = true) throws(WireError) {
        guard buffer.readableBytes >= Self.headerLength else {
            throw WireError(.truncated, "ICMPv4.header", "\(buffer.readableBytes) bytes, need 8")
        }
        if verifyChecksum {
            var sum = InternetChecksum()
            sum.add(buffer)
            guard sum.isValid else {
                throw WireError(
                    .badChecksum, "ICMPv4.checksum",
                    "0x" + String(buffer.checkedInteger(at: 2, as: UInt16.self), radix: 16))
            }
        }
        let type: UInt8 = buffer.checkedInteger(at: 0)
        let code: UInt8 = buffer.checkedInteger(at: 1)
        let rest: UInt32 = buffer.checkedInteger(at: 4)
        let body = buffer.checkedSlice(at: 8, length: buffer.readableBytes - 8)
        switch type {
        case 0, 8:
            let echo = ICMPEcho(
                identifier: UInt16(truncatingIfNeeded: rest >> 16), sequenceNumber: UInt16(truncatingIfNeeded: rest),
                data: body)
            self = type == 8 ? .echoRequest(echo) : .echoReply(echo)
        case 3:
            let original = try Self.quoted(body, "ICMPv4.destinationUnreachable.original")
            self = .destinationUnreachable(
                code: ICMPv4UnreachableCode(rawValue: code), nextHopMTU: UInt16(truncatingIfNeeded: rest),
                original: original)
        case 11:
            self = .timeExceeded(code: code, original: try Self.quoted(body, "ICMPv4.timeExceeded.original"))
        default:
            self = .other(type: type, code: code, restOfHeader: rest, body: body)
        }
    }

    private static func quoted(_ body: ByteBuffer, _ field: String) throws(WireError) -> IPv4Packet {
        do {
            return try IPv4Packet(validatingQuoted: body)
        } catch {
            throw WireError(error.kind, field, error.description)
        }
    }

    // MARK: - Emit

    /// The type number.
    public var type: UInt8 {
        switch self {
        case .echoRequest: return 8
        case .echoReply: return 0
        case .destinationUnreachable: return 3
        case .timeExceeded: return 11
        case .other(let type, _, _, _): return type
        }
    }

    /// The encoded size in bytes.
    public var encodedLength: Int {
        switch self {
        case .echoRequest(let echo), .echoReply(let echo): return 8 + echo.data.readableBytes
        case .destinationUnreachable(_, _, let original), .timeExceeded(_, let original):
            return 8 + original.buffer.readableBytes
        case .other(_, _, _, let body): return 8 + body.readableBytes
        }
    }

    /// Writes exactly ``encodedLength`` bytes, checksum included.
    public func emit(into buffer: inout ByteBuffer) {
        let start = buffer.writerIndex
        var body: ByteBuffer
        let code: UInt8
        let rest: UInt32
        switch self {
        case .echoRequest(let echo), .echoReply(let echo):
            code = 0
            rest = UInt32(echo.identifier) << 16 | UInt32(echo.sequenceNumber)
            body = echo.data
        case .destinationUnreachable(let unreachable, let mtu, let original):
            code = unreachable.rawValue
            rest = UInt32(mtu)
            body = original.buffer
        case .timeExceeded(let timeCode, let original):
            code = timeCode
            rest = 0
            body = original.buffer
        case .other(_, let otherCode, let otherRest, let otherBody):
            code = otherCode
            rest = otherRest
            body = otherBody
        }
        buffer.writeInteger(type)
        buffer.writeInteger(code)
        buffer.writeInteger(UInt16(0))
        buffer.writeInteger(rest)
        buffer.writeBuffer(&body)
        var checksum = InternetChecksum()
        checksum.add(buffer, at: start, length: buffer.writerIndex - start)
        buffer.setInteger(checksum.value, at: start + 2)
    }
}

/// The code of an ICMPv4 destination unreachable (RFC 792, RFC 1812 §5.2.7.1).
public struct ICMPv4UnreachableCode: RawRepresentable, Hashable, Sendable {
    public var rawValue: UInt8

    public init(rawValue: UInt8) {
        self.rawValue = rawValue
    }

    public static let network = ICMPv4UnreachableCode(rawValue: 0)
    public static let host = ICMPv4UnreachableCode(rawValue: 1)
    public static let `protocol` = ICMPv4UnreachableCode(rawValue: 2)
    public static let port = ICMPv4UnreachableCode(rawValue: 3)
    public static let fragmentationNeeded = ICMPv4UnreachableCode(rawValue: 4)
    public static let administrativelyProhibited = ICMPv4UnreachableCode(rawValue: 13)
}
