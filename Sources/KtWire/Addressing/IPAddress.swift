/// What IPv4 and IPv6 addresses share, so that prefixes are written once for both families.
public protocol IPAddressProtocol: Hashable, Sendable, Comparable, LosslessStringConvertible {
    /// The unsigned integer that holds the address: `UInt32` or `UInt128`.
    associatedtype Bits: FixedWidthInteger & UnsignedInteger & Sendable
    /// The address as a number in host order.
    var bits: Bits { get }
    /// Makes an address from its numeric value.
    init(bits: Bits)
}

extension IPv4Address: IPAddressProtocol {}
extension IPv6Address: IPAddressProtocol {}

extension IPAddressProtocol {
    /// The number of bits in an address of this family: 32 or 128.
    public static var bitWidth: Int { Bits.bitWidth }
}

/// An address of either family.
public enum IPAddress: Hashable, Sendable, LosslessStringConvertible {
    case v4(IPv4Address)
    case v6(IPv6Address)

    /// Parses an IPv4 or IPv6 address; `nil` if the text is neither.
    public init?(_ text: String) {
        if let v4 = IPv4Address(text) {
            self = .v4(v4)
        } else if let v6 = IPv6Address(text) {
            self = .v6(v6)
        } else {
            return nil
        }
    }

    public var description: String {
        switch self {
        case .v4(let address): return address.description
        case .v6(let address): return address.description
        }
    }
}
