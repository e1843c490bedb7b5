import Foundation
import KtTunnel
import KtWire
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

/// Which names are the cluster's, decided from the name alone (no query is sent to find out).
public struct ClusterNames: Sendable {
    /// `cluster.local` by default.
    public var domain: DNSName
    /// The session's namespace: short names are services there (the shadow runs in it, and its search list says so).
    public var namespace: String
    /// Namespaces known to exist, for `svc.ns` names.
    public var namespaces: Set<String>

    public init(domain: DNSName, namespace: String, namespaces: Set<String>) {
        self.domain = domain
        self.namespace = namespace
        self.namespaces = namespaces
    }

    /// The search list a laptop's resolver should use: the namespace's services first, as in a pod.
    public var searchList: [String] {
        ["\(namespace).svc.\(domain)", "svc.\(domain)", "\(domain)"]
    }

    public enum Route: Sendable, Hashable {
        /// Ask the cluster (through the shadow, with the pod's search list).
        case cluster
        /// Ask the cluster, and the upstream if the cluster has no such name (a single label: maybe a LAN host).
        case clusterThenUpstream
        case upstream
    }

    /// Names under the cluster domain, `svc.ns.svc`, `svc.ns` with a known namespace: the cluster; a single label:
    /// the cluster, then the upstream; everything else: the upstream.
    public func route(_ name: DNSName) -> Route {
        if name.isSubdomain(of: domain) { return .cluster }
        let labels = name.canonicalLabels.map { String(decoding: $0, as: UTF8.self) }
        switch labels.count {
        case 1: return .clusterThenUpstream
        case 2: return namespaces.contains(labels[1]) || labels[1] == namespace ? .cluster : .upstream
        case 3 where labels[2] == "svc": return .cluster
        default: return .upstream
        }
    }
}

/// The resolver `ktctl connect` puts on the TUN's address: cluster names through the tunnel (the shadow resolves
/// them as a pod would), everything else to the nameservers the machine had. Answers are cached for their TTL;
/// "no such name" for at most `negativeTTL`, so a Service created after connect resolves within seconds.
public final class ClusterResolver: Sendable {
    struct State {
        var names: ClusterNames
        var pending: [UInt32: Pending] = [:]
        /// Pending queries not sent yet: no datagram channel was open when they came (the session just started,
        /// or the tunnel is being reopened). They go out when one opens, or time out.
        var unsent: [UInt32] = []
        var nextFlow: UInt32 = 1
        var cache: [CacheKey: CacheEntry] = [:]
        var counters = ResolverCounters()
    }

    struct Pending {
        var query: DNSMessage
        var reply: @Sendable (DNSMessage?) -> Void
    }

    struct CacheKey: Hashable {
        var name: DNSName
        var type: DNSType
    }

    struct CacheEntry {
        var answer: DNSMessage
        var expires: NIODeadline
    }

    private let state: NIOLockedValueBox<State>
    let upstreams: [SocketAddress]
    let group: any EventLoopGroup
    let logger: Logger
    public let negativeTTL: TimeAmount
    public let timeout: TimeAmount
    private let channels = NIOLockedValueBox<[Channel]>([])
    /// Queries for cluster names go to the shadow's nameserver on this (reopened when it closes).
    private let datagrams = NIOLockedValueBox<DatagramPath?>(nil)

    public init(
        names: ClusterNames, upstreams: [SocketAddress], link: TunnelLink, group: any EventLoopGroup, logger: Logger,
        negativeTTL: TimeAmount = .seconds(1), timeout: TimeAmount = .seconds(3)
    ) {
        state = NIOLockedValueBox(State(names: names))
        self.upstreams = upstreams
        self.group = group
        self.logger = logger
        self.negativeTTL = negativeTTL
        self.timeout = timeout
        let path = DatagramPath(
            link: link, logger: logger, onFrame: { [weak self] frame in self?.answered(frame) },
            onChannel: { [weak self] channel in self?.sendUnsent(on: channel) })
        datagrams.withLockedValue { $0 = path }
    }

    public var counters: ResolverCounters { state.withLockedValue { $0.counters } }

