import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOSSH

/// One SSH connection of a ``TunnelClient``.
final class TunnelConnection: Sendable {
    let channel: Channel
    private let sshHandler: NIOLoopBound<NIOSSHHandler>
    private let state: NIOLockedValueBox<State>
    private let logger: Logger

    struct State {
        var serverIsShadow = false
        var openFlows = 0
        /// What takes a forwarded connection: its future fails to refuse the channel (the server then resets the
        /// connection it accepted).
        var listeners: [Int: @Sendable (TunnelFlow) -> EventLoopFuture<Void>] = [:]
        var lastPong: NIODeadline = .now()
        /// Pings sent and not yet answered, oldest first (pongs come in order): when each went, and who waits.
        var pings: [(sent: NIODeadline, waiter: EventLoopPromise<TimeAmount>?)] = []
        /// The last ping's round trip: what one message to the shadow and back costs on this connection.
        var lastRoundTrip: TimeAmount?
        var control: Channel?
        var firstError: Error?
        var closedByUs = false
        /// Questions about failed dials waiting for the shadow's answer, by "host port", oldest first.
        var pendingWhy: [String: [EventLoopPromise<DialFailure>]] = [:]
    }

    var serverIsShadow: Bool { state.withLockedValue { $0.serverIsShadow } }
    var openFlows: Int { state.withLockedValue { $0.openFlows } }
    var closeFuture: EventLoopFuture<Void> { channel.closeFuture }

    private init(channel: Channel, sshHandler: NIOSSHHandler, logger: Logger, state: NIOLockedValueBox<State>) {
        self.channel = channel
        self.sshHandler = NIOLoopBound(sshHandler, eventLoop: channel.eventLoop)
        self.logger = logger
        self.state = state
    }

    // MARK: - Connecting

    static func connect(
        eventLoop: EventLoop, configuration: TunnelConfiguration, index: Int, logger: Logger,
        transport: @escaping @Sendable (EventLoop) -> EventLoopFuture<Channel>
    ) async throws -> TunnelConnection {
        let channel: Channel
        do {
            channel = try await transport(eventLoop).get()
        } catch {
            throw TunnelError.connectionFailed("\(error)")
        }
        let state = NIOLockedValueBox(State())
        let forwarded = ForwardedChannels(state: state)
        let connection: TunnelConnection
        do {
            connection = try await start(
                channel: channel, configuration: configuration, logger: logger, state: state,
                forwarded: forwarded)
        } catch {
            // The byte stream ended before SSH could start on it (a port-forward whose pod refused, say).
            channel.close(promise: nil)
            throw TunnelError.connectionFailed("the connection ended before the tunnel started: \(error)")
        }
        do {
            try await connection.openControlChannel(configuration: configuration)
        } catch {
            connection.close()
            if let recorded = state.withLockedValue({ $0.firstError }) { throw Self.translate(recorded) }
            throw Self.translate(error)
        }
        logger.debug("tunnel connection \(index) up", metadata: ["shadow": "\(connection.serverIsShadow)"])
        connection.closeFuture.whenComplete { _ in
            if let failure = connection.failure {
                logger.warning("tunnel connection \(index) lost: \(failure); its flows have ended")
            }
        }
        return connection
    }

    /// Puts the SSH client on `channel` and starts reading.
    private static func start(
        channel: Channel, configuration: TunnelConfiguration, logger: Logger, state: NIOLockedValueBox<State>,
        forwarded: ForwardedChannels
    ) async throws -> TunnelConnection {
        try await channel.eventLoop.submit {
            let clientConfiguration = SSHClientConfiguration(
                userAuthDelegate: KeyOffer(username: configuration.username, key: configuration.key.sshPrivateKey),
                serverAuthDelegate: HostKeyPin(
                    expected: configuration.hostKey, fingerprint: configuration.hostKeyFingerprint))
            let handler = NIOSSHHandler(
                role: .client(clientConfiguration), allocator: channel.allocator,
                inboundChildChannelInitializer: { child, type in forwarded.initialize(child, type) })
            try channel.pipeline.syncOperations.addHandler(handler)
            try channel.pipeline.syncOperations.addHandler(ErrorRecorder(state: state))
            let connection = TunnelConnection(channel: channel, sshHandler: handler, logger: logger, state: state)
            forwarded.connection = connection
            // Only now may bytes come in (the server's version line is usually already waiting).
            try channel.syncOptions?.setOption(.autoRead, value: true)
            channel.read()
            return connection
        }.get()
    }

