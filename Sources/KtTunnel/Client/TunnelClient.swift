import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import NIOSSH

/// How the client reaches the server and proves who it is.
public struct TunnelConfiguration: Sendable {
    /// The session key the server knows.
    public var key: SessionKey
    /// The user name to authenticate as (kt-shadow ignores it; a stock sshd needs a real account).
    public var username: String
    /// The server's host key, pinned: any other key is refused.
    public var hostKey: NIOSSHPublicKey?
    /// Or only its SHA256 fingerprint ("SHA256:…", from the shadow's first log line or its fingerprint file),
    /// pinned the same way. With neither set any key is accepted, which only tests of stock servers do.
    public var hostKeyFingerprint: String?
    /// SSH connections to stripe flows over (each is one TCP stream and one core's worth of crypto on each side).
    public var connections: Int
    /// Pings on kt-shadow's control channel; a connection whose pings go unanswered for `keepAliveTimeout` is closed
    /// and every flow on it fails.
    public var keepAliveInterval: TimeAmount
    public var keepAliveTimeout: TimeAmount

    public init(
        key: SessionKey, username: String = "kt", hostKey: NIOSSHPublicKey?, hostKeyFingerprint: String? = nil,
        connections: Int = 1,
        keepAliveInterval: TimeAmount = .seconds(5), keepAliveTimeout: TimeAmount = .seconds(15)
    ) {
        self.key = key
        self.username = username
        self.hostKey = hostKey
        self.hostKeyFingerprint = hostKeyFingerprint
        self.connections = max(1, connections)
        self.keepAliveInterval = keepAliveInterval
        self.keepAliveTimeout = keepAliveTimeout
    }
}

/// The client end of the tunnel: one or more SSH connections to kt-shadow (or any SSH server), carrying TCP flows
/// both ways, UDP datagrams and DNS.
public final class TunnelClient: Sendable {
    private let connections: [TunnelConnection]
    private let logger: Logger

    /// Opens `configuration.connections` SSH connections; `transport` makes each underlying byte stream (a TCP
    /// connection, or the port-forward WebSocket) on the event loop it is given. The stream must come with
    /// `autoRead` off: an SSH server speaks first, and bytes read before the SSH handler is in place would be lost.
    /// The client turns reading on once it is.
    public static func connect(
        group: EventLoopGroup, configuration: TunnelConfiguration, logger: Logger = Logger(label: "kt.tunnel"),
        transport: @escaping @Sendable (EventLoop) -> EventLoopFuture<Channel>
    ) async throws -> TunnelClient {
        var connections: [TunnelConnection] = []
        do {
            for index in 0..<configuration.connections {
                connections.append(
                    try await TunnelConnection.connect(
                        eventLoop: group.next(), configuration: configuration, index: index, logger: logger,
                        transport: transport))
            }
        } catch {
            for connection in connections { connection.close() }
            throw error
        }
        return TunnelClient(connections: connections, logger: logger)
    }

    /// A transport over plain TCP, with Nagle off so that small writes and EOFs are not held back 40 ms.
    public static func tcp(host: String, port: Int) -> @Sendable (EventLoop) -> EventLoopFuture<Channel> {
        { eventLoop in
            // On the loop's own thread: the socket belongs to that thread's network namespace.
            eventLoop.flatSubmit {
                ClientBootstrap(group: eventLoop)
                    .channelOption(.autoRead, value: false)
                    .channelOption(.tcpOption(.tcp_nodelay), value: 1)
                    .channelOption(.socketOption(.so_keepalive), value: 1)
                    .connectTimeout(.seconds(10))
                    .connect(host: host, port: port)
            }
        }
    }

    private init(connections: [TunnelConnection], logger: Logger) {
        self.connections = connections
        self.logger = logger
    }

    /// Whether the server is kt-shadow (dials report their failure reason, datagrams work).
    public var serverIsShadow: Bool { connections.allSatisfy(\.serverIsShadow) }

    /// Fires when the first connection ends; the client is then unusable.
    public var closeFuture: EventLoopFuture<Void> {
        let promise = connections[0].channel.eventLoop.makePromise(of: Void.self)
        for connection in connections { connection.closeFuture.whenComplete { _ in promise.succeed() } }
        return promise.futureResult
    }

