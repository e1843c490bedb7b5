import NIOCore

/// One packet for the TUN, with what the device must still do to it.
public struct OutputPacket: Sendable {
    /// The IP packet.
    public var bytes: ByteBuffer
    /// With checksum offload: where the transport checksum starts and, from there, where it is stored. The field
    /// holds the pseudo-header sum; the device completes it (virtio NEEDS_CSUM).
    public var checksumStart: UInt16?
    public var checksumOffset: UInt16?
    /// With segmentation offload: a TCP super-segment the device cuts into segments of this many payload bytes.
    public var segmentSize: UInt16?

    public init(
        bytes: ByteBuffer, checksumStart: UInt16? = nil, checksumOffset: UInt16? = nil, segmentSize: UInt16? = nil
    ) {
        self.bytes = bytes
        self.checksumStart = checksumStart
        self.checksumOffset = checksumOffset
        self.segmentSize = segmentSize
    }
}

/// Reused packet buffers, so that emitting a packet does not allocate once the engine hands written packets back
/// (``NetworkStack/recycle(_:)``).
struct PacketBufferPool {
    private var free: [ByteBuffer] = []
    /// Buffers kept for reuse: a batch of 64 super-segments and then some. More would only hold memory.
    static let maximumKept = 256
    /// Buffers grown beyond this (a 64 KiB super-segment and headers) are not kept.
    static let maximumKeptCapacity = 70 * 1024

    mutating func take(capacity: Int) -> ByteBuffer {
        if var buffer = free.popLast() {
            buffer.clear(minimumCapacity: capacity)
            return buffer
        }
        var buffer = ByteBuffer()
        buffer.reserveCapacity(max(capacity, 2048))
        return buffer
    }

    mutating func recycle(_ buffer: ByteBuffer) {
        guard free.count < Self.maximumKept, buffer.capacity <= Self.maximumKeptCapacity else { return }
        free.append(buffer)
    }
}
