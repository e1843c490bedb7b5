import KtTunnel
import KtWire
import Logging
import NIOCore
import NIOPosix

/// Why a lookup through the pod's nameservers failed.
public enum LookupError: Error, Hashable, Sendable, CustomStringConvertible {
    case noNameservers
    case timedOut
    case closed

    public var description: String {
        switch self {
        case .noNameservers: return "no nameserver in resolv.conf"
        case .timedOut: return "no nameserver answered"
        case .closed: return "the resolver was closed"
        }
    }
}

/// Asks the pod's nameservers, as the pod's own resolver would: over UDP from one socket per address family, a fresh
/// random id per query, `timeout` per try, rotating through the nameservers for `attempts` rounds, and search-list
/// expansion (``search(_:)``).
///
/// Confined to one event loop: every method must be called on it.
public final class NameserverClient: @unchecked Sendable {
    public let eventLoop: EventLoop
    public let configuration: ResolvConf
    private let logger: Logger
    private var sockets: [Int32: EventLoopFuture<Channel>] = [:]
    private var pending: [UInt16: Pending] = [:]
    private var closed = false

    private struct Pending {
        var promise: EventLoopPromise<DNSMessage>
        var query: DNSMessage
        var server: SocketAddress
        var timer: Scheduled<Void>?
    }

    /// Queries in flight at most; more fail at once (each holds an id out of 65536 and a timer).
    public static let maximumPending = 4096

    public init(eventLoop: EventLoop, configuration: ResolvConf, logger: Logger) {
        self.eventLoop = eventLoop
        self.configuration = configuration
        self.logger = logger
    }

    /// Sends `query` (its id is replaced on the wire and restored in the answer) and returns the first matching answer.
    public func exchange(_ query: DNSMessage) -> EventLoopFuture<DNSMessage> {
        eventLoop.preconditionInEventLoop()
        guard !closed else { return eventLoop.makeFailedFuture(LookupError.closed) }
        guard !configuration.nameservers.isEmpty else { return eventLoop.makeFailedFuture(LookupError.noNameservers) }
        let tries = configuration.nameservers.count * configuration.attempts
        return attempt(query, try: 0, of: tries)
    }

    private func attempt(_ query: DNSMessage, try index: Int, of tries: Int) -> EventLoopFuture<DNSMessage> {
        let server = configuration.nameservers[index % configuration.nameservers.count]
        return send(query, to: server).flatMapError { error in
            guard error as? LookupError == .timedOut, index + 1 < tries else {
                return self.eventLoop.makeFailedFuture(error)
            }
            return self.attempt(query, try: index + 1, of: tries)
        }
    }

    private func send(_ query: DNSMessage, to server: SocketAddress) -> EventLoopFuture<DNSMessage> {
        guard pending.count < Self.maximumPending else { return eventLoop.makeFailedFuture(LookupError.timedOut) }
        var candidate = UInt16.random(in: 0...UInt16.max)
        while pending[candidate] != nil { candidate &+= 1 }
        let id = candidate
        var wire = query
        wire.header.id = id
        let promise = eventLoop.makePromise(of: DNSMessage.self)
        let timer = eventLoop.scheduleTask(in: configuration.timeout) { [weak self] in
            guard let self, let entry = self.pending.removeValue(forKey: id) else { return }
            entry.promise.fail(LookupError.timedOut)
        }
        pending[id] = Pending(promise: promise, query: query, server: server, timer: timer)
        let bytes = wire.encoded()
        socket(for: server).whenComplete { result in
            switch result {
            case .success(let channel):
                channel.writeAndFlush(AddressedEnvelope(remoteAddress: server, data: bytes), promise: nil)
            case .failure(let error):
                if let entry = self.pending.removeValue(forKey: id) {
                    entry.timer?.cancel()
                    entry.promise.fail(error)
                }
            }
        }
        return promise.futureResult.map { answer in
            var answer = answer
            answer.header.id = query.header.id
            return answer
        }
    }

