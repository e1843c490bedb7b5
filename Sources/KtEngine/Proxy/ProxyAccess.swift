import Foundation
import Glibc
import KtTun
import KtWire
import NIOCore

/// Who may use socks mode's proxy. By default only the user who runs ktctl (and, under sudo, the user who ran sudo):
/// a proxy into a cluster on 127.0.0.1 is otherwise open to every account on the machine. A local client's user is
/// the owner of its socket, asked of the kernel (sock_diag) or read from `/proc/net/tcp{,6}` (`/proc/net/udp{,6}` for UDP
/// ASSOCIATE datagrams); a
/// client that is not a local socket is refused unless anyone may connect. RFC 1929 username/password can be asked
/// for on top (SOCKS5), and as `Proxy-Authorization: Basic` (HTTP).
public struct ProxyAccess: Sendable, Hashable {
    /// Users allowed; nil: anyone who can reach the port.
    public var allowedUsers: Set<UInt32>?
    /// A username and password every client must give; nil: none asked for.
    public var credentials: Credentials?

    public struct Credentials: Sendable, Hashable {
        public var username: String
        public var password: String

        public init(username: String, password: String) {
            self.username = username
            self.password = password
        }
    }

    public init(allowedUsers: Set<UInt32>?, credentials: Credentials? = nil) {
        self.allowedUsers = allowedUsers
        self.credentials = credentials
    }

    /// The running user, and under sudo the one who ran it.
    public static var owners: Set<UInt32> {
        var users: Set<UInt32> = [getuid(), geteuid()]
        if let sudo = ProcessInfo.processInfo.environment["SUDO_UID"].flatMap(UInt32.init) { users.insert(sudo) }
        return users
    }

    /// Only this machine's owner(s).
    public static var ownerOnly: ProxyAccess { ProxyAccess(allowedUsers: owners) }

    /// For the summary line: `uid 0, 1000` or `anyone`.
    public var summary: String {
        let who =
            allowedUsers.map { "local users " + $0.sorted().map { Self.userName($0) }.joined(separator: ", ") }
            ?? "anyone who can reach it"
        return who + (credentials == nil ? "" : " with the username and password")
    }

    static func userName(_ uid: UInt32) -> String {
        if let entry = getpwuid(uid), let name = entry.pointee.pw_name { return "\(String(cString: name)) (\(uid))" }
        return "uid \(uid)"
    }

    public enum Verdict: Sendable, Hashable {
        case allowed
        case refused(String)
    }

    /// Whether the client at `peer`, connected to the proxy's `local`, may use it.
    public func admits(peer: SocketAddress?, local: SocketAddress?, udp: Bool = false) -> Verdict {
        guard let allowedUsers else { return .allowed }
        guard let peer, let local, let owner = SocketOwner.find(peer: peer, local: local, udp: udp) else {
            return .refused(
                "\(peer?.description ?? "a client") is not a socket of this machine's users; only "
                    + summary + " may use this proxy (--proxy-allow-users)")
        }
        guard allowedUsers.contains(owner) else {
            return .refused(
                "\(Self.userName(owner)) may not use this proxy: it serves \(summary) (--proxy-allow-users adds users)")
        }
        return .allowed
    }

    /// RFC 1929 / Basic: whether these are the credentials asked for.
    public func accepts(username: String, password: String) -> Bool {
        guard let credentials else { return true }
        // Compared whole, byte for byte, without an early exit on the first difference.
        return Self.sameBytes(username, credentials.username) && Self.sameBytes(password, credentials.password)
    }

    static func sameBytes(_ a: String, _ b: String) -> Bool {
        let left = Array(a.utf8)
        let right = Array(b.utf8)
        var difference = UInt8(left.count == right.count ? 0 : 1)
        for index in 0..<max(left.count, right.count) {
            difference |= (index < left.count ? left[index] : 0) ^ (index < right.count ? right[index] : 0)
        }
        return difference == 0
    }
}

/// Files under /proc read whole. Their size says 0, and Foundation's `String(contentsOfFile:)` read only the first
/// page of `/proc/net/tcp`: on a machine with a few hundred sockets the client's line was not in it, and the
/// proxy refused its own owner (seen under the full test suite's load).
public enum ProcFile {
    /// The most read from one file: `/proc/net/tcp` has 150 bytes a socket, so this is over 400 000 sockets.
    public static let maximumBytes = 64 << 20

