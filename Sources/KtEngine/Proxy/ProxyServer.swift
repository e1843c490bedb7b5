import KtTunnel
import KtWire
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

/// socks mode's front door: one port that speaks SOCKS5 (CONNECT, UDP ASSOCIATE; names resolved on the cluster
/// side, as `socks5h` asks) and HTTP (CONNECT, and plain requests for `http://` URLs), each flow dialled through
/// the tunnel. The first byte of a connection tells which: 5 is SOCKS, a letter is HTTP.
///
/// The group must have one loop, the one the tunnel's connections use too: a flow is glued to its client's socket
/// on the loop they share.
public final class ProxyServer: Sendable {
    let link: TunnelLink
    let eventLoop: any EventLoop
    let access: ProxyAccess
    let logger: Logger
    /// Flows and bytes of the clients' connections (`ktctl status`; UDP ASSOCIATE's datagrams are not counted).
    public let meter = TrafficMeter()
    private let listener = NIOLockedValueBox<(any Channel)?>(nil)

    public init(link: TunnelLink, eventLoop: any EventLoop, access: ProxyAccess, logger: Logger) {
        self.link = link
        self.eventLoop = eventLoop
        self.access = access
        self.logger = logger
    }

    /// Listens on `host:port`; returns the address bound.
    public func listen(host: String, port: Int) async throws -> SocketAddress {
        let link = self.link
        let logger = self.logger
        let access = self.access
        let meter = self.meter
        let channel = try await ServerBootstrap(group: eventLoop)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.autoRead, value: false)
            .childChannelOption(.allowRemoteHalfClosure, value: true)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(
                        ProxyHandler(link: link, access: access, meter: meter, logger: logger))
                }
            }
            .bind(host: host, port: port).get()
        listener.withLockedValue { $0 = channel }
        guard let address = channel.localAddress else { throw ProxyError("the proxy has no local address") }
        return address
    }

    public func close() {
        listener.withLockedValue { $0 }?.close(promise: nil)
    }
}