    public func update(namespaces: Set<String>) {
        state.withLockedValue { $0.names.namespaces = namespaces }
    }

    /// Listens on `host:port` (UDP) until ``close()``.
    public func listen(host: String, port: Int) async throws -> SocketAddress? {
        let channel = try await DatagramBootstrap(group: group)
            .channelOption(.socketOption(.so_reuseaddr), value: 1)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(ResolverHandler(resolver: self))
                }
            }
            .bind(host: host, port: port).get()
        channels.withLockedValue { $0.append(channel) }
        return channel.localAddress
    }

    public func close() {
        for channel in channels.withLockedValue({ $0 }) { channel.close(promise: nil) }
        datagrams.withLockedValue { $0 }?.close()
    }

    // MARK: - Answering

    /// Answers `query`; `reply` gets the answer (nil: none, the client will retry).
    public func resolve(_ query: DNSMessage, reply: @escaping @Sendable (DNSMessage?) -> Void) {
        guard let question = query.questions.first, query.questions.count == 1 else {
            reply(query.makeResponse(responseCode: .formatError))
            return
        }
        let key = CacheKey(name: question.name, type: question.type)
        let now = NIODeadline.now()
        let (cached, route) = state.withLockedValue { state -> (DNSMessage?, ClusterNames.Route) in
            state.counters.queries += 1
            if let entry = state.cache[key], entry.expires > now {
                state.counters.cacheHits += 1
                return (entry.answer, .cluster)
            }
            return (nil, state.names.route(question.name))
        }
        if let cached {
            var answer = cached
            answer.header.id = query.header.id
            answer.questions = query.questions
            reply(answer)
            return
        }
        let store: @Sendable (DNSMessage?) -> Void = { [weak self] answer in
            if let answer, let self { self.remember(key, answer) }
            reply(answer)
        }
        switch route {
        case .cluster:
            askCluster(query) { store($0) }
        case .clusterThenUpstream:
            askCluster(query) { [weak self] answer in
                if let answer, answer.header.responseCode == .noError, !answer.answers.isEmpty {
                    store(answer)
                } else if let self {
                    self.askUpstream(query, reply: store)
                } else {
                    reply(nil)
                }
            }
        case .upstream:
            askUpstream(query, reply: reply)
        }
    }

    func remember(_ key: CacheKey, _ answer: DNSMessage) {
        guard answer.header.responseCode == .noError || answer.header.responseCode == .nameError,
            !answer.header.truncated
        else { return }
        let ttl: TimeAmount
        if answer.answers.isEmpty {
            ttl = negativeTTL
        } else {
            ttl = .seconds(Int64(answer.answers.map(\.ttl).min() ?? 0))
        }
        guard ttl > .zero else { return }
        state.withLockedValue { state in
            if state.cache.count > 4096 { state.cache = [:] }
            state.cache[key] = CacheEntry(answer: answer, expires: .now() + ttl)
        }
    }

    /// Sends `query` to the pod's nameserver through the shadow; while no datagram channel is open, it waits for one
    /// (up to `timeout`, as long as an answer may take) rather than failing at once.
    func askCluster(_ query: DNSMessage, reply: @escaping @Sendable (DNSMessage?) -> Void) {
        let channel = datagrams.withLockedValue { $0 }?.channel
        let flow = state.withLockedValue { state -> UInt32 in
            let flow = state.nextFlow
            state.nextFlow = state.nextFlow == .max ? 1 : state.nextFlow + 1
            state.pending[flow] = Pending(query: query, reply: reply)
            state.counters.cluster += 1
            if channel == nil { state.unsent.append(flow) }
            return flow
        }
        if let channel { send(flow, query, on: channel) }
        group.next().scheduleTask(in: timeout) { [weak self] in
            guard let self,
                let pending = self.state.withLockedValue({ state -> Pending? in
                    state.unsent.removeAll { $0 == flow }
                    return state.pending.removeValue(forKey: flow)
                })
            else { return }
            pending.reply(pending.query.makeResponse(responseCode: .serverFailure))
        }
    }

    private func send(_ flow: UInt32, _ query: DNSMessage, on channel: TunnelDatagramChannel) {
        channel.send(DatagramFrame(kind: .udp, flow: flow, address: .nameserver, port: 53, payload: query.encoded()))
    }

    /// A datagram channel opened: the queries that waited for one go out.
    func sendUnsent(on channel: TunnelDatagramChannel) {
        let waiting = state.withLockedValue { state -> [(UInt32, DNSMessage)] in
            defer { state.unsent = [] }
            return state.unsent.compactMap { flow in state.pending[flow].map { (flow, $0.query) } }
        }
        for (flow, query) in waiting { send(flow, query, on: channel) }
    }

    func answered(_ frame: DatagramFrame) {
        guard frame.kind == .udp,
            let pending = state.withLockedValue({ $0.pending.removeValue(forKey: frame.flow) })
        else { return }
        // The shadow's kind-2 frame for this flow, or an answer that does not parse: no answer.
        guard var answer = try? DNSMessage(parsing: frame.payload) else {
            pending.reply(pending.query.makeResponse(responseCode: .serverFailure))
            return
        }
        answer.header.id = pending.query.header.id
        pending.reply(answer)
    }

    func askUpstream(_ query: DNSMessage, reply: @escaping @Sendable (DNSMessage?) -> Void) {
        guard let upstream = upstreams.first else {
            reply(query.makeResponse(responseCode: .serverFailure))
            return
        }
        state.withLockedValue { $0.counters.upstream += 1 }
        let eventLoop = group.next()
        let done = NIOLockedValueBox(false)
        let finish: @Sendable (DNSMessage?) -> Void = { answer in
            let first = done.withLockedValue { done -> Bool in
                defer { done = true }
                return !done
            }
            if first { reply(answer) }
        }
        let family: NIOBSDSocket.ProtocolFamily = upstream.protocol
        DatagramBootstrap(group: eventLoop)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(
                        UpstreamHandler(expectedID: query.header.id, finish: finish))
                }
            }
            .bind(host: family == .inet6 ? "::" : "0.0.0.0", port: 0)
            .whenComplete { result in
                switch result {
                case .failure:
                    finish(query.makeResponse(responseCode: .serverFailure))
                case .success(let channel):
                    let envelope = AddressedEnvelope(remoteAddress: upstream, data: query.encoded())
                    channel.writeAndFlush(envelope, promise: nil)
                    eventLoop.scheduleTask(in: self.timeout) {
                        finish(query.makeResponse(responseCode: .serverFailure))
                        channel.close(promise: nil)
                    }
                    channel.closeFuture.whenComplete { _ in }
                }
            }
    }
}

