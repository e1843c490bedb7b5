import KtWire
import NIOCore

/// One packet for the device, with what the device must still do to it (`offload`). The same value a
/// ``KtTun`` device writes: KtWire's `DevicePacket`.
public typealias OutputPacket = DevicePacket

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
