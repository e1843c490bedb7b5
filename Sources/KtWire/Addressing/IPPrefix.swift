/// A network prefix (`10.96.0.0/12`, `fd00::/8`): an address whose host bits are zero, and a length.
///
/// The operations are the ones route planning needs: does a prefix contain an address or another prefix, do two
/// prefixes overlap, what is the smallest prefix covering a set of addresses, and what is left of a prefix after
/// cutting others out of it (used to keep the API server's address out of the tunnel).
public struct IPPrefix<Address: IPAddressProtocol>: Hashable, Sendable {
    /// The first address of the prefix; its host bits are zero.
    public let network: Address
    /// The number of leading bits that are fixed, `0...Address.bitWidth`.
    public let length: Int

    /// Makes the prefix of `length` bits that contains `address`, clearing the host bits.
    public init(containing address: Address, length: Int) {
        precondition((0...Address.bitWidth).contains(length), "prefix length \(length) out of range")
        self.length = length
        self.network = Address(bits: address.bits & Self.mask(length))
    }

    /// The prefix that holds exactly one address.
    public init(host address: Address) {
        self.init(containing: address, length: Address.bitWidth)
    }

    /// The netmask of a prefix length as bits: `/8` → `0xFF00_0000`.
    static func mask(_ length: Int) -> Address.Bits {
        length == 0 ? 0 : ~Address.Bits(0) << (Address.bitWidth - length)
    }

    /// The netmask as bits.
    public var maskBits: Address.Bits { Self.mask(length) }

    /// The last address of the prefix.
    public var last: Address { Address(bits: network.bits | ~maskBits) }

    // MARK: - Relations

    /// True if `address` lies inside this prefix.
    public func contains(_ address: Address) -> Bool {
        address.bits & maskBits == network.bits
    }

    /// True if every address of `other` lies inside this prefix.
    public func contains(_ other: IPPrefix) -> Bool {
        other.length >= length && contains(other.network)
    }

    /// True if the prefixes share at least one address. Two prefixes either nest or are disjoint.
    public func overlaps(_ other: IPPrefix) -> Bool {
        contains(other) || other.contains(self)
    }

    /// The two halves of this prefix, or `nil` for a single address.
    public var halves: (IPPrefix, IPPrefix)? {
        guard length < Address.bitWidth else { return nil }
        let low = IPPrefix(containing: network, length: length + 1)
        let high = IPPrefix(
            containing: Address(bits: network.bits | (Address.Bits(1) << (Address.bitWidth - length - 1))),
            length: length + 1)
        return (low, high)
    }

    // MARK: - Covering and subtracting

    /// The smallest prefix that contains every address given, or `nil` for none.
    public static func covering(_ addresses: some Sequence<Address>) -> IPPrefix? {
        var iterator = addresses.makeIterator()
        guard let first = iterator.next() else { return nil }
        var low = first.bits
        var high = first.bits
        while let next = iterator.next() {
            low = min(low, next.bits)
            high = max(high, next.bits)
        }
        // The common leading bits of the lowest and highest address are shared by everything between.
        let length = (low ^ high).leadingZeroBitCount
        return IPPrefix(containing: Address(bits: low), length: length)
    }

    /// The smallest prefix that contains every prefix given, or `nil` for none.
    public static func covering(_ prefixes: some Sequence<IPPrefix>) -> IPPrefix? {
        covering(prefixes.lazy.flatMap { [$0.network, $0.last] })
    }

    /// What is left of this prefix once every address of `excluded` is removed, as the fewest prefixes that
    /// cover exactly that, in ascending order.
    public func subtracting(_ excluded: some Sequence<IPPrefix>) -> [IPPrefix] {
        let relevant = excluded.filter { overlaps($0) }
        var result: [IPPrefix] = []
        func split(_ prefix: IPPrefix, _ cuts: [IPPrefix]) {
            let inside = cuts.filter { prefix.overlaps($0) }
            if inside.isEmpty {
                result.append(prefix)
                return
            }
            if inside.contains(where: { $0.contains(prefix) }) { return }
            // Some cut lies strictly inside, so the prefix is larger than one address and has halves.
            guard let (low, high) = prefix.halves else {
                preconditionFailure("a single-address prefix is either contained in a cut or disjoint from it")
            }
            split(low, inside)
            split(high, inside)
        }
        split(self, relevant)
        return result
    }
}

public typealias IPv4Prefix = IPPrefix<IPv4Address>
public typealias IPv6Prefix = IPPrefix<IPv6Address>

// MARK: - Text

extension IPPrefix: CustomStringConvertible, LosslessStringConvertible {
    public var description: String { "\(network)/\(length)" }

    /// Parses `address/length`; a bare address is a single-host prefix. `nil` for anything else, including
    /// text whose host bits are set (use ``parse(_:)`` for the reason).
    public init?(_ text: String) {
        guard let value = try? Self.parse(text) else { return nil }
        self = value
    }

    /// Parses `address/length` (a bare address is a single-host prefix), saying what is wrong when it cannot.
    /// Text with host bits set (`10.1.2.3/8`) is refused, naming the prefix that was probably meant.
    public static func parse(_ text: String) throws(WireError) -> IPPrefix {
        let parts = text.split(separator: "/", maxSplits: 1, omittingEmptySubsequences: false)
        guard let address = Address(String(parts[0])) else {
            throw WireError(
                .invalidValue, "prefix.address", "'\(parts[0])' is not an IPv\(Address.bitWidth == 32 ? 4 : 6) address")
        }
        guard parts.count == 2 else { return IPPrefix(host: address) }
        let lengthText = parts[1]
        guard !lengthText.isEmpty, lengthText.count <= 3, lengthText.allSatisfy({ $0.isASCII && $0.isNumber }),
            let length = Int(lengthText), (0...Address.bitWidth).contains(length)
        else {
            throw WireError(
                .invalidValue, "prefix.length", "'\(lengthText)' is not a length in 0...\(Address.bitWidth)")
        }
        let prefix = IPPrefix(containing: address, length: length)
        guard prefix.network == address else {
            throw WireError(.invalidValue, "prefix.address", "host bits are set in \(text); did you mean \(prefix)?")
        }
        return prefix
    }
}

/// A prefix of either family, as a command line or a route table gives them.
public enum AnyIPPrefix: Hashable, Sendable, CustomStringConvertible {
    case v4(IPv4Prefix)
    case v6(IPv6Prefix)

    /// Parses an IPv4 or IPv6 prefix or bare address, saying what is wrong when it cannot.
    public static func parse(_ text: String) throws(WireError) -> AnyIPPrefix {
        if text.contains(":") { return .v6(try IPv6Prefix.parse(text)) }
        return .v4(try IPv4Prefix.parse(text))
    }

    public var description: String {
        switch self {
        case .v4(let prefix): return prefix.description
        case .v6(let prefix): return prefix.description
        }
    }

    /// True if the two prefixes are of one family and share an address.
    public func overlaps(_ other: AnyIPPrefix) -> Bool {
        switch (self, other) {
        case (.v4(let a), .v4(let b)): return a.overlaps(b)
        case (.v6(let a), .v6(let b)): return a.overlaps(b)
        default: return false
        }
    }

    /// True if every address of `other` lies in this prefix (always false across families).
    public func contains(_ other: AnyIPPrefix) -> Bool {
        switch (self, other) {
        case (.v4(let a), .v4(let b)): return a.contains(b)
        case (.v6(let a), .v6(let b)): return a.contains(b)
        default: return false
        }
    }
}