public struct ResolverCounters: Sendable, Hashable {
    public var queries = 0
    public var cacheHits = 0
    public var cluster = 0
    public var upstream = 0
}

/// One query in, one answer out, on the resolver's socket.
final class ResolverHandler: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = AddressedEnvelope<ByteBuffer>
    typealias OutboundOut = AddressedEnvelope<ByteBuffer>
    let resolver: ClusterResolver

    init(resolver: ClusterResolver) {
        self.resolver = resolver
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let envelope = unwrapInboundIn(data)
        guard let query = try? DNSMessage(parsing: envelope.data), !query.header.isResponse else { return }
        let limit = max(512, query.edns.map { Int($0.udpPayloadSize) } ?? 512)
        let channel = context.channel
        let remote = envelope.remoteAddress
        resolver.resolve(query) { answer in
            guard let answer else { return }
            channel.writeAndFlush(
                AddressedEnvelope(remoteAddress: remote, data: answer.encoded(limit: limit)), promise: nil)
        }
    }
}

/// Waits for the upstream's answer to one query.
final class UpstreamHandler: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = AddressedEnvelope<ByteBuffer>
    let expectedID: UInt16
    let finish: @Sendable (DNSMessage?) -> Void

    init(expectedID: UInt16, finish: @escaping @Sendable (DNSMessage?) -> Void) {
        self.expectedID = expectedID
        self.finish = finish
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let envelope = unwrapInboundIn(data)
        guard let answer = try? DNSMessage(parsing: envelope.data), answer.header.isResponse,
            answer.header.id == expectedID
        else { return }
        finish(answer)
        context.close(promise: nil)
    }
}
