import Glibc
import KtWire
import NIOCore

extension SocketAddress {
    /// The socket address for `address` and `port`.
    public init(_ address: IPAddress, port: Int) {
        switch address {
        case .v4(let v4):
            var raw = sockaddr_in()
            raw.sin_family = sa_family_t(AF_INET)
            raw.sin_port = in_port_t(UInt16(truncatingIfNeeded: port)).bigEndian
            raw.sin_addr.s_addr = v4.bits.bigEndian
            self.init(raw, host: "")
        case .v6(let v6):
            var raw = sockaddr_in6()
            raw.sin6_family = sa_family_t(AF_INET6)
            raw.sin6_port = in_port_t(UInt16(truncatingIfNeeded: port)).bigEndian
            withUnsafeMutableBytes(of: &raw.sin6_addr) { bytes in
                let big = v6.bits.bigEndian
                withUnsafeBytes(of: big) { bytes.copyMemory(from: $0) }
            }
            self.init(raw, host: "")
        }
    }

    /// The IP address of an IPv4 or IPv6 socket address; nil for Unix domain sockets.
    public var ipAddressValue: IPAddress? {
        switch self {
        case .v4(let address):
            return .v4(KtWire.IPv4Address(bits: UInt32(bigEndian: address.address.sin_addr.s_addr)))
        case .v6(let address):
            var bits: UInt128 = 0
            withUnsafeMutableBytes(of: &bits) { target in
                withUnsafeBytes(of: address.address.sin6_addr) { target.copyMemory(from: $0) }
            }
            return .v6(KtWire.IPv6Address(bits: UInt128(bigEndian: bits)))
        case .unixDomainSocket:
            return nil
        }
    }
}

extension SocketAddress {
    /// `10.0.0.1:80` or `[fd00::1]:80`, for logs and messages (NIO's own description repeats the address).
    public var endpoint: String {
        guard let address = ipAddressValue else { return description }
        switch address {
        case .v4: return "\(address):\(port ?? 0)"
        case .v6: return "[\(address)]:\(port ?? 0)"
        }
    }
}