    public static func read(_ path: String) -> String? {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 64 << 10)
        while bytes.count < maximumBytes {
            let count = Glibc.read(fd, &chunk, chunk.count)
            if count < 0 && errno == EINTR { continue }
            guard count > 0 else { break }
            bytes += chunk[..<count]
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}

extension IPAddress {
    /// 0.0.0.0 or ::, the address a socket bound to every address shows.
    var isUnspecified: Bool {
        switch self {
        case .v4(let address): return address.bits == 0
        case .v6(let address): return address.bits == 0
        }
    }
}

/// The owner of a local socket, from the kernel's socket tables.
public enum SocketOwner {
    /// The uid owning the socket whose local end is `peer` (the client's socket, seen from the proxy) and, for TCP,
    /// whose remote end is `local` (the proxy's side of the connection).
    public static func find(peer: SocketAddress, local: SocketAddress, udp: Bool) -> UInt32? {
        let files = udp ? ["/proc/net/udp", "/proc/net/udp6"] : ["/proc/net/tcp", "/proc/net/tcp6"]
        guard let peerEndpoint = Endpoint(peer), let localEndpoint = Endpoint(local) else { return nil }
        if !udp {
            // One question to the kernel for this socket: reading and parsing the whole table cost 5 to 40 ms per
            // connection once thousands of sockets (TIME-WAIT ones too) were listed. The table stays the way for
            // kernels without sock_diag.
            switch SocketDiag.tcpOwner(
                local: peerEndpoint.address, localPort: peerEndpoint.port, remote: localEndpoint.address,
                remotePort: localEndpoint.port)
            {
            case .success(let uid): return uid
            case .failure(let error) where error.code == ENOENT: return nil
            case .failure: break
            }
        }
        for file in files {
            guard let text = ProcFile.read(file) else { continue }
            if let uid = owner(in: text, local: peerEndpoint, remote: udp ? nil : localEndpoint) { return uid }
        }
        return nil
    }

    /// An address and port as the tables compare them (IPv4-mapped IPv6 as IPv4).
    public struct Endpoint: Hashable, Sendable {
        public var address: IPAddress
        public var port: UInt16

        public init(address: IPAddress, port: UInt16) {
            if case .v6(let v6) = address, v6.bits >> 32 == 0xffff {
                self.address = .v4(IPv4Address(bits: UInt32(truncatingIfNeeded: v6.bits)))
            } else {
                self.address = address
            }
            self.port = port
        }

        init?(_ address: SocketAddress) {
            guard let text = address.ipAddress, let ip = IPAddress(text), let port = address.port,
                let port16 = UInt16(exactly: port)
            else { return nil }
            self.init(address: ip, port: port16)
        }
    }

    /// The uid on the first line of a `/proc/net/{tcp,udp}{,6}` table whose local address is `local` (and remote
    /// address `remote`, when given). Without `remote` (an unconnected UDP socket, which the table lists with the
    /// address it is bound to: usually the wildcard) a socket bound to the wildcard on `local`'s port counts too.
    /// Total: any text gives an answer or nil.
    public static func owner(in table: String, local: Endpoint, remote: Endpoint?) -> UInt32? {
        for line in table.split(separator: "\n").dropFirst() {
            let fields = line.split(separator: " ")
            // sl, local_address, rem_address, st, tx:rx, tr:when, retrnsmt, uid, ...
            guard fields.count > 7, let here = parseEndpoint(fields[1]),
                here == local || (remote == nil && here.port == local.port && here.address.isUnspecified)
            else { continue }
            if let remote {
                guard let there = parseEndpoint(fields[2]), there == remote else { continue }
            }
            return UInt32(fields[7])
        }
        return nil
    }

    /// `0100007F:08AE` (IPv4: the address as the kernel's 32-bit word in host order, little-endian here) or 32 hex
    /// digits (IPv6: four such words), then the port in hex.
    public static func parseEndpoint(_ text: Substring) -> Endpoint? {
        let parts = text.split(separator: ":")
        guard parts.count == 2, let port = UInt16(parts[1], radix: 16) else { return nil }
        let hex = parts[0]
        func word(_ offset: Int) -> UInt32? {
            let start = hex.index(hex.startIndex, offsetBy: offset)
            guard let value = UInt32(hex[start..<hex.index(start, offsetBy: 8)], radix: 16) else { return nil }
            // The word's bytes in memory are the address in network order; the kernel printed them as a native
            // integer.
            return UInt32(bigEndian: value)
        }
        switch hex.count {
        case 8:
            guard let value = word(0) else { return nil }
            return Endpoint(address: .v4(IPv4Address(bits: value)), port: port)
        case 32:
            var bits: UInt128 = 0
            for index in 0..<4 {
                guard let value = word(index * 8) else { return nil }
                bits = bits << 32 | UInt128(value)
            }
            return Endpoint(address: .v6(IPv6Address(bits: bits)), port: port)
        default:
            return nil
        }
    }
}
