/// A point on the engine's monotonic clock, in nanoseconds. The stack never reads a clock: every call that can
/// start or fire a timer is given `now`.
public struct StackInstant: Hashable, Sendable, Comparable, CustomStringConvertible {
    public var nanoseconds: UInt64

    public init(nanoseconds: UInt64) { self.nanoseconds = nanoseconds }

    public static let zero = StackInstant(nanoseconds: 0)
    /// Later than any real deadline.
    public static let distantFuture = StackInstant(nanoseconds: .max)

    public static func < (lhs: StackInstant, rhs: StackInstant) -> Bool { lhs.nanoseconds < rhs.nanoseconds }

    public static func + (lhs: StackInstant, rhs: StackDuration) -> StackInstant {
        let (sum, overflow) = lhs.nanoseconds.addingReportingOverflow(rhs.nanoseconds)
        return StackInstant(nanoseconds: overflow ? .max : sum)
    }

    /// How long from `earlier` to `self`; zero if `earlier` is later.
    public func since(_ earlier: StackInstant) -> StackDuration {
        StackDuration(nanoseconds: nanoseconds > earlier.nanoseconds ? nanoseconds - earlier.nanoseconds : 0)
    }

    public var description: String { "t+\(Double(nanoseconds) / 1e6)ms" }
}

/// A length of time in nanoseconds.
public struct StackDuration: Hashable, Sendable, Comparable, CustomStringConvertible {
    public var nanoseconds: UInt64

    public init(nanoseconds: UInt64) { self.nanoseconds = nanoseconds }

    public static func milliseconds(_ value: UInt64) -> StackDuration { StackDuration(nanoseconds: value * 1_000_000) }
    public static func microseconds(_ value: UInt64) -> StackDuration { StackDuration(nanoseconds: value * 1_000) }
    public static func seconds(_ value: UInt64) -> StackDuration { StackDuration(nanoseconds: value * 1_000_000_000) }
    public static let zero = StackDuration(nanoseconds: 0)

    public static func < (lhs: StackDuration, rhs: StackDuration) -> Bool { lhs.nanoseconds < rhs.nanoseconds }
    public static func + (lhs: StackDuration, rhs: StackDuration) -> StackDuration {
        StackDuration(nanoseconds: lhs.nanoseconds &+ rhs.nanoseconds)
    }
    public static func * (lhs: StackDuration, rhs: UInt64) -> StackDuration {
        let (product, overflow) = lhs.nanoseconds.multipliedReportingOverflow(by: rhs)
        return StackDuration(nanoseconds: overflow ? .max : product)
    }

    public var seconds: Double { Double(nanoseconds) / 1e9 }

    public var description: String { "\(Double(nanoseconds) / 1e6)ms" }
}
