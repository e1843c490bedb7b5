/// An IPv4 address, held as a 32-bit number in host order.
public struct IPv4Address: Hashable, Sendable, Comparable {
    /// The address as a number: `10.0.0.1` is `0x0A00_0001`.
    public var bits: UInt32

    /// Makes an address from its numeric value.
    public init(bits: UInt32) {
        self.bits = bits
    }

    /// Makes `a.b.c.d`.
    public init(_ a: UInt8, _ b: UInt8, _ c: UInt8, _ d: UInt8) {
        bits = UInt32(a) << 24 | UInt32(b) << 16 | UInt32(c) << 8 | UInt32(d)
    }

    /// `0.0.0.0`.
    public static let any = IPv4Address(bits: 0)
    /// `127.0.0.1`.
    public static let loopback = IPv4Address(127, 0, 0, 1)
    /// `255.255.255.255`.
    public static let broadcast = IPv4Address(bits: .max)

    /// The four octets in network order.
    public var octets: (UInt8, UInt8, UInt8, UInt8) {
        (
            UInt8(truncatingIfNeeded: bits >> 24), UInt8(truncatingIfNeeded: bits >> 16),
            UInt8(truncatingIfNeeded: bits >> 8), UInt8(truncatingIfNeeded: bits)
        )
    }

    public static func < (lhs: IPv4Address, rhs: IPv4Address) -> Bool { lhs.bits < rhs.bits }

    /// True for `0.0.0.0/8`, `127.0.0.0/8`, multicast `224.0.0.0/4` and `255.255.255.255`: addresses that never
    /// name one remote host.
    public var isSpecial: Bool {
        let first = bits >> 24
        return first == 0 || first == 127 || first >= 224
    }
}

// MARK: - Text

extension IPv4Address: LosslessStringConvertible {
    /// Parses dotted-quad text (`10.96.0.10`): exactly four decimal octets, no leading zeros (which some tools
    /// read as octal), nothing else.
    public init?(_ text: String) {
        guard let value = Self.parse(text.utf8) else { return nil }
        self = value
    }

    /// Parses dotted-quad text from UTF-8 bytes; `nil` if it is not exactly an IPv4 address.
    static func parse<Bytes: Collection<UInt8>>(_ utf8: Bytes) -> IPv4Address? {
        var bits: UInt32 = 0
        var octets = 0
        var current: UInt32 = 0
        var digits = 0
        var leadingZero = false
        for byte in utf8 {
            switch byte {
            case UInt8(ascii: "0")...UInt8(ascii: "9"):
                if digits == 0 {
                    leadingZero = byte == UInt8(ascii: "0")
                } else if leadingZero {
                    return nil
                }
                current = current * 10 + UInt32(byte - UInt8(ascii: "0"))
                digits += 1
                if current > 255 { return nil }
            case UInt8(ascii: "."):
                guard digits > 0, octets < 3 else { return nil }
                bits = bits << 8 | current
                octets += 1
                current = 0
                digits = 0
            default:
                return nil
            }
        }
        guard digits > 0, octets == 3 else { return nil }
        return IPv4Address(bits: bits << 8 | current)
    }

    public var description: String {
        let (a, b, c, d) = octets
        return "\(a).\(b).\(c).\(d)"
    }
}
