import KtTunnel
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import NIOSSH

/// What kt-shadow does and how much of it. Every limit has its reason next to it.
public struct ShadowConfiguration: Sendable {
    /// Where the SSH server listens.
    public var listen: SocketAddress
    /// Keys allowed to log in (the session's public key from the Secret).
    public var authorizedKeys: [NIOSSHPublicKey]
    /// The host key; generated per pod start, its fingerprint published in the first log line.
    public var hostKey: NIOSSHPrivateKey
    /// How long a dial may take before it is reported as timed out. Kubernetes services answer or refuse in
    /// milliseconds; 10 s covers a pod that is just starting.
    public var dialTimeout: TimeAmount = .seconds(10)
    /// SSH channels (flows) per connection: far above what one laptop opens, low enough that a misbehaving client
    /// cannot exhaust the pod's file descriptors (the default soft limit is 1024 per process).
    public var maximumChannelsPerConnection = 4096
    /// Dials in progress per connection; more are answered "busy" at once.
    public var maximumPendingDials = 512
    /// Listening sockets (reverse forwards) per connection.
    public var maximumForwards = 64
    /// UDP flows per datagram channel, each one socket; idle ones are closed after `udpIdleTimeout`.
    public var maximumUDPFlows = 1024
    public var udpIdleTimeout: TimeAmount = .seconds(60)
    /// How names are resolved, for dials and for DNS frames; `nil` reads `resolvConfPath` at start.
    public var resolver: ResolvConf?
    public var resolvConfPath = "/etc/resolv.conf"
    /// Names answered before DNS, as glibc's `hosts: files dns` does; `nil` reads `hostsPath` at start.
    public var hosts: HostsFile?
    public var hostsPath = "/etc/hosts"
    /// How long a connection may take from accept to a successful login: a client that connects and says nothing
    /// (or keeps failing) holds a socket and a key exchange's memory; ktctl logs in within a round trip or two.
    public var loginTimeout: TimeAmount = .seconds(10)
    /// Connections not yet logged in, at most: more are closed at accept. ktctl makes one or two; a flood of
    /// half-open logins cannot pile up past this.
    public var maximumUnauthenticated = 16
    /// Forces the address reverse forwards listen on (tests keep them on loopback); `nil` honours the request
    /// (all addresses for "" and "0.0.0.0", loopback for "localhost").
    public var forwardBindAddress: String?

    public init(listen: SocketAddress, authorizedKeys: [NIOSSHPublicKey], hostKey: NIOSSHPrivateKey) {
        self.listen = listen
        self.authorizedKeys = authorizedKeys
        self.hostKey = hostKey
    }
}

/// kt-shadow's SSH server.
public final class ShadowServer: Sendable {
    public let configuration: ShadowConfiguration
    private let group: EventLoopGroup
    private let logger: Logger
    private let serverChannel: NIOLockedValueBox<Channel?>
    private let connections: NIOLockedValueBox<[ObjectIdentifier: Channel]>
    /// Connections accepted and not yet logged in.
    private let unauthenticated = NIOLockedValueBox(0)

    public init(configuration: ShadowConfiguration, group: EventLoopGroup, logger: Logger = Logger(label: "kt-shadow"))
    {
        self.configuration = configuration
        self.group = group
        self.logger = logger
        self.serverChannel = NIOLockedValueBox(nil)
        self.connections = NIOLockedValueBox([:])
    }

    /// The host key's fingerprint, as `ssh-keygen -l` prints it.
    public var hostKeyFingerprint: String { KtTunnel.hostKeyFingerprint(configuration.hostKey.publicKey) }

    /// What `start()` found worth a warning (no nameserver, for one); the caller logs it after the fingerprint
    /// line, which must stay the first.
    public var warnings: [String] { startWarnings.withLockedValue { $0 } }
    private let startWarnings = NIOLockedValueBox<[String]>([])

