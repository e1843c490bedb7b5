import NIOCore

/// A view of an IPv6 packet (RFC 8200) whose fixed header and extension-header chain were checked once.
///
/// The chain is walked at validation with every length checked against the packet, so ``upperLayerProtocol``
/// and ``upperLayerOffset`` say where TCP, UDP or ICMPv6 starts without another pass.
public struct IPv6Packet: Hashable, Sendable {
    /// The packet's bytes: the 40-byte header and `payloadLength` more (fewer only for a quoted packet).
    public let buffer: ByteBuffer
    /// The protocol after the last extension header.
    public let upperLayerProtocol: IPProtocol
    /// Where the upper-layer data starts, from the start of the packet.
    public let upperLayerOffset: Int
    /// The Fragment header's contents, if the packet has one.
    public let fragment: IPv6FragmentHeader?

    /// The fixed header's size.
    public static let headerLength = 40
    /// How many extension headers a packet may carry before we call the chain hostile. RFC 8200 §4.1 names six
    /// kinds that appear at most once or twice each; eight leaves room without letting a chain of tiny
    /// headers make us walk a whole jumbo packet.
    public static let maximumExtensionHeaders = 8

    /// Checks the header and the extension-header chain of `buffer`'s readable bytes.
    public init(validating buffer: ByteBuffer) throws(WireError) {
        try self.init(buffer, quoted: false)
    }

    /// Checks a packet quoted inside an ICMPv6 error, whose payload may be cut short (RFC 4443 §3.1 quotes as
    /// much as fits in the minimum MTU). Extension headers are walked only as far as the bytes go.
    public init(validatingQuoted buffer: ByteBuffer) throws(WireError) {
        try self.init(buffer, quoted: true)
    }

    private init(_ buffer: ByteBuffer, quoted: Bool) throws(WireError) {
        guard buffer.readableBytes >= Self.headerLength else {
            throw WireError(.truncated, "IPv6.header", "\(buffer.readableBytes) bytes, need \(Self.headerLength)")
        }
        let version: UInt8 = buffer.checkedInteger(at: 0)
        guard version >> 4 == 6 else {
            throw WireError(.invalidValue, "IPv6.version", "\(version >> 4)")
        }
        let total = Self.headerLength + Int(buffer.checkedInteger(at: 4, as: UInt16.self))
        if total > buffer.readableBytes, !quoted {
            throw WireError(.truncated, "IPv6.payload", "payload ends at \(total), have \(buffer.readableBytes)")
        }
        let packet = buffer.checkedSlice(at: 0, length: min(total, buffer.readableBytes))
        self.buffer = packet

        var next = IPProtocol(rawValue: packet.checkedInteger(at: 6))
        var offset = Self.headerLength
        var fragment: IPv6FragmentHeader? = nil
        var walked = 0
        walk: while true {
            let headerLength: Int
            switch next {
            case .hopByHop, .ipv6Routing, .ipv6DestinationOptions:
                if next == .hopByHop, walked != 0 {
                    // RFC 8200 §4.1: Hop-by-Hop Options must immediately follow the IPv6 header.
                    throw WireError(.invalidValue, "IPv6.hopByHop", "not directly after the fixed header")
                }
                guard offset + 2 <= packet.readableBytes else {
                    if quoted { break walk }
                    throw WireError(.truncated, "IPv6.extensionHeader[\(walked)]")
                }
                headerLength = (Int(packet.checkedInteger(at: offset + 1, as: UInt8.self)) + 1) * 8
            case .authenticationHeader:
                guard offset + 2 <= packet.readableBytes else {
                    if quoted { break walk }
                    throw WireError(.truncated, "IPv6.authenticationHeader")
                }
                // RFC 4302 §2.2: the length is in 4-octet units, minus 2.
                headerLength = (Int(packet.checkedInteger(at: offset + 1, as: UInt8.self)) + 2) * 4
            case .ipv6Fragment:
                headerLength = 8
                guard offset + headerLength <= packet.readableBytes else {
                    if quoted { break walk }
                    throw WireError(.truncated, "IPv6.fragmentHeader")
                }
                let field: UInt16 = packet.checkedInteger(at: offset + 2)
                fragment = IPv6FragmentHeader(
                    offset: Int(field & 0xFFF8), moreFragments: field & 1 != 0,
                    identification: packet.checkedInteger(at: offset + 4))
            default:
                break walk
            }
            guard offset + headerLength <= packet.readableBytes else {
                if quoted { break walk }
                throw WireError(.truncated, "IPv6.extensionHeader[\(walked)]", "length \(headerLength)")
            }
            next = IPProtocol(rawValue: packet.checkedInteger(at: offset))
            offset += headerLength
            walked += 1
            guard walked <= Self.maximumExtensionHeaders else {
                throw WireError(.loop, "IPv6.extensionHeaders", "more than \(Self.maximumExtensionHeaders)")
            }
            // Behind a non-first fragment lies the middle of the payload, not another header.
            if let fragment, fragment.offset != 0 { break walk }
        }
        self.upperLayerProtocol = next
        self.upperLayerOffset = offset
        self.fragment = fragment
    }

