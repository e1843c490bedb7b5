import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

/// The routes in force, replaced whole when the sessions' Leases change; read for each request.
public final class RouteStore: Sendable {
    private let state = NIOLockedValueBox<(table: RouteTable, synced: Bool)>((RouteTable(), false))

    public init() {}

    public var table: RouteTable { state.withLockedValue { $0.table } }
    /// Whether the routes have been read from their source at least once (the router listens only then).
    public var synced: Bool { state.withLockedValue { $0.synced } }

    public func replace(_ table: RouteTable) {
        state.withLockedValue { $0 = (table, true) }
    }
}

/// What every connection of one listening port needs: the routes, the port's default upstream, the log.
public struct ProxyContext: Sendable {
    public var routes: RouteStore
    /// The port requests arrive on; a route's upstream (a shadow) listens on the same port.
    public var port: Int
    /// Where unrouted requests go: the stuntman Service (the original pods) on its port for this one.
    public var defaultUpstream: Upstream
    public var defaultPort: Int
    public var logger: Logger
    /// nil: no access log.
    public var accessLog: AccessLog?

    public init(
        routes: RouteStore, port: Int, defaultUpstream: Upstream, defaultPort: Int, logger: Logger,
        accessLog: AccessLog?
    ) {
        self.routes = routes
        self.port = port
        self.defaultUpstream = defaultUpstream
        self.defaultPort = defaultPort
        self.logger = logger
        self.accessLog = accessLog
    }

    /// The decision for a request with these headers: the upstream, its port, and the words the access log gives.
    func decide(_ values: (String) -> [String]) -> (upstream: Upstream, port: Int, why: String) {
        if let route = routes.table.route(values) {
            return (route.upstream, port, "\(route.header): \(route.value)")
        }
        return (defaultUpstream, defaultPort, "default")
    }

    /// Connects to `upstream` on `eventLoop` (the caller's, so both halves of a proxied exchange share one loop).
    func connect(
        _ upstream: Upstream, port: Int, on eventLoop: any EventLoop,
        initializer: @escaping @Sendable (any Channel) -> EventLoopFuture<Void>
    ) -> EventLoopFuture<any Channel> {
        ClientBootstrap(group: eventLoop)
            .channelOption(.tcpOption(.tcp_nodelay), value: 1)
            .connectTimeout(.seconds(5))
            .channelInitializer(initializer)
            .connect(host: upstream.host, port: port)
    }

    func log(_ line: @autoclosure () -> String) {
        accessLog?.add(line())
    }
}

/// `502 Bad Gateway`'s body: which upstream, and why.
func badGatewayText(_ upstream: Upstream, port: Int, _ error: Error) -> String {
    "kt-router: upstream \(upstream.name) (\(upstream.host):\(port)) is not answering: \(reason(error))\n"
}

/// A connection error in words: the system's for an errno (`Connection refused`), else the error's own.
func reason(_ error: Error) -> String {
    var error = error
    if let connection = error as? NIOConnectionError, let first = connection.connectionErrors.first {
        error = first.error
    }
    if let io = error as? IOError { return String(cString: strerror(io.errnoCode)) }
    if let channel = error as? ChannelError, channel == .eof { return "it closed the connection" }
    return "\(error)"
}
