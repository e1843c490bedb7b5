/// An IP protocol number (IPv4 `protocol`, IPv6 `next header`), as assigned by IANA.
public struct IPProtocol: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public var rawValue: UInt8

    public init(rawValue: UInt8) {
        self.rawValue = rawValue
    }

    public static let hopByHop = IPProtocol(rawValue: 0)
    public static let icmp = IPProtocol(rawValue: 1)
    public static let tcp = IPProtocol(rawValue: 6)
    public static let udp = IPProtocol(rawValue: 17)
    public static let ipv6Routing = IPProtocol(rawValue: 43)
    public static let ipv6Fragment = IPProtocol(rawValue: 44)
    public static let esp = IPProtocol(rawValue: 50)
    public static let authenticationHeader = IPProtocol(rawValue: 51)
    public static let icmpv6 = IPProtocol(rawValue: 58)
    public static let ipv6NoNextHeader = IPProtocol(rawValue: 59)
    public static let ipv6DestinationOptions = IPProtocol(rawValue: 60)

    public var description: String {
        switch self {
        case .icmp: return "icmp"
        case .tcp: return "tcp"
        case .udp: return "udp"
        case .icmpv6: return "icmpv6"
        default: return "proto-\(rawValue)"
        }
    }
}

/// The first byte(s) of an IP header split into the DiffServ code point and ECN bits (RFC 2474, RFC 3168).
public struct TrafficClass: Hashable, Sendable {
    /// The DiffServ code point, 6 bits.
    public var dscp: UInt8
    /// The ECN field, 2 bits: 0 not-ECT, 1 ECT(1), 2 ECT(0), 3 CE.
    public var ecn: UInt8

    /// Makes a traffic class; values are masked to their widths.
    public init(dscp: UInt8 = 0, ecn: UInt8 = 0) {
        self.dscp = dscp & 0x3F
        self.ecn = ecn & 0x03
    }

    /// Splits the 8-bit TOS / traffic class byte.
    public init(byte: UInt8) {
        self.init(dscp: byte >> 2, ecn: byte & 0x03)
    }

    /// The 8-bit TOS / traffic class byte.
    public var byte: UInt8 { dscp << 2 | ecn }
}
