import NIOCore

/// One SACK block: the bytes `[left, right)` that the receiver holds beyond its cumulative ACK (RFC 2018 §3).
public struct TCPSACKBlock: Hashable, Sendable {
    public var left: TCPSequenceNumber
    public var right: TCPSequenceNumber

    public init(left: TCPSequenceNumber, right: TCPSequenceNumber) {
        self.left = left
        self.right = right
    }
}

/// The timestamps option's two values (RFC 7323 §3).
public struct TCPTimestamps: Hashable, Sendable {
    /// TSval: the sender's clock.
    public var value: UInt32
    /// TSecr: the most recent TSval received.
    public var echoReply: UInt32

    public init(value: UInt32, echoReply: UInt32) {
        self.value = value
        self.echoReply = echoReply
    }
}

/// An option this library does not interpret, kept so that it survives a parse and emit.
public struct TCPUnknownOption: Hashable, Sendable {
    public var kind: UInt8
    /// The option's data, without the kind and length bytes.
    public var data: [UInt8]

    public init(kind: UInt8, data: [UInt8]) {
        self.kind = kind
        self.data = data
    }
}

/// The options of a TCP header, decoded.
///
/// Only SACK blocks and unknown options are stored in arrays; a segment without them decodes without
/// allocating.
public struct TCPOptions: Hashable, Sendable {
    /// MSS (RFC 9293 §3.7.1), only meaningful on a SYN.
    public var maximumSegmentSize: UInt16?
    /// The window scale shift (RFC 7323 §2), only meaningful on a SYN. Kept as sent; a receiver treats values
    /// above 14 as 14.
    public var windowScale: UInt8?
    /// SACK-permitted (RFC 2018 §2), only meaningful on a SYN.
    public var sackPermitted: Bool
    /// SACK blocks (RFC 2018 §3), at most four fit.
    public var sackBlocks: [TCPSACKBlock]
    /// Timestamps (RFC 7323 §3).
    public var timestamps: TCPTimestamps?
    /// Options of kinds not listed above, in the order they came.
    public var unknown: [TCPUnknownOption]

    /// The options area is at most 40 bytes: a data offset of 15 words minus the 5-word fixed header.
    public static let maximumLength = 40

    public init(
        maximumSegmentSize: UInt16? = nil, windowScale: UInt8? = nil, sackPermitted: Bool = false,
        sackBlocks: [TCPSACKBlock] = [], timestamps: TCPTimestamps? = nil, unknown: [TCPUnknownOption] = []
    ) {
        self.maximumSegmentSize = maximumSegmentSize
        self.windowScale = windowScale
        self.sackPermitted = sackPermitted
        self.sackBlocks = sackBlocks
        self.timestamps = timestamps
        self.unknown = unknown
    }

    // MARK: - Kinds

    enum Kind {
        static let endOfList: UInt8 = 0
        static let noOperation: UInt8 = 1
        static let maximumSegmentSize: UInt8 = 2
        static let windowScale: UInt8 = 3
        static let sackPermitted: UInt8 = 4
        static let sack: UInt8 = 5
        static let timestamps: UInt8 = 8
    }

    // MARK: - Parse

    /// Decodes an options area. Every option's length is checked against the area and, for known kinds,
    /// against the size that kind must have.
    public init(parsing area: ByteBuffer) throws(WireError) {
        self.init()
        var offset = 0
        let end = area.readableBytes
        while offset < end {
            let kind: UInt8 = area.checkedInteger(at: offset)
            if kind == Kind.endOfList { break }
            if kind == Kind.noOperation {
                offset += 1
                continue
            }
            guard offset + 2 <= end else {
                throw WireError(.truncated, "TCP.option[\(kind)].length")
            }
            let length = Int(area.checkedInteger(at: offset + 1, as: UInt8.self))
            guard length >= 2 else {
                throw WireError(.invalidValue, "TCP.option[\(kind)].length", "\(length) is less than 2")
            }
            guard offset + length <= end else {
                throw WireError(.truncated, "TCP.option[\(kind)]", "length \(length), \(end - offset) bytes left")
            }
            let data = offset + 2
            switch kind {
            case Kind.maximumSegmentSize:
                try Self.expect(length, 4, "TCP.option.mss.length")
                maximumSegmentSize = area.checkedInteger(at: data)
            case Kind.windowScale:
                try Self.expect(length, 3, "TCP.option.windowScale.length")
                windowScale = area.checkedInteger(at: data)
            case Kind.sackPermitted:
                try Self.expect(length, 2, "TCP.option.sackPermitted.length")
                sackPermitted = true
            case Kind.sack:
                guard length > 2, (length - 2) % 8 == 0 else {
                    throw WireError(.invalidValue, "TCP.option.sack.length", "\(length) is not 2 + 8n")
                }
                sackBlocks = stride(from: data, to: offset + length, by: 8).map { at in
                    TCPSACKBlock(
                        left: TCPSequenceNumber(area.checkedInteger(at: at)),
                        right: TCPSequenceNumber(area.checkedInteger(at: at + 4)))
                }
            case Kind.timestamps:
                try Self.expect(length, 10, "TCP.option.timestamps.length")
                timestamps = TCPTimestamps(
                    value: area.checkedInteger(at: data), echoReply: area.checkedInteger(at: data + 4))
            default:
                unknown.append(TCPUnknownOption(kind: kind, data: area.checkedBytes(at: data, length: length - 2)))
            }
            offset += length
        }
    }