    /// Why the client stopped working, once a connection was lost; nil while it works or after ``close()``.
    public var failure: TunnelError? {
        connections.lazy.compactMap(\.failure).first
    }

    /// Opens a session and asks the server to run `command`; whether it agreed. Only for tests of what a server
    /// refuses.
    /// The last keep-alive round trip of each connection (nil: none measured yet).
    public var roundTrips: [TimeAmount?] { connections.map(\.lastRoundTrip) }

    /// One ping on the first connection's control channel: a message to kt-shadow and back, through everything in
    /// between (the port-forward, SSH). The floor under a new flow's dial.
    public func ping() async throws -> TimeAmount {
        try await connections[0].ping().get()
    }

    public func probeCommand(_ command: String) async throws -> Bool {
        try await connections[0].probeCommand(command)
    }

    /// The connection with the fewest open flows.
    private var leastLoaded: TunnelConnection {
        connections.min { $0.openFlows < $1.openFlows } ?? connections[0]
    }

    /// Dials `host:port` from the server side and returns the flow once connected. With kt-shadow a failure says
    /// why (``DialFailure``); a stock server only says that it failed.
    public func openTCP(host: String, port: Int) async throws -> TunnelFlow {
        try await openTCPFuture(host: host, port: port).get()
    }

    /// ``openTCP(host:port:)`` as a future, completed on the connection's event loop: for callers that live on
    /// event loops (the stack, local forwards), with no hop through Swift concurrency on the way.
    public func openTCPFuture(host: String, port: Int) -> EventLoopFuture<TunnelFlow> {
        let connection = leastLoaded
        if let failure { return connection.channel.eventLoop.makeFailedFuture(failure) }
        return connection.openTCPFuture(host: host, port: port)
    }

    /// Asks the server to listen on `port` (0: any) and hand each accepted connection to `handler`; returns the
    /// port it listens on.
    public func listen(host: String = "0.0.0.0", port: Int, handler: @escaping @Sendable (TunnelFlow) -> Void)
        async throws -> Int
    {
        try await connections[0].listen(host: host, port: port) { flow in
            handler(flow)
            return flow.channel.eventLoop.makeSucceededVoidFuture()
        }
    }

    /// ``listen(host:port:handler:)`` where the handler decides whether to take each connection before its channel
    /// opens: a failed future refuses the channel, and kt-shadow answers the cluster's client with a reset (nothing
    /// listening locally looks the same from the cluster as from here).
    public func listen(
        host: String = "0.0.0.0", port: Int,
        accepting handler: @escaping @Sendable (TunnelFlow) -> EventLoopFuture<Void>
    ) async throws -> Int {
        try await connections[0].listen(host: host, port: port, handler: handler)
    }

    /// Stops listening on `port`.
    public func cancelListen(host: String = "0.0.0.0", port: Int) async throws {
        try await connections[0].cancelListen(host: host, port: port)
    }

    /// UDP `port` of the server's pod brought here (kt-shadow only): see ``TunnelConnection/listenDatagrams``.
    public func listenDatagrams(port: Int, onFrame: @escaping @Sendable (DatagramFrame) -> Void) async throws
        -> TunnelDatagramChannel
    {
        try await connections[0].listenDatagrams(port: port, onFrame: onFrame)
    }

    /// A channel for UDP datagrams and DNS queries (kt-shadow only).
    public func openDatagramChannel(onFrame: @escaping @Sendable (DatagramFrame) -> Void) async throws
        -> TunnelDatagramChannel
    {
        try await leastLoaded.openDatagramChannel(onFrame: onFrame)
    }

    /// ``openDatagramChannel(onFrame:)`` as a future, for callers that live on event loops.
    public func openDatagramChannelFuture(onFrame: @escaping @Sendable (DatagramFrame) -> Void)
        -> EventLoopFuture<TunnelDatagramChannel>
    {
        leastLoaded.openDatagramChannelFuture(onFrame: onFrame)
    }

    /// The event loop of the client's first connection.
    public var eventLoop: EventLoop { connections[0].channel.eventLoop }

    /// Closes every connection; open flows end.
    public func close() {
        for connection in connections { connection.close() }
    }
}
