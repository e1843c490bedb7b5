import NIOCore

/// A view of an IPv4 packet (RFC 791) whose header lengths were checked once, so no accessor can fail.
///
/// The view covers exactly `totalLength` bytes: link-layer padding after the packet is dropped. Options are
/// kept as raw bytes and skipped; nothing in the engine needs their meaning.
public struct IPv4Packet: Hashable, Sendable {
    /// The packet's bytes, exactly `totalLength` of them (fewer only for a quoted packet; see
    /// ``init(validatingQuoted:)``).
    public let buffer: ByteBuffer

    /// The fixed header's size.
    public static let minimumHeaderLength = 20

    /// Checks the header of `buffer`'s readable bytes and makes a view of the packet.
    ///
    /// - Parameter verifyChecksum: also check the header checksum (cheap: 20 bytes in the common case).
    public init(validating buffer: ByteBuffer, verifyChecksum: Bool = true) throws(WireError) {
        let headerLength = try Self.checkHeader(buffer)
        let totalLength = Int(buffer.checkedInteger(at: 2, as: UInt16.self))
        guard totalLength >= headerLength else {
            throw WireError(
                .invalidValue, "IPv4.totalLength", "\(totalLength) is less than the header's \(headerLength)")
        }
        guard totalLength <= buffer.readableBytes else {
            throw WireError(.truncated, "IPv4.payload", "total length \(totalLength), have \(buffer.readableBytes)")
        }
        self.buffer = buffer.checkedSlice(at: 0, length: totalLength)
        if verifyChecksum, !isHeaderChecksumValid {
            throw WireError(.badChecksum, "IPv4.headerChecksum", "0x" + String(headerChecksum, radix: 16))
        }
    }

    /// Checks the header of a packet quoted inside an ICMP error: the header must be whole, but the payload may
    /// be cut short (RFC 792 quotes the header and 8 bytes; RFC 1812 allows more). The checksum is not checked,
    /// because routers may have changed the packet after it was quoted.
    public init(validatingQuoted buffer: ByteBuffer) throws(WireError) {
        let headerLength = try Self.checkHeader(buffer)
        let totalLength = Int(buffer.checkedInteger(at: 2, as: UInt16.self))
        guard totalLength >= headerLength else {
            throw WireError(
                .invalidValue, "IPv4.totalLength", "\(totalLength) is less than the header's \(headerLength)")
        }
        self.buffer = buffer.checkedSlice(at: 0, length: min(totalLength, buffer.readableBytes))
    }

    private static func checkHeader(_ buffer: ByteBuffer) throws(WireError) -> Int {
        guard buffer.readableBytes >= minimumHeaderLength else {
            throw WireError(.truncated, "IPv4.header", "\(buffer.readableBytes) bytes, need \(minimumHeaderLength)")
        }
        let first: UInt8 = buffer.checkedInteger(at: 0)
        guard first >> 4 == 4 else {
            throw WireError(.invalidValue, "IPv4.version", "\(first >> 4)")
        }
        let headerLength = Int(first & 0x0F) * 4
        guard headerLength >= minimumHeaderLength else {
            throw WireError(.invalidValue, "IPv4.ihl", "\(first & 0x0F) words; the minimum is 5")
        }
        guard headerLength <= buffer.readableBytes else {
            throw WireError(.truncated, "IPv4.options", "header length \(headerLength), have \(buffer.readableBytes)")
        }
        return headerLength
    }

    // MARK: - Fields

