import KtTunnel
import KtWire
import Logging
import NIOCore
import NIOPosix
import NIOSSH

/// One client's SSH connection to kt-shadow: the channels it opens, the dials it asks for, the ports it listens on.
///
/// Confined to the connection's event loop (swift-nio-ssh calls the delegate and the child initializers there, and
/// every socket it makes lives there too), which is what makes the unchecked `Sendable` sound.
final class ShadowConnection: GlobalRequestDelegate, @unchecked Sendable {
    let configuration: ShadowConfiguration
    let resolver: ResolvConf
    let hosts: HostsFile
    let logger: Logger
    let peer: String

    let eventLoop: EventLoop
    let nameservers: NameserverClient
    private var sshHandler: NIOSSHHandler?
    private var openChannels = 0
    private var pendingDials = 0
    /// Recent direct-tcpip dial failures by "host port", for the client's `why` question on the control channel.
    private var recentFailures: [String: (failure: DialFailure, at: NIODeadline)] = [:]
    static let failureMemory = TimeAmount.seconds(30)
    static let maximumRememberedFailures = 256
    private var listeners: [Int: Listener] = [:]
    private var closed = false

    private struct Listener {
        var host: String
        var channel: Channel
    }

    init(
        configuration: ShadowConfiguration, resolver: ResolvConf, hosts: HostsFile, logger: Logger, peer: String,
        eventLoop: EventLoop
    ) {
        self.configuration = configuration
        self.eventLoop = eventLoop
        self.resolver = resolver
        self.hosts = hosts
        self.peer = peer
        var logger = logger
        logger[metadataKey: "peer"] = "\(peer)"
        self.logger = logger
        self.nameservers = NameserverClient(eventLoop: eventLoop, configuration: resolver, logger: logger)
    }

    /// Called once, on the event loop, when the SSH handler is in the pipeline.
    func attach(handler: NIOSSHHandler) {
        sshHandler = handler
    }

    private var dialer: Dialer {
        Dialer(eventLoop: eventLoop, timeout: configuration.dialTimeout, hosts: hosts, nameservers: nameservers)
    }

    // MARK: - Channels from the client

    /// Sets up a channel the client opened; a failed future refuses it (the client sees an open failure) and
    /// leaves every other channel as it was.
    func initialize(_ child: Channel, _ type: SSHChannelType) -> EventLoopFuture<Void> {
        guard !closed else { return child.eventLoop.makeFailedFuture(ShadowRefusal.closing) }
        guard openChannels < configuration.maximumChannelsPerConnection else {
            logger.warning("refusing a channel: \(openChannels) open, the limit per connection")
            return child.eventLoop.makeFailedFuture(ShadowRefusal.tooManyChannels)
        }
        openChannels += 1
        child.closeFuture.whenComplete { _ in self.openChannels -= 1 }
        switch type {
        case .session:
            return child.eventLoop.makeCompletedFuture {
                try child.pipeline.syncOperations.addHandler(SSHDataCodec())
                try child.pipeline.syncOperations.addHandler(SessionHandler(connection: self))
            }.flatMap {
                child.setOption(ChannelOptions.allowRemoteHalfClosure, value: true)
            }.flatMap {
                child.setOption(ChannelOptions.autoRead, value: false)
            }
        case .directTCPIP(let target):
            return dial(host: target.targetHost, port: target.targetPort).flatMapError { error in
                self.remember(Dialer.failure(for: error), host: target.targetHost, port: target.targetPort)
                return child.eventLoop.makeFailedFuture(error)
            }.flatMap { socket in
                child.eventLoop.makeCompletedFuture {
                    try child.pipeline.syncOperations.addHandler(SSHDataCodec())
                }.flatMap {
                    child.setOption(ChannelOptions.allowRemoteHalfClosure, value: true)
                }.flatMap {
                    GlueHandler.join(child, socket)
                }
            }
        // A failure refuses the open with "connect failed" and no reason (swift-nio-ssh sends none); the reason is
        // remembered for the client's `why` on the control channel.
        case .forwardedTCPIP:
            logger.info("refusing a forwarded-tcpip channel from the client")
            return child.eventLoop.makeFailedFuture(ShadowRefusal.unsupportedChannel)
        }
    }