    static func translate(_ error: Error) -> Error {
        if error is TunnelError { return error }
        if let ssh = error as? NIOSSHError, ssh.type == .tcpShutdown || ssh.type == .creatingChannelAfterClosure {
            return TunnelError.connectionLost
        }
        if let channel = error as? ChannelError,
            channel == .ioOnClosedChannel || channel == .eof || channel == .alreadyClosed
        {
            return TunnelError.connectionLost
        }
        if let ssh = error as? NIOSSHError, ssh.type == .invalidUserAuthSignature || "\(ssh)".contains("auth") {
            return TunnelError.authenticationFailed
        }
        return TunnelError.connectionFailed("\(error)")
    }

    func close() {
        state.withLockedValue { $0.closedByUs = true }
        channel.close(promise: nil)
    }

    /// Why the connection ended, when it was not closed by us: the first error it hit, or the peer's close.
    var failure: TunnelError? {
        state.withLockedValue { state in
            guard !state.closedByUs, !channel.isActive else { return nil }
            if let error = state.firstError { return .connectionFailed("\(error)") }
            return .connectionLost
        }
    }

    // MARK: - Control channel (kt-shadow detection and keep-alive)

    private func openControlChannel(configuration: TunnelConfiguration) async throws {
        let banner = channel.eventLoop.makePromise(of: Bool.self)
        let state = self.state
        let childChannel: Channel = try await channel.eventLoop.flatSubmit {
            let promise = self.channel.eventLoop.makePromise(of: Channel.self)
            self.openHandler(failing: promise)?.createChannel(promise, channelType: .session) { child, _ in
                child.eventLoop.makeCompletedFuture {
                    try child.pipeline.syncOperations.addHandler(SSHDataCodec())
                    try child.pipeline.syncOperations.addHandler(ControlHandler(banner: banner, state: state))
                }
            }
            return promise.futureResult
        }.get()
        try await childChannel.triggerUserOutboundEvent(
            SSHChannelRequestEvent.ExecRequest(command: "kt-control", wantReply: false)
        ).get()
        // kt-shadow answers with its banner at once; a stock sshd runs "kt-control" as a shell command, which fails
        // and closes the channel. Either way the answer comes within a round trip or two.
        let timeout = channel.eventLoop.scheduleTask(in: .seconds(5)) { banner.succeed(false) }
        let isShadow = try await banner.futureResult.get()
        timeout.cancel()
        state.withLockedValue {
            $0.serverIsShadow = isShadow
            $0.control = isShadow ? childChannel : nil
            $0.lastPong = .now()
        }
        if !isShadow {
            childChannel.close(promise: nil)
            return
        }
        // Keep-alive: a ping every interval; no pong within the timeout ends the connection (and its flows).
        let interval = configuration.keepAliveInterval
        let timeoutAmount = configuration.keepAliveTimeout
        let parent = channel
        let logger = self.logger
        channel.eventLoop.scheduleRepeatedTask(initialDelay: interval, delay: interval) { task in
            guard parent.isActive else {
                task.cancel()
                return
            }
            let (last, control) = state.withLockedValue { ($0.lastPong, $0.control) }
            if NIODeadline.now() - last > timeoutAmount {
                logger.warning(
                    "tunnel keep-alive: no answer for \(timeoutAmount.nanoseconds / 1_000_000_000) s; closing")
                task.cancel()
                parent.close(promise: nil)
                return
            }
            if logger.logLevel <= .debug, let roundTrip = state.withLockedValue({ $0.lastRoundTrip }) {
                logger.debug("tunnel keep-alive: round trip \(roundTrip.nanoseconds / 1000) µs")
            }
            control?.writeAndFlush(ByteBuffer(string: "ping\n"), promise: nil)
            if control != nil { state.withLockedValue { $0.pings.append((.now(), nil)) } }
        }
    }

    /// The last keep-alive's round trip.
    var lastRoundTrip: TimeAmount? { state.withLockedValue { $0.lastRoundTrip } }