    /// The header's length in bytes, options included.
    public var headerLength: Int { Int(buffer.checkedInteger(at: 0, as: UInt8.self) & 0x0F) * 4 }
    /// The packet's length in bytes as its header states it.
    public var totalLength: Int { Int(buffer.checkedInteger(at: 2, as: UInt16.self)) }
    /// DSCP and ECN.
    public var trafficClass: TrafficClass { TrafficClass(byte: buffer.checkedInteger(at: 1)) }
    /// The identification used to reassemble fragments.
    public var identification: UInt16 { buffer.checkedInteger(at: 4) }
    /// The don't-fragment flag.
    public var dontFragment: Bool { buffer.checkedInteger(at: 6, as: UInt16.self) & 0x4000 != 0 }
    /// The more-fragments flag.
    public var moreFragments: Bool { buffer.checkedInteger(at: 6, as: UInt16.self) & 0x2000 != 0 }
    /// Where this fragment's data goes in the original payload, in bytes.
    public var fragmentOffset: Int { Int(buffer.checkedInteger(at: 6, as: UInt16.self) & 0x1FFF) * 8 }
    /// True if this packet is a fragment of a larger one: more fragments follow, or it is not the first.
    public var isFragment: Bool { moreFragments || fragmentOffset != 0 }
    /// Time to live.
    public var ttl: UInt8 { buffer.checkedInteger(at: 8) }
    /// The payload's protocol.
    public var `protocol`: IPProtocol { IPProtocol(rawValue: buffer.checkedInteger(at: 9)) }
    /// The header checksum as carried.
    public var headerChecksum: UInt16 { buffer.checkedInteger(at: 10) }
    /// The source address.
    public var source: IPv4Address { IPv4Address(bits: buffer.checkedInteger(at: 12)) }
    /// The destination address.
    public var destination: IPv4Address { IPv4Address(bits: buffer.checkedInteger(at: 16)) }
    /// The options, raw.
    public var options: ByteBuffer { buffer.checkedSlice(at: Self.minimumHeaderLength, length: headerLength - 20) }
    /// The payload: everything after the header.
    public var payload: ByteBuffer {
        buffer.checkedSlice(at: headerLength, length: buffer.readableBytes - headerLength)
    }

    /// True if the header checksum is correct.
    public var isHeaderChecksumValid: Bool {
        var checksum = InternetChecksum()
        checksum.add(buffer, at: buffer.readerIndex, length: headerLength)
        return checksum.isValid
    }

    /// The header as a value.
    public var header: IPv4Header {
        IPv4Header(
            trafficClass: trafficClass, identification: identification, dontFragment: dontFragment,
            moreFragments: moreFragments, fragmentOffset: fragmentOffset, ttl: ttl, protocol: self.protocol,
            source: source, destination: destination, options: Array(buffer: options))
    }
}

/// An IPv4 header as a value, ready to emit.
public struct IPv4Header: Hashable, Sendable {
    public var trafficClass: TrafficClass
    public var identification: UInt16
    public var dontFragment: Bool
    public var moreFragments: Bool
    /// In bytes; must be a multiple of 8.
    public var fragmentOffset: Int
    public var ttl: UInt8
    public var `protocol`: IPProtocol
    public var source: IPv4Address
    public var destination: IPv4Address
    /// Raw options; their length must be a multiple of 4 and at most 40.
    public var options: [UInt8]

    public init(
        trafficClass: TrafficClass = TrafficClass(), identification: UInt16 = 0, dontFragment: Bool = true,
        moreFragments: Bool = false, fragmentOffset: Int = 0, ttl: UInt8 = 64, protocol: IPProtocol,
        source: IPv4Address, destination: IPv4Address, options: [UInt8] = []
    ) {
        self.trafficClass = trafficClass
        self.identification = identification
        self.dontFragment = dontFragment
        self.moreFragments = moreFragments
        self.fragmentOffset = fragmentOffset
        self.ttl = ttl
        self.protocol = `protocol`
        self.source = source
        self.destination = destination
        self.options = options
    }

    /// The header's length in bytes.
    public var headerLength: Int { IPv4Packet.minimumHeaderLength + options.count }

    /// Writes exactly ``headerLength`` bytes for a packet carrying `payloadLength` bytes, checksum included.
    public func emit(into buffer: inout ByteBuffer, payloadLength: Int) {
        precondition(options.count % 4 == 0 && options.count <= 40, "IPv4 options must be 0...40 bytes in words")
        precondition(fragmentOffset % 8 == 0 && fragmentOffset >> 3 <= 0x1FFF, "bad fragment offset")
        let totalLength = headerLength + payloadLength
        precondition(totalLength <= Int(UInt16.max), "IPv4 packet of \(totalLength) bytes")
        let start = buffer.writerIndex
        var flags = UInt16(fragmentOffset >> 3)
        if dontFragment { flags |= 0x4000 }
        if moreFragments { flags |= 0x2000 }
        buffer.writeInteger(UInt8(0x40 | headerLength / 4))
        buffer.writeInteger(trafficClass.byte)
        buffer.writeInteger(UInt16(totalLength))
        buffer.writeInteger(identification)
        buffer.writeInteger(flags)
        buffer.writeInteger(ttl)
        buffer.writeInteger(self.protocol.rawValue)
        buffer.writeInteger(UInt16(0))
        buffer.writeInteger(source.bits)
        buffer.writeInteger(destination.bits)
        buffer.writeBytes(options)
        var checksum = InternetChecksum()
        checksum.add(buffer, at: start, length: headerLength)
        buffer.setInteger(checksum.value, at: start + 10)
    }
}
