import KtWire
import NIOCore

/// What a connection received and its application has not read yet: in-order bytes ready to read, and a
/// bounded store of segments that arrived ahead of a gap.
struct ReceiveQueue {
    /// In-order bytes, oldest first.
    private var ready = CircularBuffer<ByteBuffer>(initialCapacity: 0)
    /// Bytes in `ready`.
    private(set) var readyCount = 0
    /// Segments beyond RCV.NXT, sorted by start, never overlapping, never touching (adjacent ones are kept as
    /// one range of several buffers).
    private(set) var outOfOrder: [(start: TCPSequenceNumber, data: [ByteBuffer], length: Int)] = []
    /// Bytes in `outOfOrder`.
    private(set) var outOfOrderCount = 0
    /// The sequence number of a FIN that arrived ahead of the data before it.
    var pendingFIN: TCPSequenceNumber?
    /// The blocks to report in SACK options, most recently changed first (RFC 2018 §4).
    private(set) var recentBlocks: [TCPSACKBlock] = []

    /// Everything held, for the window: in-order and out-of-order bytes.
    var heldBytes: Int { readyCount + outOfOrderCount }

    // MARK: - Arrival

    /// Takes `data` that starts at `start`, given RCV.NXT `next`; returns the new RCV.NXT. Bytes before `next` are
    /// duplicates and dropped; bytes past `limit` (the right edge of the window) are dropped too.
    mutating func receive(
        _ data: ByteBuffer, at start: TCPSequenceNumber, next: TCPSequenceNumber, limit: TCPSequenceNumber
    )
        -> TCPSequenceNumber
    {
        var data = data
        var start = start
        // Trim what we already have.
        if start < next {
            let duplicate = Int(next - start)
            guard duplicate < data.readableBytes else { return next }
            data.moveReaderIndex(forwardBy: duplicate)
            start = next
        }
        // Trim what lies beyond the window.
        let room = Int(limit - start)
        guard room > 0 else { return next }
        if data.readableBytes > room { data.moveWriterIndex(to: data.readerIndex + room) }
        guard data.readableBytes > 0 else { return next }

        if start == next {
            var next = next + data.readableBytes
            append(data)
            // Pull in whatever out-of-order ranges now follow.
            while let first = outOfOrder.first, !(next < first.start) {
                outOfOrder.removeFirst()
                outOfOrderCount -= first.length
                let end = first.start + first.length
                if next < end {
                    var skip = Int(next - first.start)
                    for var piece in first.data {
                        if skip >= piece.readableBytes {
                            skip -= piece.readableBytes
                            continue
                        }
                        piece.moveReaderIndex(forwardBy: skip)
                        skip = 0
                        append(piece)
                    }
                    next = end
                }
            }
            recentBlocks.removeAll { !(next < $0.right) }
            recentBlocks = recentBlocks.map { $0.left < next ? TCPSACKBlock(left: next, right: $0.right) : $0 }
            return next
        }
        storeOutOfOrder(data, at: start)
        return next
    }

    private mutating func append(_ data: ByteBuffer) {
        readyCount += data.readableBytes
        ready.append(data)
    }

    /// Inserts a segment past a gap, merging with the ranges it overlaps or touches.
    private mutating func storeOutOfOrder(_ data: ByteBuffer, at start: TCPSequenceNumber) {
        var newStart = start
        var newEnd = start + data.readableBytes
        var pieces: [ByteBuffer] = [data]
        var index = 0
        // Ranges entirely before: skip.
        while index < outOfOrder.count, outOfOrder[index].start + outOfOrder[index].length < newStart { index += 1 }
        var mergedLength = data.readableBytes
        while index < outOfOrder.count, !(newEnd < outOfOrder[index].start) {
            let existing = outOfOrder.remove(at: index)
            outOfOrderCount -= existing.length
            let existingEnd = existing.start + existing.length
            // Keep the existing bytes and only the new bytes outside them: earlier copies win.
            var before: [ByteBuffer] = []
            var after: [ByteBuffer] = []
            if newStart < existing.start {
                before = Self.take(pieces, from: 0, length: Int(existing.start - newStart))
            }
            if existingEnd < newEnd {
                after = Self.take(pieces, from: Int(existingEnd - newStart), length: Int(newEnd - existingEnd))
            }
            newStart = newStart < existing.start ? newStart : existing.start
            newEnd = existingEnd < newEnd ? newEnd : existingEnd
            pieces = before + existing.data + after
            mergedLength = Int(newEnd - newStart)
        }
        outOfOrder.insert((start: newStart, data: pieces, length: mergedLength), at: index)
        outOfOrderCount += mergedLength
        let block = TCPSACKBlock(left: newStart, right: newEnd)
        recentBlocks.removeAll { block.left <= $0.left && $0.right <= block.right }
        recentBlocks.insert(block, at: 0)
        if recentBlocks.count > 4 { recentBlocks.removeLast(recentBlocks.count - 4) }
    }

    /// `length` bytes from `offset` of the concatenation of `pieces`, as slices.
    private static func take(_ pieces: [ByteBuffer], from offset: Int, length: Int) -> [ByteBuffer] {
        var result: [ByteBuffer] = []
        var skip = offset
        var left = length
        for piece in pieces where left > 0 {
            let size = piece.readableBytes
            if skip >= size {
                skip -= size
                continue
            }
            let take = min(size - skip, left)
            if let slice = piece.getSlice(at: piece.readerIndex + skip, length: take) { result.append(slice) }
            left -= take
            skip = 0
        }
        return result
    }

    // MARK: - Reading

    /// Up to `maximum` in-order bytes; a whole received chunk when it fits (no copy).
    mutating func read(maximum: Int) -> ByteBuffer? {
        guard readyCount > 0, maximum > 0 else { return nil }
        var first = ready.removeFirst()
        if first.readableBytes <= maximum {
            readyCount -= first.readableBytes
            // Join further whole chunks only if the caller can take them, copying once.
            if let next = ready.first, first.readableBytes + next.readableBytes <= maximum {
                var joined = ByteBuffer()
                joined.reserveCapacity(min(maximum, readyCount + first.readableBytes))
                joined.writeBuffer(&first)
                while let chunk = ready.first, joined.readableBytes + chunk.readableBytes <= maximum {
                    var chunk = ready.removeFirst()
                    readyCount -= chunk.readableBytes
                    joined.writeBuffer(&chunk)
                }
                return joined
            }
            return first
        }
        let part = first.readSlice(length: maximum)
        readyCount -= maximum
        ready.prepend(first)
        return part
    }

    /// Drops every out-of-order range (memory pressure, or the connection ends).
    mutating func discardOutOfOrder() {
        outOfOrder.removeAll()
        outOfOrderCount = 0
        recentBlocks.removeAll()
        pendingFIN = nil
    }
}