    /// Binds and starts accepting; returns the bound address.
    public func start() async throws -> SocketAddress {
        let configuration = self.configuration
        let logger = self.logger
        let connections = self.connections
        let resolver =
            configuration.resolver ?? ResolvConf.load(path: configuration.resolvConfPath) ?? ResolvConf(nameservers: [])
        let hosts = configuration.hosts ?? HostsFile.load(path: configuration.hostsPath) ?? HostsFile()
        if resolver.nameservers.isEmpty {
            startWarnings.withLockedValue {
                $0.append(
                    "no nameserver in \(configuration.resolvConfPath): names resolve from \(configuration.hostsPath) only"
                )
            }
        }
        let group = self.group
        let unauthenticated = self.unauthenticated
        // The listening socket is made on an event-loop thread, so that it lives in the same network namespace
        // as everything else the server opens (a bootstrap makes its socket on the calling thread).
        let channel = try await group.next().flatSubmit {
            ServerBootstrap(group: group)
                .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
                .childChannelOption(.tcpOption(.tcp_nodelay), value: 1)
                .childChannelOption(.socketOption(.so_keepalive), value: 1)
                .childChannelInitializer { channel in
                    let admitted = unauthenticated.withLockedValue { count -> Bool in
                        guard count < configuration.maximumUnauthenticated else { return false }
                        count += 1
                        return true
                    }
                    guard admitted else {
                        let limit = configuration.maximumUnauthenticated
                        logger.info(
                            "refused a connection from \(channel.remoteAddress?.endpoint ?? "?"): \(limit) connections are already logging in"
                        )
                        return channel.close()
                    }
                    let login = LoginGate(counter: unauthenticated)
                    channel.closeFuture.whenComplete { _ in login.ended() }
                    let timeout = channel.eventLoop.scheduleTask(in: configuration.loginTimeout) {
                        if login.pending {
                            let seconds = configuration.loginTimeout.nanoseconds / 1_000_000_000
                            logger.info(
                                "closed a connection from \(channel.remoteAddress?.endpoint ?? "?"): no login within \(seconds) s"
                            )
                            channel.close(promise: nil)
                        }
                    }
                    channel.closeFuture.whenComplete { _ in timeout.cancel() }
                    let key = ObjectIdentifier(channel)
                    connections.withLockedValue { $0[key] = channel }
                    channel.closeFuture.whenComplete { _ in
                        connections.withLockedValue { _ = $0.removeValue(forKey: key) }
                    }
                    logger.debug("connection from \(channel.remoteAddress?.endpoint ?? "?")")
                    return channel.eventLoop.makeCompletedFuture {
                        let connection = ShadowConnection(
                            configuration: configuration, resolver: resolver, hosts: hosts, logger: logger,
                            peer: channel.remoteAddress?.endpoint ?? "?", eventLoop: channel.eventLoop)
                        let serverConfiguration = SSHServerConfiguration(
                            hostKeys: [configuration.hostKey],
                            userAuthDelegate: AuthorizedKeys(
                                keys: configuration.authorizedKeys, logger: logger, loggedIn: { login.succeeded() }),
                            globalRequestDelegate: connection)
                        let handler = NIOSSHHandler(
                            role: .server(serverConfiguration), allocator: channel.allocator,
                            inboundChildChannelInitializer: { child, type in connection.initialize(child, type) })
                        try channel.pipeline.syncOperations.addHandler(handler)
                        try channel.pipeline.syncOperations.addHandler(ConnectionErrorLogger(connection: connection))
                        connection.attach(handler: handler)
                        channel.closeFuture.whenComplete { _ in
                            connection.closeAll()
                            connection.logger.debug("connection closed")
                        }
                    }
                }
                .bind(to: configuration.listen)
        }.get()
        serverChannel.withLockedValue { $0 = channel }
        guard let address = channel.localAddress else {
            throw TunnelError.connectionFailed("no local address after bind")
        }
        return address
    }

    /// Connections open now.
    public var connectionCount: Int { connections.withLockedValue { $0.count } }

    /// Stops accepting, then closes every connection (their flows, listeners and sockets with them).
    public func stop() async {
        let channel = serverChannel.withLockedValue { value -> Channel? in
            defer { value = nil }
            return value
        }
        try? await channel?.close()
        let open = connections.withLockedValue { Array($0.values) }
        for connection in open { try? await connection.close() }
    }
}