    private static func expect(_ length: Int, _ wanted: Int, _ field: String) throws(WireError) {
        guard length == wanted else {
            throw WireError(.invalidValue, field, "\(length), must be \(wanted)")
        }
    }

    // MARK: - Emit

    /// The encoded size in bytes, padded to a multiple of 4.
    public var encodedLength: Int {
        var length = 0
        if maximumSegmentSize != nil { length += 4 }
        // SACK-permitted and timestamps share a word-aligned 12 bytes; either alone is padded with NOPs.
        if timestamps != nil {
            length += 12
        } else if sackPermitted {
            length += 4
        }
        if windowScale != nil { length += 4 }
        if !sackBlocks.isEmpty { length += 4 + 8 * sackBlocks.count }
        for option in unknown { length += 2 + option.data.count }
        return (length + 3) & ~3
    }

    /// Writes exactly ``encodedLength`` bytes in the layout Linux uses (MSS, SACK-permitted with timestamps,
    /// NOP + window scale, NOP NOP + SACK), unknown options after them, padded with end-of-list bytes.
    public func emit(into buffer: inout ByteBuffer) {
        let total = encodedLength
        precondition(total <= Self.maximumLength, "TCP options of \(total) bytes do not fit in 40")
        let start = buffer.writerIndex
        if let mss = maximumSegmentSize {
            buffer.writeInteger(Kind.maximumSegmentSize)
            buffer.writeInteger(UInt8(4))
            buffer.writeInteger(mss)
        }
        if let timestamps {
            if sackPermitted {
                buffer.writeInteger(Kind.sackPermitted)
                buffer.writeInteger(UInt8(2))
            } else {
                buffer.writeInteger(Kind.noOperation)
                buffer.writeInteger(Kind.noOperation)
            }
            buffer.writeInteger(Kind.timestamps)
            buffer.writeInteger(UInt8(10))
            buffer.writeInteger(timestamps.value)
            buffer.writeInteger(timestamps.echoReply)
        } else if sackPermitted {
            buffer.writeInteger(Kind.noOperation)
            buffer.writeInteger(Kind.noOperation)
            buffer.writeInteger(Kind.sackPermitted)
            buffer.writeInteger(UInt8(2))
        }
        if let windowScale {
            buffer.writeInteger(Kind.noOperation)
            buffer.writeInteger(Kind.windowScale)
            buffer.writeInteger(UInt8(3))
            buffer.writeInteger(windowScale)
        }
        if !sackBlocks.isEmpty {
            buffer.writeInteger(Kind.noOperation)
            buffer.writeInteger(Kind.noOperation)
            buffer.writeInteger(Kind.sack)
            buffer.writeInteger(UInt8(2 + 8 * sackBlocks.count))
            for block in sackBlocks {
                buffer.writeInteger(block.left.rawValue)
                buffer.writeInteger(block.right.rawValue)
            }
        }
        for option in unknown {
            buffer.writeInteger(option.kind)
            buffer.writeInteger(UInt8(2 + option.data.count))
            buffer.writeBytes(option.data)
        }
        buffer.writeRepeatingByte(Kind.endOfList, count: total - (buffer.writerIndex - start))
    }
}