    private func remember(_ failure: DialFailure, host: String, port: Int) {
        let now = NIODeadline.now()
        if recentFailures.count >= Self.maximumRememberedFailures {
            recentFailures = recentFailures.filter { now - $0.value.at < Self.failureMemory }
            if recentFailures.count >= Self.maximumRememberedFailures { recentFailures.removeAll() }
        }
        recentFailures["\(host) \(port)"] = (failure, now)
    }

    /// Why the last dial to `host:port` failed, if it did within the last 30 s.
    func recentFailure(host: String, port: Int) -> DialFailure? {
        guard let entry = recentFailures["\(host) \(port)"], NIODeadline.now() - entry.at < Self.failureMemory else {
            return nil
        }
        return entry.failure
    }

    /// Dials for the client, within the limit on dials in progress.
    func dial(host: String, port: Int) -> EventLoopFuture<Channel> {
        guard !closed else { return eventLoop.makeFailedFuture(ShadowRefusal.closing) }
        guard pendingDials < configuration.maximumPendingDials else {
            logger.warning("dial to \(host):\(port) refused: \(pendingDials) dials in progress")
            return eventLoop.makeFailedFuture(DialRefusal(failure: .busy))
        }
        pendingDials += 1
        let started = NIODeadline.now()
        return dialer.dial(host: host, port: port).always { result in
            self.pendingDials -= 1
            let microseconds = (NIODeadline.now() - started).nanoseconds / 1000
            switch result {
            case .success:
                self.logger.debug("dialed \(host):\(port) in \(microseconds) µs")
            case .failure(let error):
                self.logger.debug("dial \(host):\(port) failed after \(microseconds) µs: \(Dialer.failure(for: error))")
            }
        }.flatMap { socket in
            // The connection may have ended while we dialed.
            guard !self.closed else {
                socket.close(promise: nil)
                return self.eventLoop.makeFailedFuture(ShadowRefusal.closing)
            }
            return self.eventLoop.makeSucceededFuture(socket)
        }
    }

    // MARK: - Reverse forwards

    func tcpForwardingRequest(
        _ request: GlobalRequest.TCPForwardingRequest, handler: NIOSSHHandler,
        promise: EventLoopPromise<GlobalRequest.TCPForwardingResponse>
    ) {
        switch request {
        case .listen(let host, let port):
            listen(host: host, port: port, promise: promise)
        case .cancel(let host, let port):
            guard let listener = listeners[port],
                listener.host == host || bindHost(for: listener.host) == bindHost(for: host)
            else {
                promise.fail(ShadowRefusal.noSuchForward)
                return
            }
            listeners[port] = nil
            logger.info("stopped listening on \(listener.host):\(port)")
            listener.channel.close(promise: nil)
            promise.succeed(.init(boundPort: nil))
        }
    }

    /// The address a request to listen on `host` binds: all addresses for "", "0.0.0.0", "*" and "::" (the shadow's
    /// point is to be reachable from the cluster), loopback for "localhost", else the address asked for.
    func bindHost(for host: String) -> String {
        if let forced = configuration.forwardBindAddress { return forced }
        switch host {
        case "", "0.0.0.0", "*", "::": return "0.0.0.0"
        case "localhost": return "127.0.0.1"
        default: return host
        }
    }