/// One connection's way through login: counted among the unauthenticated from accept until it logs in or closes.
final class LoginGate: Sendable {
    private let counter: NIOLockedValueBox<Int>
    private let state = NIOLockedValueBox(true)

    init(counter: NIOLockedValueBox<Int>) {
        self.counter = counter
    }

    /// Not logged in yet.
    var pending: Bool { state.withLockedValue { $0 } }

    func succeeded() { leave() }
    func ended() { leave() }

    private func leave() {
        let was = state.withLockedValue { pending -> Bool in
            defer { pending = false }
            return pending
        }
        if was { counter.withLockedValue { $0 -= 1 } }
    }
}

/// Public-key authentication against the authorized keys; nothing else is offered.
struct AuthorizedKeys: NIOSSHServerUserAuthenticationDelegate {
    let keys: [NIOSSHPublicKey]
    let logger: Logger
    /// Called when a login succeeds.
    var loggedIn: @Sendable () -> Void = {}

    var supportedAuthenticationMethods: NIOSSHAvailableUserAuthenticationMethods { .publicKey }

    func requestReceived(
        request: NIOSSHUserAuthenticationRequest, responsePromise: EventLoopPromise<NIOSSHUserAuthenticationOutcome>
    ) {
        guard case .publicKey(let offer) = request.request, keys.contains(offer.publicKey) else {
            if case .publicKey(let offer) = request.request {
                logger.info("refused key \(hostKeyFingerprint(offer.publicKey)) for user \(request.username)")
            }
            responsePromise.succeed(.failure)
            return
        }
        loggedIn()
        responsePromise.succeed(.success)
    }
}

/// Logs why a connection failed (a bad packet, a key exchange that did not agree) and closes it.
final class ConnectionErrorLogger: ChannelInboundHandler, Sendable {
    typealias InboundIn = Any
    private let connection: ShadowConnection

    init(connection: ShadowConnection) {
        self.connection = connection
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        connection.logger.info("connection error: \(error)")
        context.close(promise: nil)
    }

    /// Stops the connection's listeners and lookups as soon as it goes inactive, before the SSH handler is removed:
    /// a forwarded connection accepted after that would ask a removed handler for a channel and wait forever.
    func channelInactive(context: ChannelHandlerContext) {
        connection.closeAll()
        context.fireChannelInactive()
    }
}

// MARK: - Authorized keys

extension ShadowConfiguration {
    /// Why an authorized-keys text was not accepted.
    public struct KeyListError: Error, CustomStringConvertible {
        public var description: String
    }

    /// Parses OpenSSH authorized_keys text: one key per line, `type base64 [comment]`; blank lines and `#` comments
    /// are skipped. Lines with options before the type are refused (kt-shadow honours none), as is an empty list.
    public static func parseAuthorizedKeys(_ text: String, source: String) throws -> [NIOSSHPublicKey] {
        var keys: [NIOSSHPublicKey] = []
        for (index, rawLine) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let line = rawLine.trimmingCharacters(in: " \t\r")
            if line.isEmpty || line.hasPrefix("#") { continue }
            let words = line.split(whereSeparator: { $0 == " " || $0 == "\t" })
            guard words.count >= 2 else {
                throw KeyListError(description: "\(source) line \(index + 1): expected 'TYPE BASE64 [COMMENT]'")
            }
            do {
                keys.append(try NIOSSHPublicKey(openSSHPublicKey: "\(words[0]) \(words[1])"))
            } catch {
                throw KeyListError(
                    description: "\(source) line \(index + 1): not a public key kt-shadow accepts "
                        + "(ssh-ed25519, ecdsa-sha2-nistp256/384/521): \(error)")
            }
        }
        guard !keys.isEmpty else { throw KeyListError(description: "\(source) holds no public key") }
        return keys
    }
}

extension Substring {
    fileprivate func trimmingCharacters(in set: String) -> Substring {
        var slice = self
        while let first = slice.first, set.contains(first) { slice = slice.dropFirst() }
        while let last = slice.last, set.contains(last) { slice = slice.dropLast() }
        return slice
    }
}
