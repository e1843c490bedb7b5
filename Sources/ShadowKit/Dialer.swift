import Glibc
import KtTunnel
import KtWire
import NIOCore
import NIOPosix

/// Dials TCP destinations for the client, resolving names the way the pod would (its hosts file, then its
/// nameservers with the search list), and says why a dial failed.
struct Dialer {
    let eventLoop: EventLoop
    let timeout: TimeAmount
    let hosts: HostsFile
    let nameservers: NameserverClient

    /// Connects to `host:port`. The socket comes back with `autoRead` off and remote half-closure allowed, ready to be
    /// glued to a flow.
    func dial(host: String, port: Int) -> EventLoopFuture<Channel> {
        let bootstrap = ClientBootstrap(group: eventLoop)
            .connectTimeout(timeout)
            .resolver(PodResolver(eventLoop: eventLoop, hosts: hosts, nameservers: nameservers))
            .channelOption(.tcpOption(.tcp_nodelay), value: 1)
            .channelOption(.autoRead, value: false)
            .channelOption(.allowRemoteHalfClosure, value: true)
        let literal = host.hasPrefix("[") && host.hasSuffix("]") ? String(host.dropFirst().dropLast()) : host
        if let address = IPAddress(literal) {
            return bootstrap.connect(to: SocketAddress(address, port: port))
        }
        return bootstrap.connect(host: host, port: port)
    }

    /// What the client is told about a failed dial.
    static func failure(for error: Error) -> DialFailure {
        if let refusal = error as? DialRefusal { return refusal.failure }
        if case ChannelError.connectTimeout = error { return .timedOut }
        if let error = error as? NIOConnectionError {
            if error.connectionErrors.isEmpty {
                // NXDOMAIN is an empty answer; an error means no nameserver answered at all.
                if let lookup = error.dnsAError ?? error.dnsAAAAError, error.dnsAError != nil, error.dnsAAAAError != nil
                {
                    return .other("looking up \(error.host) failed: \(lookup)")
                }
                return .nameNotFound
            }
            let failures = error.connectionErrors.map { failure(for: $0.error) }
            for preferred in [DialFailure.refused, .unreachable, .timedOut] where failures.contains(preferred) {
                return preferred
            }
            return failures.first ?? .other("\(error)")
        }
        if let error = error as? IOError {
            switch error.errnoCode {
            case ECONNREFUSED: return .refused
            case EHOSTUNREACH, ENETUNREACH, EADDRNOTAVAIL, ENETDOWN, EHOSTDOWN: return .unreachable
            case ETIMEDOUT: return .timedOut
            default: return .other(String(cString: strerror(error.errnoCode)))
            }
        }
        return .other("\(error)")
    }
}

/// NIO's resolver interface over the pod's hosts file and nameservers. A name that is in the hosts file is answered
/// from there alone, as glibc's `files dns` order does.
final class PodResolver: Resolver, @unchecked Sendable {
    let eventLoop: EventLoop
    let hosts: HostsFile
    let nameservers: NameserverClient
    /// One lookup answers both of NIO's queries; made by the first, on the event loop.
    private var lookup: EventLoopFuture<[IPAddress]>?

    init(eventLoop: EventLoop, hosts: HostsFile, nameservers: NameserverClient) {
        self.eventLoop = eventLoop
        self.hosts = hosts
        self.nameservers = nameservers
    }

    func initiateAQuery(host: String, port: Int) -> EventLoopFuture<[SocketAddress]> {
        addresses(host: host, port: port, v4: true)
    }

    func initiateAAAAQuery(host: String, port: Int) -> EventLoopFuture<[SocketAddress]> {
        addresses(host: host, port: port, v4: false)
    }

    func cancelQueries() {}

    private func addresses(host: String, port: Int, v4: Bool) -> EventLoopFuture<[SocketAddress]> {
        eventLoop.flatSubmit {
            let all: EventLoopFuture<[IPAddress]>
            if let lookup = self.lookup {
                all = lookup
            } else {
                let fromFile = self.hosts.addresses(for: host)
                all =
                    fromFile.isEmpty
                    ? self.nameservers.addresses(of: host) : self.eventLoop.makeSucceededFuture(fromFile)
                self.lookup = all
            }
            return all.map { addresses in
                addresses.filter { address in
                    if case .v4 = address { return v4 }
                    return !v4
                }.map { SocketAddress($0, port: port) }
            }
        }
    }
}
