import KtWire
import NIOCore

/// The `struct virtio_net_hdr` (virtio spec §5.1.6) that a TUN opened with `IFF_VNET_HDR` puts before every
/// packet, in both directions. It is how the kernel hands over segmentation (GSO) and checksum (CHECKSUM_PARTIAL)
/// work instead of doing it per packet.
///
/// On a TUN the fields are in the host's byte order unless `TUNSETVNETLE` was used; every Linux host we run on
/// is little-endian, so they are read and written little-endian.
public struct VirtioNetHeader: Hashable, Sendable {
    /// `flags`: what the receiver still has to do with the checksum.
    public struct Flags: OptionSet, Hashable, Sendable {
        public var rawValue: UInt8
        public init(rawValue: UInt8) { self.rawValue = rawValue }
        /// The checksum from `checksumStart` to the end is to be computed and stored at `checksumStart +
        /// checksumOffset`; the field already holds the pseudo-header sum.
        public static let needsChecksum = Flags(rawValue: 1)
        /// The checksum was verified already.
        public static let dataValid = Flags(rawValue: 2)
    }

    /// `gso_type`: the kind of super-packet, or none.
    public struct GSOType: RawRepresentable, Hashable, Sendable {
        public var rawValue: UInt8
        public init(rawValue: UInt8) { self.rawValue = rawValue }
        public static let none = GSOType(rawValue: 0)
        public static let tcpv4 = GSOType(rawValue: 1)
        public static let udp = GSOType(rawValue: 3)
        public static let tcpv6 = GSOType(rawValue: 4)
        /// UDP segmentation offload (USO), IPv4 or IPv6.
        public static let udpL4 = GSOType(rawValue: 5)
        /// Set together with a TCP type when the packets carried ECN's CWR.
        public static let ecnBit: UInt8 = 0x80
        /// The type without the ECN bit.
        public var base: GSOType { GSOType(rawValue: rawValue & ~Self.ecnBit) }
    }

    public var flags: Flags
    public var gsoType: GSOType
    /// Bytes of headers (IP + transport) in front of the payload of each segment.
    public var headerLength: UInt16
    /// Payload bytes per segment: the MSS for TCP.
    public var gsoSize: UInt16
    /// Where checksumming starts: the transport header's offset.
    public var checksumStart: UInt16
    /// Where, from `checksumStart`, the checksum field is: 16 for TCP, 6 for UDP.
    public var checksumOffset: UInt16

    /// The header's size on the wire (without the `num_buffers` of the mergeable-buffers variant).
    public static let size = 10

    /// A header that asks for nothing: a plain packet with complete checksums.
    public static let plain = VirtioNetHeader(
        flags: [], gsoType: .none, headerLength: 0, gsoSize: 0, checksumStart: 0, checksumOffset: 0)

    public init(
        flags: Flags, gsoType: GSOType, headerLength: UInt16, gsoSize: UInt16, checksumStart: UInt16,
        checksumOffset: UInt16
    ) {
        self.flags = flags
        self.gsoType = gsoType
        self.headerLength = headerLength
        self.gsoSize = gsoSize
        self.checksumStart = checksumStart
        self.checksumOffset = checksumOffset
    }

    /// Reads the header from the front of `buffer`, moving its reader index past it.
    public init(reading buffer: inout ByteBuffer) throws(WireError) {
        guard buffer.readableBytes >= Self.size,
            let flags = buffer.readInteger(as: UInt8.self),
            let gsoType = buffer.readInteger(as: UInt8.self),
            let headerLength = buffer.readInteger(endianness: .little, as: UInt16.self),
            let gsoSize = buffer.readInteger(endianness: .little, as: UInt16.self),
            let checksumStart = buffer.readInteger(endianness: .little, as: UInt16.self),
            let checksumOffset = buffer.readInteger(endianness: .little, as: UInt16.self)
        else {
            throw WireError(.truncated, "virtio_net_hdr", "\(buffer.readableBytes) bytes, need \(Self.size)")
        }
        self.init(
            flags: Flags(rawValue: flags), gsoType: GSOType(rawValue: gsoType), headerLength: headerLength,
            gsoSize: gsoSize, checksumStart: checksumStart, checksumOffset: checksumOffset)
    }

    /// Writes the 10 bytes.
    public func write(into buffer: inout ByteBuffer) {
        buffer.writeInteger(flags.rawValue)
        buffer.writeInteger(gsoType.rawValue)
        buffer.writeInteger(headerLength, endianness: .little)
        buffer.writeInteger(gsoSize, endianness: .little)
        buffer.writeInteger(checksumStart, endianness: .little)
        buffer.writeInteger(checksumOffset, endianness: .little)
    }
}