    // MARK: - Fields

    /// DSCP and ECN.
    public var trafficClass: TrafficClass {
        let word: UInt32 = buffer.checkedInteger(at: 0)
        return TrafficClass(byte: UInt8(truncatingIfNeeded: word >> 20))
    }
    /// The 20-bit flow label.
    public var flowLabel: UInt32 { buffer.checkedInteger(at: 0, as: UInt32.self) & 0xF_FFFF }
    /// The payload length as the header states it (extension headers included).
    public var payloadLength: Int { Int(buffer.checkedInteger(at: 4, as: UInt16.self)) }
    /// The protocol of the first header after the fixed one.
    public var nextHeader: IPProtocol { IPProtocol(rawValue: buffer.checkedInteger(at: 6)) }
    /// The hop limit.
    public var hopLimit: UInt8 { buffer.checkedInteger(at: 7) }
    /// The source address.
    public var source: IPv6Address { buffer.checkedIPv6Address(at: 8) }
    /// The destination address.
    public var destination: IPv6Address { buffer.checkedIPv6Address(at: 24) }
    /// True if this packet is a fragment of a larger one.
    public var isFragment: Bool { fragment.map { $0.moreFragments || $0.offset != 0 } ?? false }
    /// The upper-layer bytes: everything after the extension headers.
    public var upperLayerPayload: ByteBuffer {
        buffer.checkedSlice(at: upperLayerOffset, length: buffer.readableBytes - upperLayerOffset)
    }

    /// The fixed header as a value.
    public var header: IPv6Header {
        IPv6Header(
            trafficClass: trafficClass, flowLabel: flowLabel, nextHeader: nextHeader, hopLimit: hopLimit,
            source: source, destination: destination)
    }
}

/// What an IPv6 Fragment header says (RFC 8200 §4.5).
public struct IPv6FragmentHeader: Hashable, Sendable {
    /// Where this fragment's data goes in the original payload, in bytes.
    public var offset: Int
    /// More fragments follow.
    public var moreFragments: Bool
    /// Identifies the original packet.
    public var identification: UInt32
}

/// The fixed IPv6 header as a value, ready to emit. Extension headers, when wanted, are part of the payload.
public struct IPv6Header: Hashable, Sendable {
    public var trafficClass: TrafficClass
    public var flowLabel: UInt32
    public var nextHeader: IPProtocol
    public var hopLimit: UInt8
    public var source: IPv6Address
    public var destination: IPv6Address

    public init(
        trafficClass: TrafficClass = TrafficClass(), flowLabel: UInt32 = 0, nextHeader: IPProtocol,
        hopLimit: UInt8 = 64, source: IPv6Address, destination: IPv6Address
    ) {
        self.trafficClass = trafficClass
        self.flowLabel = flowLabel & 0xF_FFFF
        self.nextHeader = nextHeader
        self.hopLimit = hopLimit
        self.source = source
        self.destination = destination
    }

    /// Writes exactly 40 bytes for a packet carrying `payloadLength` bytes after the fixed header.
    public func emit(into buffer: inout ByteBuffer, payloadLength: Int) {
        precondition(payloadLength <= Int(UInt16.max), "IPv6 payload of \(payloadLength) bytes needs a jumbogram")
        buffer.writeInteger(UInt32(6) << 28 | UInt32(trafficClass.byte) << 20 | flowLabel & 0xF_FFFF)
        buffer.writeInteger(UInt16(payloadLength))
        buffer.writeInteger(nextHeader.rawValue)
        buffer.writeInteger(hopLimit)
        buffer.writeIPv6Address(source)
        buffer.writeIPv6Address(destination)
    }
}
