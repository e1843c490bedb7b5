/// A TCP sequence or acknowledgement number: 32 bits that wrap (RFC 9293 §3.4).
///
/// Ordering is modulo 2^32: `a < b` means `b` lies less than 2^31 ahead of `a`. This is a total order only
/// within any window of 2^31 numbers, which is all TCP ever compares; it must not be used to sort numbers
/// that may lie further apart.
public struct TCPSequenceNumber: Hashable, Sendable, Comparable, CustomStringConvertible {
    /// The number as carried on the wire.
    public var rawValue: UInt32

    /// Makes a sequence number from its wire value.
    public init(_ rawValue: UInt32) {
        self.rawValue = rawValue
    }

    /// `lhs` advanced by `rhs` bytes, wrapping.
    public static func + (lhs: TCPSequenceNumber, rhs: UInt32) -> TCPSequenceNumber {
        TCPSequenceNumber(lhs.rawValue &+ rhs)
    }

    /// `lhs` advanced by `rhs` bytes, wrapping; `rhs` must fit the sequence space.
    public static func + (lhs: TCPSequenceNumber, rhs: Int) -> TCPSequenceNumber {
        TCPSequenceNumber(lhs.rawValue &+ UInt32(truncatingIfNeeded: rhs))
    }

    /// `lhs` moved back by `rhs` bytes, wrapping.
    public static func - (lhs: TCPSequenceNumber, rhs: UInt32) -> TCPSequenceNumber {
        TCPSequenceNumber(lhs.rawValue &- rhs)
    }

    /// Advances by `rhs` bytes, wrapping.
    public static func += (lhs: inout TCPSequenceNumber, rhs: UInt32) {
        lhs = lhs + rhs
    }

    /// The signed distance from `rhs` to `lhs`: positive when `lhs` is ahead.
    public static func - (lhs: TCPSequenceNumber, rhs: TCPSequenceNumber) -> Int32 {
        Int32(bitPattern: lhs.rawValue &- rhs.rawValue)
    }

    public static func < (lhs: TCPSequenceNumber, rhs: TCPSequenceNumber) -> Bool {
        lhs - rhs < 0
    }

    /// True if `self` lies in `[start, start + size)`, modulo 2^32 (RFC 9293 §3.10.7.4 acceptability test).
    public func isInWindow(start: TCPSequenceNumber, size: UInt32) -> Bool {
        rawValue &- start.rawValue < size
    }

    /// The later of two numbers in sequence order.
    public static func later(_ a: TCPSequenceNumber, _ b: TCPSequenceNumber) -> TCPSequenceNumber {
        a < b ? b : a
    }

    public var description: String { String(rawValue) }
}
