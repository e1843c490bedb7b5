import CNetlink
import Glibc
import KtWire

/// Questions about the machine's sockets, asked of the kernel through NETLINK_SOCK_DIAG (as ss(8) asks them): one
/// request and one answer for one socket, however many sockets the machine has.
public enum SocketDiag {
    /// The uid owning the TCP socket whose local end is `local`:`localPort` and remote end `remote`:`remotePort`.
    /// Both addresses must be of one family (an IPv4-mapped IPv6 address is asked as IPv4). `.failure` with ENOENT:
    /// no such socket; another code: the kernel could not be asked (no sock_diag support).
    public static func tcpOwner(
        local: IPAddress, localPort: UInt16, remote: IPAddress, remotePort: UInt16
    ) -> Result<UInt32, NetlinkError> {
        var uid: UInt32 = 0
        let result: Int32
        switch (local.unmapped, remote.unmapped) {
        case (.v4(let here), .v4(let there)):
            let a = withUnsafeBytes(of: here.bits.bigEndian) { Array($0) }
            let b = withUnsafeBytes(of: there.bits.bigEndian) { Array($0) }
            result = cnl_tcp_socket_owner(AF_INET, a, localPort, b, remotePort, &uid)
        case (.v6(let here), .v6(let there)):
            let a = withUnsafeBytes(of: here.bits.bigEndian) { Array($0) }
            let b = withUnsafeBytes(of: there.bits.bigEndian) { Array($0) }
            result = cnl_tcp_socket_owner(AF_INET6, a, localPort, b, remotePort, &uid)
        default:
            return .failure(NetlinkError(operation: "find the owner of a TCP socket", code: EAFNOSUPPORT))
        }
        guard result == 0 else {
            return .failure(NetlinkError(operation: "find the owner of a TCP socket", code: -result))
        }
        return .success(uid)
    }
}

extension IPAddress {
    /// An IPv4-mapped IPv6 address as the IPv4 address it carries; any other address as it is.
    fileprivate var unmapped: IPAddress {
        if case .v6(let v6) = self, v6.bits >> 32 == 0xffff {
            return .v4(IPv4Address(bits: UInt32(truncatingIfNeeded: v6.bits)))
        }
        return self
    }
}
