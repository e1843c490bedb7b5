import KtTunnel
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

/// Cluster ports brought to this machine: the shadow listens on each remote port in its pod, and every connection
/// it accepts comes back as a flow that is joined to a new connection to `127.0.0.1:<local>` here. The listeners are
/// asked for again on every tunnel the session puts in place (a reconnect, a re-created pod).
///
/// When nothing listens locally the flow is closed at once, so the cluster's client gets an immediate end, never a
/// hang.
public final class ReverseForwards: Sendable {
    /// One forwarded port.
    public struct Port: Sendable, Hashable, CustomStringConvertible {
        /// The port the shadow listens on in its pod (the Service's target port).
        public var remote: Int
        /// The port on this machine's 127.0.0.1 the connections go to.
        public var local: Int
        /// UDP instead of TCP: datagrams over a datagram channel, one local socket per cluster sender.
        public var udp: Bool

        public init(remote: Int, local: Int, udp: Bool = false) {
            self.remote = remote
            self.local = local
            self.udp = udp
        }

        public var description: String { "pod :\(remote)\(udp ? "/udp" : "") → 127.0.0.1:\(local)" }
    }

    struct State {
        var client: TunnelClient?
        /// Flows joined to a local connection now, for draining.
        var open = 0
        var accepted = 0
        var refused = 0
        /// When the last connection came.
        var lastAccepted: ContinuousClock.Instant?
        var closed = false
        /// The listeners of the current tunnel are in place.
        var ready: [EventLoopPromise<Void>] = []
        var listening = false
        /// The current tunnel's UDP relays.
        var datagrams: [LocalDatagramRelay] = []
    }

    public let ports: [Port]
    /// Bytes each way through the forwarded connections (`ktctl status`).
    public let meter = TrafficMeter()
    private let state = NIOLockedValueBox(State())
    private let logger: Logger

    public init(ports: [Port], link: TunnelLink, logger: Logger) {
        self.ports = ports
        self.logger = logger
        link.observe { [weak self] client in self?.tunnelChanged(client) }
    }

    /// Connections carried so far, open now, and refused because nothing listened locally.
    public var counts: (accepted: Int, open: Int, refused: Int) {
        state.withLockedValue { ($0.accepted, $0.open, $0.refused) }
    }

    /// Waits until the current tunnel's listeners are all in place.
    public func waitUntilListening(on eventLoop: any EventLoop) async throws {
        let promise = eventLoop.makePromise(of: Void.self)
        let already = state.withLockedValue { state -> Bool in
            if state.listening { return true }
            state.ready.append(promise)
            return false
        }
        if already { promise.succeed(()) }
        try await promise.futureResult.get()
    }

    /// Waits (at most `timeout`) until no forwarded connection is open and none has come for `quiet`: the Service
    /// has moved back, the proxies in front of it have followed (kube-proxy, and ktlab's, apply Endpoints a moment
    /// after they change, and meanwhile new connections still come here), and what came has been answered.
    public func drain(quiet: Duration = .seconds(1), timeout: Duration) async {
        let started = ContinuousClock.now
        let deadline = started + timeout
        while ContinuousClock.now < deadline {
            let (open, last) = state.withLockedValue { ($0.open, $0.lastAccepted) }
            if open == 0, ContinuousClock.now - max(last ?? started, started) >= quiet { return }
            try? await Task.sleep(for: .milliseconds(50))
        }
    }

    public func close() {
        let (client, datagrams) = state.withLockedValue { state -> (TunnelClient?, [LocalDatagramRelay]) in
            state.closed = true
            defer { state.datagrams = [] }
            return (state.client, state.datagrams)
        }
        for relay in datagrams { relay.close() }
        guard let client else { return }
        for port in ports where !port.udp {
            Task { try? await client.cancelListen(port: port.remote) }
        }
    }

