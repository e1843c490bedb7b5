/// An IPv6 address, held as a 128-bit number in host order.
public struct IPv6Address: Hashable, Sendable, Comparable {
    /// The address as a number: `::1` is `1`.
    public var bits: UInt128

    /// Makes an address from its numeric value.
    public init(bits: UInt128) {
        self.bits = bits
    }

    /// Makes an address from its eight 16-bit groups, first group first.
    public init(groups: [UInt16]) {
        precondition(groups.count == 8, "an IPv6 address has eight groups, got \(groups.count)")
        var bits: UInt128 = 0
        for group in groups { bits = bits << 16 | UInt128(group) }
        self.bits = bits
    }

    /// `::`.
    public static let any = IPv6Address(bits: 0)
    /// `::1`.
    public static let loopback = IPv6Address(bits: 1)

    /// The eight 16-bit groups, first group first.
    public var groups: [UInt16] {
        (0..<8).map { UInt16(truncatingIfNeeded: bits >> (112 - 16 * UInt128($0))) }
    }

    /// The embedded IPv4 address of an IPv4-mapped address (`::ffff:a.b.c.d`), else `nil`.
    public var ipv4Mapped: IPv4Address? {
        guard bits >> 32 == 0xFFFF else { return nil }
        return IPv4Address(bits: UInt32(truncatingIfNeeded: bits))
    }

    /// True for link-local unicast `fe80::/10`.
    public var isLinkLocal: Bool { bits >> 118 == 0x3FA }

    /// True for multicast `ff00::/8`.
    public var isMulticast: Bool { bits >> 120 == 0xFF }

    public static func < (lhs: IPv6Address, rhs: IPv6Address) -> Bool { lhs.bits < rhs.bits }
}

// MARK: - Text

extension IPv6Address: LosslessStringConvertible {
    /// Parses RFC 4291 §2.2 text: up to eight hex groups with at most one `::`, optionally ending in a dotted
    /// IPv4 address (`::ffff:10.0.0.1`). Zone suffixes (`%eth0`) are not addresses and are refused.
    public init?(_ text: String) {
        guard let value = Self.parse(Array(text.utf8)) else { return nil }
        self = value
    }

    static func parse(_ utf8: [UInt8]) -> IPv6Address? {
        guard utf8.count >= 2, utf8.count <= 45 else { return nil }
        var head: [UInt16] = []
        var tail: [UInt16] = []
        var sawDoubleColon = false
        var index = 0
        // A leading "::" is the only place a group list may start with a colon.
        if utf8[0] == UInt8(ascii: ":") {
            guard utf8[1] == UInt8(ascii: ":") else { return nil }
            sawDoubleColon = true
            index = 2
            if index == utf8.count { return IPv6Address(bits: 0) }
        }
        while index < utf8.count {
            // Read one group: hex digits up to the next colon, or a dotted quad at the very end.
            var end = index
            while end < utf8.count, utf8[end] != UInt8(ascii: ":") { end += 1 }
            let piece = utf8[index..<end]
            if piece.contains(UInt8(ascii: ".")) {
                guard end == utf8.count, let v4 = IPv4Address.parse(piece) else { return nil }
                let groups = [UInt16(truncatingIfNeeded: v4.bits >> 16), UInt16(truncatingIfNeeded: v4.bits)]
                if sawDoubleColon { tail += groups } else { head += groups }
                index = end
                break
            }
            guard !piece.isEmpty, piece.count <= 4 else { return nil }
            var group: UInt16 = 0
            for byte in piece {
                guard let digit = hexValue(byte) else { return nil }
                group = group << 4 | UInt16(digit)
            }
            if sawDoubleColon { tail.append(group) } else { head.append(group) }
            index = end
            if index == utf8.count { break }
            // At a colon: either a single separator or the one "::".
            index += 1
            if index < utf8.count, utf8[index] == UInt8(ascii: ":") {
                guard !sawDoubleColon else { return nil }
                sawDoubleColon = true
                index += 1
                if index == utf8.count { break }
            } else if index == utf8.count {
                return nil  // a trailing single colon
            }
        }
        let count = head.count + tail.count
        if sawDoubleColon {
            guard count <= 7 else { return nil }
        } else {
            guard count == 8 else { return nil }
        }
        return IPv6Address(groups: head + Array(repeating: 0, count: 8 - count) + tail)
    }

    /// RFC 5952 text: lower case, no leading zeros, the longest run of two or more zero groups as `::` (the
    /// first one on a tie), and IPv4-mapped addresses with a dotted tail.
    public var description: String {
        if let v4 = ipv4Mapped { return "::ffff:\(v4)" }
        let groups = self.groups
        var bestStart = -1
        var bestLength = 1
        var runStart = -1
        for index in 0...8 {
            if index < 8, groups[index] == 0 {
                if runStart < 0 { runStart = index }
            } else if runStart >= 0 {
                if index - runStart > bestLength {
                    bestStart = runStart
                    bestLength = index - runStart
                }
                runStart = -1
            }
        }
        func hex(_ range: Range<Int>) -> String {
            groups[range].map { String($0, radix: 16) }.joined(separator: ":")
        }
        guard bestStart >= 0 else { return hex(0..<8) }
        return hex(0..<bestStart) + "::" + hex((bestStart + bestLength)..<8)
    }
}

/// The value of one ASCII hex digit, or `nil`.
@inline(__always)
func hexValue(_ byte: UInt8) -> UInt8? {
    switch byte {
    case UInt8(ascii: "0")...UInt8(ascii: "9"): return byte - UInt8(ascii: "0")
    case UInt8(ascii: "a")...UInt8(ascii: "f"): return byte - UInt8(ascii: "a") + 10
    case UInt8(ascii: "A")...UInt8(ascii: "F"): return byte - UInt8(ascii: "A") + 10
    default: return nil
    }
}