/// One client connection until it is relaying (then it leaves the pipeline to the glue).
final class ProxyHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    enum State {
        case start
        /// SOCKS5: the client chose username/password (RFC 1929) and sends them next.
        case authenticating
        case greeted
        case dialling
        case associated(SocksUDPAssociation)
        case closed
    }

    enum Style {
        case socks
        case httpConnect
        case httpForward(String)
    }

    let link: TunnelLink
    let access: ProxyAccess
    let meter: TrafficMeter
    let logger: Logger
    var state = State.start
    var pending = ByteBuffer()
    /// Whether this client may use the proxy (its socket's owner), decided when it connects.
    var verdict = ProxyAccess.Verdict.allowed

    init(link: TunnelLink, access: ProxyAccess, meter: TrafficMeter, logger: Logger) {
        self.link = link
        self.access = access
        self.meter = meter
        self.logger = logger
    }

    func channelActive(context: ChannelHandlerContext) {
        verdict = access.admits(peer: context.channel.remoteAddress, local: context.channel.localAddress)
        context.read()
        context.fireChannelActive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var bytes = unwrapInboundIn(data)
        pending.writeBuffer(&bytes)
        process(context: context)
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        switch state {
        case .start, .authenticating, .greeted, .associated: context.read()
        case .dialling, .closed: break
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        if case .associated(let association) = state { association.close() }
        state = .closed
        context.fireChannelInactive()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        // The client closed its side before the request was complete.
        if let event = event as? ChannelEvent, event == .inputClosed {
            if case .dialling = state { return }
            context.close(promise: nil)
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        logger.debug("proxy client: \(error)")
        context.close(promise: nil)
    }

    func process(context: ChannelHandlerContext) {
        do {
            switch state {
            case .start:
                guard let first = pending.getInteger(at: pending.readerIndex, as: UInt8.self) else { return }
                if case .refused(let why) = verdict {
                    // The owner hears of it; the client is told in its own protocol: SOCKS "no acceptable method",
                    // HTTP 403.
                    logger.warning("proxy: refused a connection: \(why)")
                    refuse(
                        context,
                        first == Socks5.version
                            ? context.channel.allocator.buffer(bytes: [Socks5.version, Socks5.noAcceptableMethod])
                            : Self.httpError(403, "Forbidden", why),
                        "was refused: \(why)")
                    return
                }
                if first == Socks5.version {
                    guard let methods = try Socks5.parseGreeting(&pending) else { return }
                    let method = access.credentials == nil ? Socks5.noAuthentication : Socks5.usernamePassword
                    guard methods.contains(method) else {
                        refuse(
                            context, [Socks5.version, Socks5.noAcceptableMethod],
                            access.credentials == nil
                                ? "offers no method without a password"
                                : "offers no username/password method (this proxy asks for one)")
                        return
                    }
                    write(context, [Socks5.version, method])
                    state = access.credentials == nil ? .greeted : .authenticating
                    process(context: context)
                } else if first == 4 {
                    // SOCKS4: "request rejected".
                    refuse(context, [0, 0x5b, 0, 0, 0, 0, 0, 0], "speaks SOCKS4 (use socks5h://)")
                } else {
                    guard let request = try HTTPProxyRequest.parse(&pending) else { return }
                    if access.credentials != nil {
                        let given = request.proxyAuthorization.flatMap(HTTPProxyRequest.basicCredentials)
                        guard let given, access.accepts(username: given.username, password: given.password) else {
                            refuse(
                                context,
                                ByteBuffer(
                                    string: "HTTP/1.1 407 Proxy Authentication Required\r\n"
                                        + "Proxy-Authenticate: Basic realm=\"ktctl\"\r\nContent-Length: 0\r\n"
                                        + "Connection: close\r\n\r\n"),
                                given == nil ? "sent no proxy credentials" : "sent wrong proxy credentials")
                            return
                        }
                    }
                    if let head = request.forwardedHead {
                        dial(context, request.destination, style: .httpForward(head))
                    } else {
                        dial(context, request.destination, style: .httpConnect)
                    }
                }
            case .authenticating:
                guard let given = try Socks5.parseUsernamePassword(&pending) else { return }
                guard access.accepts(username: given.username, password: given.password) else {
                    refuse(context, [1, 1], "gave a wrong username or password")
                    return
                }
                write(context, [1, 0])
                state = .greeted
                process(context: context)
            case .greeted:
                guard let request = try Socks5.parseRequest(&pending) else { return }
                switch Socks5.Command(rawValue: request.command) {
                case .connect: dial(context, request.destination, style: .socks)
                case .udpAssociate: associate(context)
                default:
                    refuse(
                        context, Socks5.reply(.commandNotSupported, allocator: context.channel.allocator),
                        "asked for SOCKS command \(request.command) (CONNECT and UDP ASSOCIATE are supported)")
                }
            case .associated:
                // Nothing more is expected on the control connection.
                pending.clear()
            case .dialling, .closed:
                break
            }
        } catch {
            let isHTTP: Bool
            if case .start = state, pending.getInteger(at: pending.readerIndex, as: UInt8.self) != Socks5.version {
                isHTTP = true
            } else {
                isHTTP = false
            }
            if isHTTP {
                refuse(context, Self.httpError(400, "Bad Request", "\(error)"), "\(error)")
            } else if case .greeted = state {
                refuse(context, Socks5.reply(.generalFailure, allocator: context.channel.allocator), "\(error)")
            } else {
                refuse(context, ByteBuffer(), "\(error)")
            }
        }
    }

    func write(_ context: ChannelHandlerContext, _ bytes: [UInt8]) {
        context.writeAndFlush(wrapOutboundOut(context.channel.allocator.buffer(bytes: bytes)), promise: nil)
    }

    /// Answers `answer` and closes.
    func refuse(_ context: ChannelHandlerContext, _ answer: [UInt8], _ why: String) {
        refuse(context, context.channel.allocator.buffer(bytes: answer), why)
    }

    func refuse(_ context: ChannelHandlerContext, _ answer: ByteBuffer, _ why: String) {
        logger.info("proxy: a client \(why); closed")
        state = .closed
        let channel = context.channel
        context.writeAndFlush(wrapOutboundOut(answer)).whenComplete { _ in channel.close(promise: nil) }
    }

    static func httpError(_ code: Int, _ reason: String, _ text: String) -> ByteBuffer {
        let body = "ktctl: \(text)\n"
        return ByteBuffer(
            string: "HTTP/1.1 \(code) \(reason)\r\nContent-Type: text/plain\r\nContent-Length: \(body.utf8.count)\r\n"
                + "Connection: close\r\n\r\n\(body)")
    }

    // MARK: - Flows

    func dial(_ context: ChannelHandlerContext, _ destination: ProxyDestination, style: Style) {
        state = .dialling
        let eventLoop = context.eventLoop
        logger.debug("proxy: dial \(destination)")
        let bound = NIOLoopBound((self, context), eventLoop: eventLoop)
        link.openTCP(host: destination.hostText, port: destination.port, on: eventLoop).hop(to: eventLoop)
            .whenComplete { result in
                let (handler, context) = bound.value
                handler.dialled(context, destination, style: style, result: result)
            }
    }

    func dialled(
        _ context: ChannelHandlerContext, _ destination: ProxyDestination, style: Style,
        result: Result<TunnelFlow, any Error>
    ) {
        let channel = context.channel
        switch result {
        case .success(let flow):
            relay(context, flow: flow, style: style)
        case .failure(let error):
            logger.info("proxy: \(destination): \(error)")
            switch style {
            case .socks:
                refuse(
                    context, Socks5.reply(Self.reply(for: error), allocator: channel.allocator),
                    "could not reach \(destination): \(error)")
            case .httpConnect, .httpForward:
                refuse(
                    context, Self.httpError(502, "Bad Gateway", "cannot reach \(destination): \(error)"),
                    "could not reach \(destination): \(error)")
            }
        }
    }

    static func reply(for error: any Error) -> Socks5.Reply {
        guard case .dial(let failure) = error as? TunnelError else { return .generalFailure }
        switch failure {
        case .refused: return .connectionRefused
        case .unreachable, .nameNotFound: return .hostUnreachable
        case .timedOut: return .ttlExpired
        case .busy, .other: return .generalFailure
        }
    }

    func relay(_ context: ChannelHandlerContext, flow: TunnelFlow, style: Style) {
        let channel = context.channel
        guard channel.isActive else {
            flow.channel.close(promise: nil)
            return
        }
        guard flow.channel.eventLoop === channel.eventLoop else {
            // The proxy and the tunnel must share their loop (see ProxyServer); say so rather than crash.
            flow.channel.close(promise: nil)
            refuse(context, ByteBuffer(), "reached a flow on another event loop (a bug in ktctl)")
            return
        }
        switch style {
        case .socks:
            context.writeAndFlush(
                wrapOutboundOut(Socks5.reply(.succeeded, allocator: channel.allocator)), promise: nil)
        case .httpConnect:
            context.writeAndFlush(
                wrapOutboundOut(ByteBuffer(string: "HTTP/1.1 200 Connection established\r\n\r\n")), promise: nil)
        case .httpForward(let head):
            flow.channel.write(ByteBuffer(string: head), promise: nil)
        }
        if pending.readableBytes > 0 {
            flow.channel.write(pending, promise: nil)
            pending.clear()
        }
        flow.channel.flush()
        state = .closed
        do {
            try meter.attach(to: flow.channel)
        } catch {
            logger.debug("proxy: meter: \(error)")
        }
        context.pipeline.syncOperations.removeHandler(self).whenComplete { [logger] _ in
            flow.glue(to: channel).whenFailure { error in logger.debug("proxy: glue: \(error)") }
        }
    }

    // MARK: - UDP

    func associate(_ context: ChannelHandlerContext) {
        state = .dialling
        let channel = context.channel
        guard let local = channel.localAddress, let ip = local.ipAddress else {
            refuse(context, Socks5.reply(.generalFailure, allocator: channel.allocator), "has no local address")
            return
        }
        let association = SocksUDPAssociation(link: link, access: access, logger: logger)
        let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        association.bind(host: ip, on: context.eventLoop).whenComplete { result in
            let (handler, context) = bound.value
            handler.associated(context, association, result: result)
        }
    }

    func associated(
        _ context: ChannelHandlerContext, _ association: SocksUDPAssociation,
        result: Result<ProxyDestination, any Error>
    ) {
        let channel = context.channel
        switch result {
        case .success(let bound):
            guard channel.isActive else {
                association.close()
                return
            }
            state = .associated(association)
            context.writeAndFlush(
                wrapOutboundOut(Socks5.reply(.succeeded, bound: bound, allocator: channel.allocator)), promise: nil)
            context.read()
        case .failure(let error):
            refuse(
                context, Socks5.reply(.generalFailure, allocator: channel.allocator), "UDP ASSOCIATE failed: \(error)")
        }
    }
}

/// The UDP socket of one SOCKS UDP ASSOCIATE and the tunnel's datagram channel behind it. Datagrams from the
/// client (its first sender's address is the only one answered) go to the cluster with a flow per destination;
/// answers come back with the SOCKS header naming their source. Ends with the control connection.
final class SocksUDPAssociation: @unchecked Sendable {
    // Everything below is touched on `eventLoop` only.
    let link: TunnelLink
    let access: ProxyAccess
    let logger: Logger
    var eventLoop: (any EventLoop)?
    var socket: (any Channel)?
    var client: SocketAddress?
    var datagrams: TunnelDatagramChannel?
    var opening = false
    var waiting: [DatagramFrame] = []
    var flows: [ProxyDestination: UInt32] = [:]
    var destinations: [UInt32: ProxyDestination] = [:]
    var nextFlow: UInt32 = 1
    var closed = false
    /// Names being looked up (through the shadow's nameserver, with the pod's search list), with the datagrams
    /// waiting for the answer; and the answers, kept for their TTL.
    var lookups: [String: NameLookup] = [:]
    var lookupFlows: [UInt32: String] = [:]
    var addresses: [String: (address: IPAddress, expires: NIODeadline)] = [:]

    struct NameLookup {
        var flow: UInt32
        var type: DNSType
        var waiting: [(destination: ProxyDestination, payload: ByteBuffer)]
    }

    /// How long a name's lookup may take before its datagrams are dropped; how many may wait for it.
    static let lookupTimeout = TimeAmount.seconds(5)
    static let waitingPerName = 64

    init(link: TunnelLink, access: ProxyAccess, logger: Logger) {
        self.link = link
        self.access = access
        self.logger = logger
    }

    func bind(host: String, on eventLoop: any EventLoop) -> EventLoopFuture<ProxyDestination> {
        self.eventLoop = eventLoop
        return DatagramBootstrap(group: eventLoop)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(SocksUDPHandler(association: self))
                }
            }
            .bind(host: host, port: 0)
            .flatMapThrowing { channel in
                self.socket = channel
                guard let address = channel.localAddress, let ip = address.ipAddress, let port = address.port,
                    let parsed = IPAddress(ip)
                else { throw ProxyError("the UDP socket has no address") }
                return ProxyDestination(host: .address(parsed), port: port)
            }
    }

    func fromClient(_ envelope: AddressedEnvelope<ByteBuffer>) {
        if client == nil {
            // The first sender becomes the client, if its socket belongs to a user the proxy serves.
            if case .refused(let why) = access.admits(
                peer: envelope.remoteAddress, local: socket?.localAddress, udp: true)
            {
                logger.info("proxy UDP: a datagram from \(envelope.remoteAddress) was dropped: \(why)")
                return
            }
            client = envelope.remoteAddress
        }
        guard client == envelope.remoteAddress else { return }
        var payload = envelope.data
        let destination: ProxyDestination
        do {
            destination = try Socks5.parseDatagram(&payload)
        } catch {
            logger.debug("proxy UDP: \(error); dropped")
            return
        }
        switch destination.host {
        case .address(let address):
            send(payload, to: destination, via: address)
        case .name(let name):
            if let known = addresses[name], known.expires > .now() {
                send(payload, to: destination, via: known.address)
            } else {
                lookUp(name, then: (destination, payload))
            }
        }
    }

    /// Sends `payload` to `address`, on the flow of `destination` (as the client named it: replies say that name).
    func send(_ payload: ByteBuffer, to destination: ProxyDestination, via address: IPAddress) {
        let frameAddress: DatagramFrame.Address
        switch address {
        case .v4(let v4): frameAddress = .v4(v4)
        case .v6(let v6): frameAddress = .v6(v6)
        }
        let flow: UInt32
        if let known = flows[destination] {
            flow = known
        } else {
            flow = newFlow()
            flows[destination] = flow
            destinations[flow] = destination
        }
        send(
            DatagramFrame(
                kind: .udp, flow: flow, address: frameAddress, port: UInt16(destination.port), payload: payload))
    }

    func send(_ frame: DatagramFrame) {
        if let datagrams {
            datagrams.send(frame)
            return
        }
        if waiting.count < 64 { waiting.append(frame) }
        openDatagrams()
    }

    func newFlow() -> UInt32 {
        let flow = nextFlow
        nextFlow = nextFlow == .max ? 1 : nextFlow + 1
        return flow
    }

    // MARK: - Names

    /// Asks the shadow's nameserver for `name` (A, then AAAA if it has none); `datagram` waits for the answer.
    func lookUp(_ name: String, then datagram: (destination: ProxyDestination, payload: ByteBuffer)) {
        if let pending = lookups[name] {
            if pending.waiting.count < Self.waitingPerName { lookups[name]?.waiting.append(datagram) }
            return
        }
        let flow = newFlow()
        lookups[name] = NameLookup(flow: flow, type: .a, waiting: [datagram])
        lookupFlows[flow] = name
        guard query(name, type: .a, flow: flow) else { return }
        eventLoop?.scheduleTask(in: Self.lookupTimeout) { [weak self] in
            guard let self, let lookup = self.lookups[name], lookup.flow == flow else { return }
            self.logger.info(
                "proxy UDP: no answer for \(name) within \(Self.lookupTimeout.nanoseconds / 1_000_000_000) s; its \(lookup.waiting.count) datagram(s) dropped"
            )
            self.endLookup(name)
        }
    }

    /// Sends the query; false (and the lookup ended) when the name is not a DNS name.
    @discardableResult
    func query(_ name: String, type: DNSType, flow: UInt32) -> Bool {
        let question: DNSName
        do {
            question = try DNSName(parsing: name)
        } catch {
            logger.info("proxy UDP: \"\(name)\" is not a host name (\(error)); its datagrams were dropped")
            endLookup(name)
            return false
        }
        let message = DNSMessage(
            header: DNSHeader(id: UInt16(truncatingIfNeeded: flow)),
            questions: [DNSQuestion(name: question, type: type)])
        send(DatagramFrame(kind: .udp, flow: flow, address: .nameserver, port: 53, payload: message.encoded()))
        return true
    }

    func answered(_ name: String, _ payload: ByteBuffer) {
        guard var lookup = lookups[name], let answer = try? DNSMessage(parsing: payload), answer.header.isResponse
        else { return }
        let found = answer.answers.lazy.compactMap { record -> (IPAddress, UInt32)? in
            switch record.data {
            case .a(let v4): return (.v4(v4), record.ttl)
            case .aaaa(let v6): return (.v6(v6), record.ttl)
            default: return nil
            }
        }.first
        guard let (address, ttl) = found else {
            if lookup.type == .a, answer.header.responseCode == .noError {
                lookup.type = .aaaa
                lookups[name] = lookup
                query(name, type: .aaaa, flow: lookup.flow)
            } else {
                logger.info(
                    "proxy UDP: \(name) has no address in the cluster (\(answer.responseCode)); its datagrams were dropped"
                )
                endLookup(name)
            }
            return
        }
        if addresses.count >= 1024 { addresses = [:] }
        addresses[name] = (address, .now() + .seconds(Int64(min(max(ttl, 1), 300))))
        endLookup(name)
        for datagram in lookup.waiting { send(datagram.payload, to: datagram.destination, via: address) }
    }

    func endLookup(_ name: String) {
        guard let lookup = lookups.removeValue(forKey: name) else { return }
        lookupFlows[lookup.flow] = nil
    }

    func openDatagrams() {
        guard !opening, let eventLoop, let client = link.client else { return }
        opening = true
        let promise = eventLoop.makePromise(of: TunnelDatagramChannel.self)
        promise.completeWithTask {
            try await client.openDatagramChannel { [weak self] frame in
                guard let association = self else { return }
                eventLoop.execute { association.fromCluster(frame) }
            }
        }
        promise.futureResult.whenComplete { result in
            self.opening = false
            switch result {
            case .success(let channel):
                if self.closed {
                    channel.close()
                    return
                }
                self.datagrams = channel
                for frame in self.waiting { channel.send(frame) }
                self.waiting = []
                channel.channel.closeFuture.whenComplete { _ in
                    eventLoop.execute { if self.datagrams === channel { self.datagrams = nil } }
                }
            case .failure(let error):
                self.waiting = []
                self.logger.warning("proxy UDP: no datagram channel: \(error)")
            }
        }
    }

    func fromCluster(_ frame: DatagramFrame) {
        if frame.kind == .udp, case .nameserver = frame.address, let name = lookupFlows[frame.flow] {
            answered(name, frame.payload)
            return
        }
        guard frame.kind == .udp, let socket, let client, let destination = destinations[frame.flow] else { return }
        let source: ProxyDestination
        switch (frame.address, destination.host) {
        case (.nameserver, _), (_, .name): source = destination
        case (.v4(let v4), _): source = ProxyDestination(host: .address(.v4(v4)), port: Int(frame.port))
        case (.v6(let v6), _): source = ProxyDestination(host: .address(.v6(v6)), port: Int(frame.port))
        }
        var datagram = Socks5.datagramHeader(from: source, allocator: socket.allocator)
        var payload = frame.payload
        datagram.writeBuffer(&payload)
        socket.writeAndFlush(AddressedEnvelope(remoteAddress: client, data: datagram), promise: nil)
    }

    func close() {
        guard let eventLoop else { return }
        eventLoop.execute {
            self.closed = true
            self.socket?.close(promise: nil)
            self.datagrams?.close()
            self.datagrams = nil
        }
    }
}

final class SocksUDPHandler: ChannelInboundHandler {
    typealias InboundIn = AddressedEnvelope<ByteBuffer>
    let association: SocksUDPAssociation

    init(association: SocksUDPAssociation) {
        self.association = association
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        association.fromClient(unwrapInboundIn(data))
    }
}