    /// Sends a ping now and returns its round trip (kt-shadow only).
    func ping() -> EventLoopFuture<TimeAmount> {
        let eventLoop = channel.eventLoop
        return eventLoop.flatSubmit { [state] in
            guard let control = state.withLockedValue({ $0.control }) else {
                return eventLoop.makeFailedFuture(TunnelError.unsupported("ping needs kt-shadow's control channel"))
            }
            let promise = eventLoop.makePromise(of: TimeAmount.self)
            state.withLockedValue { $0.pings.append((.now(), promise)) }
            control.writeAndFlush(ByteBuffer(string: "ping\n"), promise: nil)
            return promise.futureResult
        }
    }

    // MARK: - Flows

    /// The originator a direct-tcpip open names: ours is not a socket, so loopback, as OpenSSH's -W does.
    static let originator: SocketAddress = {
        do {
            return try SocketAddress(ipAddress: "127.0.0.1", port: 0)
        } catch {
            preconditionFailure("127.0.0.1 is an IPv4 address: \(error)")
        }
    }()

    func openTCP(host: String, port: Int) async throws -> TunnelFlow {
        try await openTCPFuture(host: host, port: port).get()
    }

    /// Opens a `direct-tcpip` channel: the server dials before it confirms, so a flow costs one round trip. On a
    /// refusal kt-shadow is asked why (``DialStatus``). Everything happens on the connection's event loop, with no
    /// hop through Swift concurrency.
    func openTCPFuture(host: String, port: Int) -> EventLoopFuture<TunnelFlow> {
        let isShadow = serverIsShadow
        return channel.eventLoop.flatSubmit {
            let promise = self.channel.eventLoop.makePromise(of: Channel.self)
            let type = SSHChannelType.directTCPIP(
                .init(targetHost: host, targetPort: port, originatorAddress: Self.originator))
            self.openHandler(failing: promise)?.createChannel(promise, channelType: type) { child, _ in
                Self.prepareFlowChannel(child)
            }
            return promise.futureResult.map { TunnelFlow(channel: $0, connection: self) }
        }.flatMapError { error in
            guard let ssh = error as? NIOSSHError, ssh.type == .channelSetupRejected else {
                return self.channel.eventLoop.makeFailedFuture(Self.translate(error))
            }
            // kt-shadow remembers why; a stock sshd says nothing more than that it failed.
            let generic = DialFailure.other("the server could not connect to \(host):\(port)")
            guard isShadow else { return self.channel.eventLoop.makeFailedFuture(TunnelError.dial(generic)) }
            return self.askWhy(host: host, port: port).flatMapThrowing { failure -> TunnelFlow in
                throw TunnelError.dial(failure ?? generic)
            }
        }
    }

    /// The SSH handler while the connection is open; otherwise `promise` fails and nil comes back. swift-nio-ssh
    /// never answers a channel or request asked of a handler already removed from a closed connection, so asking
    /// after the close (a host key refused while the caller was between two awaits) would wait forever.
    private func openHandler<T>(failing promise: EventLoopPromise<T>) -> NIOSSHHandler? {
        channel.eventLoop.preconditionInEventLoop()
        guard channel.isActive else {
            promise.fail(TunnelError.connectionLost)
            return nil
        }
        return sshHandler.value
    }

    /// A flow's SSH channel, either way: bytes in and out, connection loss as ``TunnelError/connectionLost``,
    /// half-closure on, reads only when the consumer asks.
    static func prepareFlowChannel(_ child: Channel) -> EventLoopFuture<Void> {
        child.eventLoop.makeCompletedFuture {
            try child.pipeline.syncOperations.addHandler(SSHDataCodec())
            try child.pipeline.syncOperations.addHandler(ConnectionLossTranslator())
        }.flatMap {
            child.setOption(ChannelOptions.allowRemoteHalfClosure, value: true)
        }.flatMap {
            child.setOption(ChannelOptions.autoRead, value: false)
        }
    }

