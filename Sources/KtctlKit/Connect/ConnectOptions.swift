import Foundation
import Glibc
import KtEngine
import KtWire

/// `ktctl connect`'s own flags.
public struct ConnectOptions: Sendable {
    public enum Mode: String, Sendable, CaseIterable {
        case tun
        case socks
    }

    public var cluster: ClusterOptions
    public var mode: Mode = .tun
    public var tunName = "kt0"
    /// The TUN's own address (the DNS resolver listens there): a /30 unlikely to be anyone's.
    public var tunAddress = "198.18.20.1"
    /// The TUN's MTU (and so the MSS the kernel and the stack announce).
    public var mtu = 1500
    public var includeIPs: [AnyIPPrefix] = []
    public var excludeIPs: [AnyIPPrefix] = []
    public var forceRoutes = false
    public var clusterDomain = "cluster.local"
    /// `auto`, `resolved`, `resolv.conf`, `none`. `auto` is `resolved` (per-link DNS on the TUN) where
    /// systemd-resolved answers the machine's lookups, and `resolv.conf` (the file rewritten, its old nameservers the
    /// resolver's upstreams) elsewhere.
    public var dnsMode = "auto"
    public var proxyAddress = "127.0.0.1"
    public var proxyPort = 2223
    /// Who may use socks mode's proxy: by default only the user running ktctl (and the one who ran sudo).
    public var proxyAccess = ProxyAccess.ownerOnly
    /// Where ktctl keeps its journal and pid file (`~/.kt`).
    public var stateDirectory: String
    /// The session Lease's duration in seconds (renewed every third of it).
    public var leaseDuration = SessionLease.defaultDuration

    public init(cluster: ClusterOptions, stateDirectory: String) {
        self.cluster = cluster
        self.stateDirectory = stateDirectory
    }
}

extension ConnectOptions {
    /// `--proxy-allow-users` (names or uids, or `all`) and `--proxy-auth user:password` as the proxy's access rule.
    public mutating func setProxyAccess(allow: String?, auth: String?) throws {
        var access = ProxyAccess.ownerOnly
        if let allow {
            if allow == "all" {
                access.allowedUsers = nil
            } else {
                for word in allow.split(separator: ",").map({ $0.trimmingCharacters(in: .whitespaces) }) {
                    if let uid = UInt32(word) {
                        access.allowedUsers?.insert(uid)
                    } else if let entry = getpwnam(word) {
                        access.allowedUsers?.insert(entry.pointee.pw_uid)
                    } else {
                        throw ConnectError.badFlag("--proxy-allow-users", "no user '\(word)' on this machine")
                    }
                }
            }
        }
        if let auth {
            guard let colon = auth.firstIndex(of: ":"), colon != auth.startIndex else {
                throw ConnectError.badFlag("--proxy-auth", "expected user:password")
            }
            let username = String(auth[..<colon])
            let password = String(auth[auth.index(after: colon)...])
            guard username.utf8.count <= 255, password.utf8.count <= 255 else {
                throw ConnectError.badFlag("--proxy-auth", "the username and the password are at most 255 bytes each")
            }
            access.credentials = .init(username: username, password: password)
        }
        proxyAccess = access
    }
}

/// What went wrong, in words that say what to do next.
public enum ConnectError: Error, CustomStringConvertible, Sendable {
    case badFlag(String, String)
    case needsRoot
    case shadow(String)
    /// A pod or host key that is not the shadow this session made.
    case impostor(String)
    case routes(String)
    case permissions(String)
    case other(String)

    public var description: String {
        switch self {
        case .badFlag(let flag, let why): return "\(flag): \(why)"
        case .needsRoot:
            return "tun mode needs root (it makes a TUN device and routes); run it with sudo, or use --mode socks"
        case .shadow(let why): return why
        case .impostor(let why): return why
        case .routes(let why): return why
        case .permissions(let why): return why
        case .other(let why): return why
        }
    }
}