    func tunnelChanged(_ client: TunnelClient) {
        let stale = state.withLockedValue { state -> [LocalDatagramRelay] in
            state.client = client
            state.listening = false
            defer { state.datagrams = [] }
            return state.datagrams
        }
        for relay in stale { relay.close() }
        Task { [weak self] in
            guard let self else { return }
            do {
                for port in self.ports {
                    let local = port.local
                    if port.udp {
                        let relay = LocalDatagramRelay(local: local, logger: self.logger)
                        relay.channel = try await client.listenDatagrams(port: port.remote) { [weak relay] frame in
                            relay?.fromCluster(frame)
                        }
                        let kept = self.state.withLockedValue { state -> Bool in
                            guard state.client === client, !state.closed else { return false }
                            state.datagrams.append(relay)
                            return true
                        }
                        if !kept { relay.close() }
                        continue
                    }
                    _ = try await client.listen(
                        port: port.remote,
                        accepting: { [weak self] flow in
                            guard let self else {
                                return flow.channel.eventLoop.makeFailedFuture(TunnelError.forwardRejected(port: local))
                            }
                            return self.accepted(flow, local: local)
                        })
                }
                let waiters = self.state.withLockedValue { state -> [EventLoopPromise<Void>] in
                    guard state.client === client else { return [] }
                    state.listening = true
                    defer { state.ready = [] }
                    return state.ready
                }
                for waiter in waiters { waiter.succeed(()) }
            } catch {
                self.logger.warning("the shadow could not listen for the forwarded ports: \(error)")
                let waiters = self.state.withLockedValue { state -> [EventLoopPromise<Void>] in
                    defer { state.ready = [] }
                    return state.ready
                }
                for waiter in waiters { waiter.fail(error) }
            }
        }
    }

    /// A connection the shadow accepted: taken once a local connection is made (then joined to it), refused when
    /// none can be (kt-shadow then resets the cluster's connection: an immediate error there, never a hang).
    func accepted(_ flow: TunnelFlow, local: Int) -> EventLoopFuture<Void> {
        let eventLoop = flow.channel.eventLoop
        let logger = self.logger
        return ClientBootstrap(group: eventLoop)
            .channelOption(.tcpOption(.tcp_nodelay), value: 1)
            .channelOption(.allowRemoteHalfClosure, value: true)
            .channelOption(.autoRead, value: false)
            .connectTimeout(.seconds(5))
            .connect(host: "127.0.0.1", port: local)
            .flatMapError { [weak self] error in
                self?.state.withLockedValue { $0.refused += 1 }
                self?.logger.warning(
                    "a connection from the cluster found nothing listening on 127.0.0.1:\(local) (\(error)); it was reset"
                )
                return eventLoop.makeFailedFuture(error)
            }
            .map { [weak self] socket in
                self?.state.withLockedValue {
                    $0.accepted += 1
                    $0.open += 1
                    $0.lastAccepted = .now
                }
                flow.channel.closeFuture.whenComplete { [weak self] _ in
                    self?.state.withLockedValue { $0.open -= 1 }
                }
                // Joined once the channel is open (right after this future completes).
                eventLoop.execute { [meter = self?.meter] in
                    do {
                        try meter?.attach(to: flow.channel)
                    } catch {
                        logger.debug("reverse forward: meter: \(error)")
                    }
                    flow.glue(to: socket).whenFailure { error in
                        logger.debug("reverse forward: glue: \(error)")
                        socket.close(promise: nil)
                    }
                }
            }
    }
}

/// Whether something accepts TCP connections on `127.0.0.1:port` now (the check before an exchange starts).
public func localPortAnswers(_ port: Int, on eventLoop: any EventLoop) async -> Bool {
    do {
        let channel = try await ClientBootstrap(group: eventLoop).connectTimeout(.seconds(2))
            .connect(host: "127.0.0.1", port: port).get()
        try? await channel.close()
        return true
    } catch {
        return false
    }
}