    /// Asks the shadow why the dial to `host:port` failed; nil when no answer comes within 2 s.
    private func askWhy(host: String, port: Int) -> EventLoopFuture<DialFailure?> {
        let key = "\(host) \(port)"
        let promise = channel.eventLoop.makePromise(of: DialFailure.self)
        let control: Channel? = state.withLockedValue { state in
            guard let control = state.control else { return nil }
            state.pendingWhy[key, default: []].append(promise)
            return control
        }
        guard let control else { return channel.eventLoop.makeSucceededFuture(nil) }
        control.writeAndFlush(ByteBuffer(string: DialStatus.whyRequest(host: host, port: port)), promise: nil)
        let timeout = channel.eventLoop.scheduleTask(in: .seconds(2)) {
            promise.fail(TunnelError.dial(.timedOut))
        }
        return promise.futureResult.map { Optional($0) }.recover { _ in nil }.always { _ in
            timeout.cancel()
            self.state.withLockedValue { state in
                state.pendingWhy[key]?.removeAll { $0.futureResult === promise.futureResult }
                if state.pendingWhy[key]?.isEmpty == true { state.pendingWhy[key] = nil }
            }
        }
    }

    func flowOpened() { state.withLockedValue { $0.openFlows += 1 } }
    func flowClosed() { state.withLockedValue { $0.openFlows -= 1 } }

    // MARK: - Reverse forwards

    func listen(host: String, port: Int, handler: @escaping @Sendable (TunnelFlow) -> EventLoopFuture<Void>)
        async throws -> Int
    {
        let response: GlobalRequest.TCPForwardingResponse?
        do {
            response = try await channel.eventLoop.flatSubmit {
                let promise = self.channel.eventLoop.makePromise(of: GlobalRequest.TCPForwardingResponse?.self)
                self.openHandler(failing: promise)?.sendTCPForwardingRequest(
                    .listen(host: host, port: port), promise: promise)
                return promise.futureResult
            }.get()
        } catch {
            throw TunnelError.forwardRejected(port: port)
        }
        let bound = response?.boundPort ?? port
        state.withLockedValue { $0.listeners[bound] = handler }
        return bound
    }

    func cancelListen(host: String, port: Int) async throws {
        state.withLockedValue { _ = $0.listeners.removeValue(forKey: port) }
        _ = try await channel.eventLoop.flatSubmit {
            let promise = self.channel.eventLoop.makePromise(of: GlobalRequest.TCPForwardingResponse?.self)
            self.openHandler(failing: promise)?.sendTCPForwardingRequest(
                .cancel(host: host, port: port), promise: promise)
            return promise.futureResult
        }.get()
    }

    /// A forwarded-tcpip channel arrived for `port`: the listener's answer (a failure refuses the channel).
    func deliverForwarded(_ flow: TunnelFlow, port: Int) -> EventLoopFuture<Void> {
        guard let handler = state.withLockedValue({ $0.listeners[port] }) else {
            return flow.channel.eventLoop.makeFailedFuture(TunnelError.forwardRejected(port: port))
        }
        return handler(flow)
    }

    /// Opens a session and asks the server to run `command`; whether it agreed. For tests of what the server refuses.
    func probeCommand(_ command: String) async throws -> Bool {
        let childChannel: Channel = try await channel.eventLoop.flatSubmit {
            let promise = self.channel.eventLoop.makePromise(of: Channel.self)
            self.openHandler(failing: promise)?.createChannel(promise, channelType: .session) { _, _ in
                self.channel.eventLoop.makeSucceededVoidFuture()
            }
            return promise.futureResult
        }.get()
        defer { childChannel.close(promise: nil) }
        let reply = channel.eventLoop.makePromise(of: Bool.self)
        try await childChannel.pipeline.addHandler(RequestReplyHandler(reply: reply)).get()
        try await childChannel.triggerUserOutboundEvent(
            SSHChannelRequestEvent.ExecRequest(command: command, wantReply: true)
        ).get()
        return try await reply.futureResult.get()
    }

    // MARK: - Datagrams

    func openDatagramChannel(onFrame: @escaping @Sendable (DatagramFrame) -> Void) async throws -> TunnelDatagramChannel
    {
        try await openDatagramChannelFuture(onFrame: onFrame).get()
    }

    /// ``openDatagramChannel(onFrame:)`` as a future on the connection's event loop.
    func openDatagramChannelFuture(onFrame: @escaping @Sendable (DatagramFrame) -> Void)
        -> EventLoopFuture<TunnelDatagramChannel>
    {
        let eventLoop = channel.eventLoop
        guard serverIsShadow else {
            return eventLoop.makeFailedFuture(TunnelError.unsupported("datagram channels (kt-shadow only)"))
        }
        return openFramedSession(onFrame: onFrame).flatMap { child in
            child.triggerUserOutboundEvent(SSHChannelRequestEvent.ExecRequest(command: "kt-udp", wantReply: false))
                .map { TunnelDatagramChannel(channel: child) }
        }
    }