    private func listen(host: String, port: Int, promise: EventLoopPromise<GlobalRequest.TCPForwardingResponse>) {
        guard !closed else {
            promise.fail(ShadowRefusal.closing)
            return
        }
        guard listeners.count < configuration.maximumForwards else {
            logger.warning("refusing to listen on \(host):\(port): \(listeners.count) forwards, the limit")
            promise.fail(ShadowRefusal.tooManyForwards)
            return
        }
        guard (0...65535).contains(port), listeners[port] == nil else {
            promise.fail(ShadowRefusal.noSuchForward)
            return
        }
        let address = bindHost(for: host)
        ServerBootstrap(group: eventLoop)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.tcpOption(.tcp_nodelay), value: 1)
            .childChannelOption(.autoRead, value: false)
            .childChannelOption(.allowRemoteHalfClosure, value: true)
            .childChannelInitializer { accepted in
                self.forward(accepted, listeningHost: host)
            }
            .bind(host: address, port: port)
            .whenComplete { result in
                switch result {
                case .success(let channel):
                    let bound = channel.localAddress?.port ?? port
                    guard !self.closed else {
                        channel.close(promise: nil)
                        promise.fail(ShadowRefusal.closing)
                        return
                    }
                    self.listeners[bound] = Listener(host: host, channel: channel)
                    self.logger.info("listening on \(address):\(bound) for the client")
                    promise.succeed(.init(boundPort: port == 0 ? bound : nil))
                case .failure(let error):
                    self.logger.warning("cannot listen on \(address):\(port): \(error)")
                    promise.fail(error)
                }
            }
    }

    /// Opens a forwarded-tcpip channel to the client for a connection accepted on a forwarded port and joins them.
    private func forward(_ accepted: Channel, listeningHost: String) -> EventLoopFuture<Void> {
        guard let sshHandler, !closed, let bound = accepted.localAddress?.port,
            let originator = accepted.remoteAddress
        else {
            return accepted.eventLoop.makeFailedFuture(ShadowRefusal.closing)
        }
        let promise = accepted.eventLoop.makePromise(of: Channel.self)
        let type = SSHChannelType.forwardedTCPIP(
            .init(listeningHost: listeningHost, listeningPort: bound, originatorAddress: originator))
        sshHandler.createChannel(promise, channelType: type) { child, _ in
            child.eventLoop.makeCompletedFuture {
                try child.pipeline.syncOperations.addHandler(SSHDataCodec())
            }.flatMap {
                child.setOption(ChannelOptions.allowRemoteHalfClosure, value: true)
            }
        }
        return promise.futureResult.flatMap { child in
            GlueHandler.join(child, accepted)
        }.flatMapError { error in
            // The client's refusal (nothing listens on its side) reaches the cluster's client as a reset, at once.
            self.logger.debug("the client refused a forwarded connection from \(originator.endpoint): \(error)")
            guard let socket = accepted as? any SocketOptionProvider else {
                return accepted.eventLoop.makeFailedFuture(error)
            }
            return socket.setSoLinger(linger(l_onoff: 1, l_linger: 0))
                .flatMapError { _ in accepted.eventLoop.makeSucceededVoidFuture() }
                .flatMap { accepted.eventLoop.makeFailedFuture(error) }
        }
    }

    // MARK: - Ending

    /// The SSH connection ended: stop listening and resolving. Flows end with their SSH channels.
    func closeAll() {
        closed = true
        for listener in listeners.values { listener.channel.close(promise: nil) }
        listeners.removeAll()
        nameservers.close()
    }
}

/// Why kt-shadow refused a channel or a request.
enum ShadowRefusal: Error, CustomStringConvertible {
    case closing
    case tooManyChannels
    case tooManyForwards
    case unsupportedChannel
    case noSuchForward

    var description: String {
        switch self {
        case .closing: return "the connection is closing"
        case .tooManyChannels: return "too many channels on this connection"
        case .tooManyForwards: return "too many forwarded ports on this connection"
        case .unsupportedChannel: return "channel type not supported"
        case .noSuchForward: return "no such forward, or the port is taken"
        }
    }
}

/// A dial refused before it started.
struct DialRefusal: Error {
    var failure: DialFailure
}
