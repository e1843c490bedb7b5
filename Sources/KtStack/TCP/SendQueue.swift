import NIOCore

/// The bytes a connection has taken from its application and not yet had acknowledged: offset 0 is SND.UNA.
///
/// Chunks are kept as the application wrote them (no copy on write); a segment's payload is copied out once,
/// straight into the packet being built.
struct SendQueue {
    private var chunks = CircularBuffer<ByteBuffer>(initialCapacity: 0)
    /// Bytes held.
    private(set) var count = 0

    var isEmpty: Bool { count == 0 }

    mutating func append(_ bytes: ByteBuffer) {
        guard bytes.readableBytes > 0 else { return }
        count += bytes.readableBytes
        chunks.append(bytes)
    }

    /// Forgets the first `bytes` bytes (they were acknowledged).
    mutating func dropFirst(_ bytes: Int) {
        precondition(bytes <= count, "acknowledged \(bytes) bytes of \(count) queued")
        var left = bytes
        count -= bytes
        while left > 0 {
            let first = chunks[chunks.startIndex].readableBytes
            if first <= left {
                chunks.removeFirst()
                left -= first
            } else {
                chunks[chunks.startIndex].moveReaderIndex(forwardBy: left)
                left = 0
            }
        }
    }

    /// Copies `length` bytes starting `offset` bytes after SND.UNA into `buffer`.
    func copy(offset: Int, length: Int, into buffer: inout ByteBuffer) {
        precondition(offset + length <= count, "segment [\(offset), +\(length)) past the \(count) queued bytes")
        var skip = offset
        var left = length
        for chunk in chunks where left > 0 {
            let size = chunk.readableBytes
            if skip >= size {
                skip -= size
                continue
            }
            let take = min(size - skip, left)
            buffer.writeImmutableBuffer(chunk.getSlice(at: chunk.readerIndex + skip, length: take) ?? ByteBuffer())
            left -= take
            skip = 0
        }
    }

    /// Calls `body` with the queued bytes from `offset` on, chunk by chunk, up to `length` bytes (for checksums).
    func forEachPiece(offset: Int, length: Int, _ body: (ByteBuffer) -> Void) {
        var skip = offset
        var left = length
        for chunk in chunks where left > 0 {
            let size = chunk.readableBytes
            if skip >= size {
                skip -= size
                continue
            }
            let take = min(size - skip, left)
            body(chunk.getSlice(at: chunk.readerIndex + skip, length: take) ?? ByteBuffer())
            left -= take
            skip = 0
        }
    }
}