    /// A `session` channel whose bytes are split into ``DatagramFrame``s, before any command is sent on it (the
    /// datagram channel's and the UDP listeners').
    private func openFramedSession(onFrame: @escaping @Sendable (DatagramFrame) -> Void) -> EventLoopFuture<Channel> {
        channel.eventLoop.flatSubmit {
            let promise = self.channel.eventLoop.makePromise(of: Channel.self)
            self.openHandler(failing: promise)?.createChannel(promise, channelType: .session) { child, _ in
                child.eventLoop.makeCompletedFuture {
                    try child.pipeline.syncOperations.addHandler(SSHDataCodec())
                    try child.pipeline.syncOperations.addHandler(DatagramFrameHandler(onFrame: onFrame))
                }
            }
            return promise.futureResult
        }
    }

    /// Asks kt-shadow to bind UDP `port` in its pod and carry what arrives there over a datagram channel: each frame
    /// names its sender, and a frame sent back goes out of that port to the sender it names. Fails when the shadow
    /// cannot bind the port.
    func listenDatagrams(port: Int, onFrame: @escaping @Sendable (DatagramFrame) -> Void) async throws
        -> TunnelDatagramChannel
    {
        guard serverIsShadow else { throw TunnelError.unsupported("UDP listeners (kt-shadow only)") }
        let child = try await openFramedSession(onFrame: onFrame).get()
        let reply = channel.eventLoop.makePromise(of: Bool.self)
        try await child.pipeline.addHandler(RequestReplyHandler(reply: reply), position: .first).get()
        try await child.triggerUserOutboundEvent(
            SSHChannelRequestEvent.ExecRequest(command: "kt-udp-listen \(port)", wantReply: true)
        ).get()
        guard try await reply.futureResult.get() else {
            child.close(promise: nil)
            throw TunnelError.forwardRejected(port: port)
        }
        return TunnelDatagramChannel(channel: child)
    }
}

// MARK: - Delegates

/// Offers the session key once; if the server refuses it, there is nothing else to offer.
final class KeyOffer: NIOSSHClientUserAuthenticationDelegate {
    private let username: String
    private let key: NIOSSHPrivateKey
    private var offered = false

    init(username: String, key: NIOSSHPrivateKey) {
        self.username = username
        self.key = key
    }

    func nextAuthenticationType(
        availableMethods: NIOSSHAvailableUserAuthenticationMethods,
        nextChallengePromise: EventLoopPromise<NIOSSHUserAuthenticationOffer?>
    ) {
        guard !offered, availableMethods.contains(.publicKey) else {
            nextChallengePromise.fail(TunnelError.authenticationFailed)
            return
        }
        offered = true
        nextChallengePromise.succeed(
            NIOSSHUserAuthenticationOffer(
                username: username, serviceName: "", offer: .privateKey(.init(privateKey: key))))
    }
}

/// Accepts only the pinned host key.
struct HostKeyPin: NIOSSHClientServerAuthenticationDelegate {
    let expected: NIOSSHPublicKey?
    /// The SHA256 fingerprint ("SHA256:…", as the shadow's first log line prints it), when only that is known.
    let fingerprint: String?

    func validateHostKey(hostKey: NIOSSHPublicKey, validationCompletePromise: EventLoopPromise<Void>) {
        let presented = hostKeyFingerprint(hostKey)
        if let expected, hostKey != expected {
            validationCompletePromise.fail(
                TunnelError.hostKeyMismatch(expected: hostKeyFingerprint(expected), presented: presented))
        } else if let fingerprint, fingerprint != presented {
            validationCompletePromise.fail(TunnelError.hostKeyMismatch(expected: fingerprint, presented: presented))
        } else {
            validationCompletePromise.succeed()
        }
    }
}

/// Keeps the first error the SSH connection hit, so that a failed connect can say why.
final class ErrorRecorder: ChannelInboundHandler, Sendable {
    typealias InboundIn = Any
    private let state: NIOLockedValueBox<TunnelConnection.State>