    private func socket(for server: SocketAddress) -> EventLoopFuture<Channel> {
        let family = server.protocol.rawValue
        if let socket = sockets[family] { return socket }
        let socket = DatagramBootstrap(group: eventLoop)
            .channelOption(.recvAllocator, value: FixedSizeRecvByteBufferAllocator(capacity: 65536))
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(AnswerHandler(client: self))
                }
            }
            .bind(host: server.protocol == .inet6 ? "::" : "0.0.0.0", port: 0)
        sockets[family] = socket
        return socket
    }

    fileprivate func received(_ envelope: AddressedEnvelope<ByteBuffer>) {
        guard let answer = try? DNSMessage(parsing: envelope.data), answer.header.isResponse,
            let entry = pending[answer.header.id], entry.server == envelope.remoteAddress,
            answer.questions == entry.query.questions
        else { return }
        pending[answer.header.id] = nil
        entry.timer?.cancel()
        entry.promise.succeed(answer)
    }

    /// Resolves `query` as a pod would: for a single question, each name of ``ResolvConf/candidates(for:)`` in turn
    /// until one has records (names in the answer that are the expanded name are written back as the asked name, so
    /// stub resolvers accept it); when none has, the first "no data" answer, else the last answer.
    public func search(_ query: DNSMessage) -> EventLoopFuture<DNSMessage> {
        guard query.questions.count == 1, let question = query.questions.first else { return exchange(query) }
        let candidates = configuration.candidates(for: question.name)
        return search(query, candidates: candidates[...], noData: nil)
    }

    private func search(_ query: DNSMessage, candidates: ArraySlice<DNSName>, noData: DNSMessage?) -> EventLoopFuture<
        DNSMessage
    > {
        guard let candidate = candidates.first else {
            return eventLoop.makeFailedFuture(LookupError.timedOut)
        }
        let asked = query.questions[0].name
        var expanded = query
        expanded.questions[0].name = candidate
        return exchange(expanded).flatMap { answer -> EventLoopFuture<DNSMessage> in
            let rewritten = Self.rewrite(answer, from: candidate, to: asked)
            let rest = candidates.dropFirst()
            if answer.responseCode == .noError, !answer.answers.isEmpty {
                return self.eventLoop.makeSucceededFuture(rewritten)
            }
            let nextNoData = noData ?? (answer.responseCode == .noError ? rewritten : nil)
            if rest.isEmpty { return self.eventLoop.makeSucceededFuture(nextNoData ?? rewritten) }
            return self.search(query, candidates: rest, noData: nextNoData)
        }
    }

    /// The answer as if `asked` had been the question.
    static func rewrite(_ answer: DNSMessage, from candidate: DNSName, to asked: DNSName) -> DNSMessage {
        guard candidate != asked else { return answer }
        var answer = answer
        for index in answer.questions.indices where answer.questions[index].name == candidate {
            answer.questions[index].name = asked
        }
        for index in answer.answers.indices where answer.answers[index].name == candidate {
            answer.answers[index].name = asked
        }
        return answer
    }

    /// The addresses `name` resolves to, IPv4 and IPv6, with the search list as glibc's `getaddrinfo` walks it: A and
    /// AAAA are asked together for each candidate name, and the first candidate with any address ends the search.
    /// Fails only when no nameserver answered for some candidate and no later one had an address.
    public func addresses(of name: String) -> EventLoopFuture<[IPAddress]> {
        guard let dnsName = try? DNSName(parsing: name) else { return eventLoop.makeSucceededFuture([]) }
        // A name with a trailing dot is absolute: asked as it is, never with the search list.
        let candidates = name.hasSuffix(".") ? [dnsName] : configuration.candidates(for: dnsName)
        return addresses(candidates: candidates[...], firstError: nil)
    }

    private func addresses(candidates: ArraySlice<DNSName>, firstError: Error?) -> EventLoopFuture<[IPAddress]> {
        guard let candidate = candidates.first else {
            if let firstError { return eventLoop.makeFailedFuture(firstError) }
            return eventLoop.makeSucceededFuture([])
        }
        let lookups = [DNSType.a, .aaaa].map { type in
            exchange(
                DNSMessage(
                    header: DNSHeader(id: 0, isResponse: false, opcode: 0, recursionDesired: true),
                    questions: [DNSQuestion(name: candidate, type: type)])
            ).map { answer -> Result<[IPAddress], Error> in
                .success(
                    answer.responseCode != .noError
                        ? []
                        : answer.answers.compactMap { record in
                            switch record.data {
                            case .a(let address): return .v4(address)
                            case .aaaa(let address): return .v6(address)
                            default: return nil
                            }
                        })
            }.recover { .failure($0) }
        }
        return EventLoopFuture.whenAllSucceed(lookups, on: eventLoop).flatMap { results in
            let found = results.flatMap { (try? $0.get()) ?? [] }
            if !found.isEmpty { return self.eventLoop.makeSucceededFuture(found) }
            var error = firstError
            for case .failure(let failure) in results where error == nil { error = failure }
            return self.addresses(candidates: candidates.dropFirst(), firstError: error)
        }
    }

    /// Fails what is in flight and closes the sockets.
    public func close() {
        eventLoop.preconditionInEventLoop()
        closed = true
        let entries = pending.values
        pending.removeAll()
        for entry in entries {
            entry.timer?.cancel()
            entry.promise.fail(LookupError.closed)
        }
        for socket in sockets.values { socket.whenSuccess { $0.close(promise: nil) } }
        sockets.removeAll()
    }
}

/// Hands the nameservers' answers to the client.
private final class AnswerHandler: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = AddressedEnvelope<ByteBuffer>
    private weak var client: NameserverClient?

    init(client: NameserverClient) { self.client = client }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        client?.received(unwrapInboundIn(data))
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        // ICMP port unreachable from a dead nameserver arrives as ECONNREFUSED on the socket; the timer handles it.
    }
}