/// One forwarded UDP port: a local socket per cluster sender, connected to `127.0.0.1:<local>`; what the local server
/// answers goes back to that sender through the shadow's port. Senders idle for a minute are forgotten.
final class LocalDatagramRelay: @unchecked Sendable {
    private let local: Int
    private let logger: Logger
    private let lock = NIOLock()
    private var senders: [UInt32: Sender] = [:]
    private var closed = false
    private var sweeper: RepeatedTask?
    /// Set once the shadow listens; frames arrive only after.
    var channel: TunnelDatagramChannel? {
        get { lock.withLock { _channel } }
        set {
            lock.withLock { _channel = newValue }
            guard let newValue else { return }
            let sweeper = newValue.channel.eventLoop.scheduleRepeatedTask(
                initialDelay: .seconds(15), delay: .seconds(15)
            ) { [weak self] _ in self?.sweep() }
            lock.withLock { self.sweeper = sweeper }
        }
    }
    private var _channel: TunnelDatagramChannel?

    static let idle = TimeAmount.seconds(60)

    private final class Sender {
        let socket: EventLoopFuture<Channel>
        var lastUsed = NIODeadline.now()
        init(socket: EventLoopFuture<Channel>) { self.socket = socket }
    }

    init(local: Int, logger: Logger) {
        self.local = local
        self.logger = logger
    }

    /// A datagram a cluster client sent to the shadow's port.
    func fromCluster(_ frame: DatagramFrame) {
        guard let channel else { return }
        if frame.kind == .closed {
            forget(frame.flow)
            return
        }
        guard frame.kind == .udp else { return }
        let sender: Sender = lock.withLock {
            if let known = senders[frame.flow] {
                known.lastUsed = .now()
                return known
            }
            let reply = DatagramFrame(
                kind: .udp, flow: frame.flow, address: frame.address, port: frame.port, payload: ByteBuffer())
            let socket = DatagramBootstrap(group: channel.channel.eventLoop)
                .channelInitializer { socket in
                    socket.eventLoop.makeCompletedFuture {
                        try socket.pipeline.syncOperations.addHandler(
                            LocalAnswerReader { [weak self] payload in
                                var answer = reply
                                answer.payload = payload
                                self?.channel?.send(answer)
                            })
                    }
                }
                .connect(host: "127.0.0.1", port: local)
            socket.whenFailure { [logger, local] error in
                logger.warning("a UDP datagram from the cluster could not go to 127.0.0.1:\(local): \(error)")
            }
            let sender = Sender(socket: socket)
            senders[frame.flow] = sender
            return sender
        }
        let payload = frame.payload
        sender.socket.whenSuccess { $0.writeAndFlush(payload, promise: nil) }
    }

    private func forget(_ flow: UInt32) {
        let sender = lock.withLock { senders.removeValue(forKey: flow) }
        sender?.socket.whenSuccess { $0.close(promise: nil) }
    }

    private func sweep() {
        let limit = NIODeadline.now() - Self.idle
        let idle = lock.withLock { senders.filter { $0.value.lastUsed < limit }.map(\.key) }
        for flow in idle { forget(flow) }
    }

    func close() {
        let (all, channel, sweeper) = lock.withLock {
            closed = true
            defer {
                senders = [:]
                self.sweeper = nil
            }
            return (Array(senders.values), _channel, self.sweeper)
        }
        sweeper?.cancel()
        for sender in all { sender.socket.whenSuccess { $0.close(promise: nil) } }
        channel?.close()
    }
}

/// Reads a connected local UDP socket's answers.
private final class LocalAnswerReader: ChannelInboundHandler, Sendable {
    typealias InboundIn = AddressedEnvelope<ByteBuffer>
    private let answer: @Sendable (ByteBuffer) -> Void

    init(answer: @escaping @Sendable (ByteBuffer) -> Void) { self.answer = answer }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        answer(unwrapInboundIn(data).data)
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        // ECONNREFUSED: nothing listens locally on that UDP port now; the datagram is lost, as UDP's would be.
    }
}