    init(state: NIOLockedValueBox<TunnelConnection.State>) { self.state = state }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        state.withLockedValue { if $0.firstError == nil { $0.firstError = error } }
        context.close(promise: nil)
    }
}

/// Routes forwarded-tcpip channels from the server to the listener registered for their port.
final class ForwardedChannels: @unchecked Sendable {
    private let state: NIOLockedValueBox<TunnelConnection.State>
    weak var connection: TunnelConnection?

    init(state: NIOLockedValueBox<TunnelConnection.State>) { self.state = state }

    func initialize(_ child: Channel, _ type: SSHChannelType) -> EventLoopFuture<Void> {
        guard case .forwardedTCPIP(let forwarded) = type, let connection,
            state.withLockedValue({ $0.listeners[forwarded.listeningPort] }) != nil
        else {
            // Only forwards we asked for; session and direct-tcpip channels from the server are refused.
            return child.eventLoop.makeFailedFuture(TunnelError.protocolViolation("unexpected channel from the server"))
        }
        return TunnelConnection.prepareFlowChannel(child).flatMap {
            connection.deliverForwarded(
                TunnelFlow(channel: child, connection: connection), port: forwarded.listeningPort)
        }
    }
}

// MARK: - Control channel handler

/// Reads kt-shadow's banner and pongs on the control channel.
final class ControlHandler: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = ByteBuffer
    private let banner: EventLoopPromise<Bool>
    private let state: NIOLockedValueBox<TunnelConnection.State>
    private var buffer = ByteBuffer()
    private var sawBanner = false

    init(banner: EventLoopPromise<Bool>, state: NIOLockedValueBox<TunnelConnection.State>) {
        self.banner = banner
        self.state = state
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var bytes = unwrapInboundIn(data)
        buffer.writeBuffer(&bytes)
        while let newline = buffer.readableBytesView.firstIndex(of: UInt8(ascii: "\n")) {
            let line = buffer.readString(length: newline - buffer.readerIndex) ?? ""
            buffer.moveReaderIndex(forwardBy: 1)
            if !sawBanner {
                sawBanner = true
                // Another protocol version is treated as a stock server: direct-tcpip still works.
                banner.succeed(line == "kt-shadow 1")
            } else if line == "pong" {
                let now = NIODeadline.now()
                let answered = state.withLockedValue { state -> (EventLoopPromise<TimeAmount>?, TimeAmount)? in
                    state.lastPong = now
                    guard !state.pings.isEmpty else { return nil }
                    let ping = state.pings.removeFirst()
                    state.lastRoundTrip = now - ping.sent
                    return (ping.waiter, now - ping.sent)
                }
                if let (waiter, roundTrip) = answered { waiter?.succeed(roundTrip) }
            } else if let answer = DialStatus.parseWhyAnswer(line[...]), case .failed(let failure) = answer.status {
                let waiting = state.withLockedValue { state -> EventLoopPromise<DialFailure>? in
                    let key = "\(answer.host) \(answer.port)"
                    guard var queue = state.pendingWhy[key], !queue.isEmpty else { return nil }
                    let first = queue.removeFirst()
                    state.pendingWhy[key] = queue.isEmpty ? nil : queue
                    return first
                }
                waiting?.succeed(failure)
            }
        }
        if buffer.readableBytes > 4096 { context.close(promise: nil) }
    }

    func channelInactive(context: ChannelHandlerContext) {
        banner.succeed(false)
        context.fireChannelInactive()
    }
}

/// Turns the SSH connection's loss under a flow into ``TunnelError/connectionLost``, the error flows end with.
final class ConnectionLossTranslator: ChannelInboundHandler, Sendable {
    typealias InboundIn = ByteBuffer

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        context.fireErrorCaught(TunnelConnection.translate(error))
    }
}

/// Waits for the answer to a channel request.
final class RequestReplyHandler: ChannelInboundHandler, Sendable {
    typealias InboundIn = SSHChannelData
    private let reply: EventLoopPromise<Bool>

    init(reply: EventLoopPromise<Bool>) { self.reply = reply }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is ChannelSuccessEvent { reply.succeed(true) }
        if event is ChannelFailureEvent { reply.succeed(false) }
        context.fireUserInboundEventTriggered(event)
    }

    func channelInactive(context: ChannelHandlerContext) {
        reply.succeed(false)
        context.fireChannelInactive()
    }
}
