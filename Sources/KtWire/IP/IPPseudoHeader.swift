/// The addresses that TCP, UDP and ICMPv6 checksums cover besides their own bytes (RFC 9293 §3.1,
/// RFC 768, RFC 8200 §8.1).
public enum IPPseudoHeader: Hashable, Sendable {
    case v4(source: IPv4Address, destination: IPv4Address)
    case v6(source: IPv6Address, destination: IPv6Address)

    /// Adds this pseudo-header for an upper-layer message of `length` bytes.
    public func add(to checksum: inout InternetChecksum, protocol number: IPProtocol, length: Int) {
        switch self {
        case .v4(let source, let destination):
            checksum.addPseudoHeader(source: source, destination: destination, protocol: number, length: length)
        case .v6(let source, let destination):
            checksum.addPseudoHeader(source: source, destination: destination, protocol: number, length: length)
        }
    }
}
