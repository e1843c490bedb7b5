import KtWire

/// The sender's record of what the receiver holds beyond SND.UNA, from its SACK blocks (RFC 6675 §3): sorted,
/// non-overlapping ranges `[left, right)`.
struct SACKScoreboard {
    private(set) var ranges: [TCPSACKBlock] = []
    /// Bytes covered by `ranges`.
    private(set) var sackedBytes = 0

    var isEmpty: Bool { ranges.isEmpty }

    /// The highest sequence number the receiver reported holding.
    var highestSacked: TCPSequenceNumber? { ranges.last?.right }

    /// Records `blocks` from one ACK, ignoring any not inside `(unacknowledged, sent]` (RFC 2018 §3 allows
    /// stale or bogus blocks; they must not move our state).
    mutating func add(_ blocks: [TCPSACKBlock], unacknowledged: TCPSequenceNumber, sent: TCPSequenceNumber) {
        for block in blocks {
            guard unacknowledged < block.right, block.left < block.right, !(sent < block.right) else { continue }
            let left = block.left < unacknowledged ? unacknowledged : block.left
            insert(TCPSACKBlock(left: left, right: block.right))
        }
    }

    private mutating func insert(_ block: TCPSACKBlock) {
        var left = block.left
        var right = block.right
        var index = 0
        while index < ranges.count, ranges[index].right < left { index += 1 }
        while index < ranges.count, !(right < ranges[index].left) {
            let existing = ranges.remove(at: index)
            sackedBytes -= Int(existing.right - existing.left)
            if existing.left < left { left = existing.left }
            if right < existing.right { right = existing.right }
        }
        ranges.insert(TCPSACKBlock(left: left, right: right), at: index)
        sackedBytes += Int(right - left)
    }

    /// SND.UNA moved to `unacknowledged`: forget what lies below it.
    mutating func acknowledge(upTo unacknowledged: TCPSequenceNumber) {
        while let first = ranges.first, !(unacknowledged < first.right) {
            ranges.removeFirst()
            sackedBytes -= Int(first.right - first.left)
        }
        if let first = ranges.first, first.left < unacknowledged {
            sackedBytes -= Int(unacknowledged - first.left)
            ranges[0].left = unacknowledged
        }
    }

    mutating func clear() {
        ranges.removeAll()
        sackedBytes = 0
    }

    /// True if `sequence` is covered by a SACK block.
    func isSacked(_ sequence: TCPSequenceNumber) -> Bool {
        ranges.contains { !(sequence < $0.left) && sequence < $0.right }
    }

    /// RFC 6675 §4 IsLost: at least DupThresh discontiguous segments, or that many MSS of bytes, are SACKed above.
    func isLost(_ sequence: TCPSequenceNumber, mss: Int, duplicateThreshold: Int = 3) -> Bool {
        var above = 0
        for range in ranges where sequence < range.right {
            above += Int(range.right - (sequence < range.left ? range.left : sequence))
        }
        return above >= duplicateThreshold * mss || ranges.filter({ sequence < $0.left }).count >= duplicateThreshold
    }

    /// The first byte at or after `from` that is not SACKed and lies below the highest SACKed byte, with the length
    /// of the hole it starts: what to retransmit next (RFC 6675 NextSeg rule 1).
    func nextHole(from: TCPSequenceNumber) -> (start: TCPSequenceNumber, length: Int)? {
        var position = from
        for range in ranges {
            if position < range.left { return (position, Int(range.left - position)) }
            if position < range.right { position = range.right }
        }
        return nil
    }

    /// Unsacked bytes in `[from, highestSacked)`: holes not yet retransmitted when `from` is HighRxt.
    func holeBytes(from: TCPSequenceNumber) -> Int {
        var total = 0
        var position = from
        for range in ranges {
            if position < range.left { total += Int(range.left - position) }
            if position < range.right { position = range.right }
        }
        return total
    }
}
