import NIOCore

/// What a packet device still has to do to a packet, or (on reads) what it left undone: the offload metadata that
/// travels beside the bytes. The stack fills it in and reads it; only the TUN (KtTun) turns it into a virtio header
/// and back.
public struct PacketOffload: Hashable, Sendable {
    /// A partial transport checksum: it starts `checksumStart` bytes into the IP packet and is stored
    /// `checksumOffset` bytes after that; the field holds the pseudo-header sum and the device completes it
    /// (virtio `NEEDS_CSUM`). On reads, the sender's kernel made the packet and nothing on the way could corrupt it.
    public var checksumStart: UInt16?
    public var checksumOffset: UInt16?
    /// A TCP super-segment: the device cuts it into segments of this many payload bytes (TSO), or, on reads, the
    /// kernel handed it over whole (GSO).
    public var segmentSize: UInt16?
    /// On reads: the device verified the transport checksum already (virtio `DATA_VALID`).
    public var checksumVerified: Bool

    public init(
        checksumStart: UInt16? = nil, checksumOffset: UInt16? = nil, segmentSize: UInt16? = nil,
        checksumVerified: Bool = false
    ) {
        self.checksumStart = checksumStart
        self.checksumOffset = checksumOffset
        self.segmentSize = segmentSize
        self.checksumVerified = checksumVerified
    }

    /// Nothing to do: complete checksums, one packet.
    public static let none = PacketOffload()

    /// Whether the transport checksum needs no check by the reader: left partial by the sending kernel, or already
    /// verified by the device.
    public var transportChecksumTrusted: Bool { checksumStart != nil || checksumVerified }
}

/// One IP packet as a packet device reads or writes it: the bytes, and the offload metadata beside them.
public struct DevicePacket: Sendable {
    /// The IP packet (from its first header byte).
    public var bytes: ByteBuffer
    public var offload: PacketOffload

    public init(bytes: ByteBuffer, offload: PacketOffload = .none) {
        self.bytes = bytes
        self.offload = offload
    }

    public init(
        bytes: ByteBuffer, checksumStart: UInt16? = nil, checksumOffset: UInt16? = nil, segmentSize: UInt16? = nil
    ) {
        self.bytes = bytes
        self.offload = PacketOffload(
            checksumStart: checksumStart, checksumOffset: checksumOffset, segmentSize: segmentSize)
    }
}
