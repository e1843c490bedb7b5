import Foundation
import Logging
import NIOCore
import NIOHTTP1

/// The HTTP/1 handlers of a client connection, kept so that an upgrade can take them out again.
struct HTTP1ServerHandlers {
    var decoder: ByteToMessageHandler<HTTPRequestDecoder>
    var encoder: HTTPResponseEncoder
    var errors: HTTPServerProtocolErrorHandler

    static func install(on pipeline: ChannelPipeline.SynchronousOperations, context: ProxyContext) throws {
        let handlers = HTTP1ServerHandlers(
            decoder: ByteToMessageHandler(HTTPRequestDecoder(leftOverBytesStrategy: .forwardBytes)),
            encoder: HTTPResponseEncoder(), errors: HTTPServerProtocolErrorHandler())
        // No HTTPServerPipelineHandler: it holds reads while each response is written, which costs two epoll_ctl
        // calls per request; HTTP1Proxy queues a pipelined request itself (rare: browsers and wrk do not pipeline).
        try pipeline.addHandlers([handlers.encoder, handlers.decoder, handlers.errors])
        try pipeline.addHandler(HTTP1Proxy(context: context, handlers: handlers))
    }

    /// Everything but the decoder: nothing written from here on is encoded as HTTP/1.
    func removeAllButDecoder(from pipeline: ChannelPipeline.SynchronousOperations) {
        pipeline.removeHandler(errors, promise: nil)
        pipeline.removeHandler(encoder, promise: nil)
    }

    /// The decoder goes last: what it holds beyond the request head goes on to the handler that follows.
    func removeDecoder(from pipeline: ChannelPipeline.SynchronousOperations) {
        pipeline.removeHandler(decoder, promise: nil)
    }
}

/// One upstream HTTP/1.1 connection, reused for the next request of the same client to the same upstream.
final class HTTP1Upstream: ChannelInboundHandler, RemovableChannelHandler, @unchecked Sendable {
    typealias InboundIn = HTTPClientResponsePart
    typealias OutboundOut = HTTPClientRequestPart

    let host: String
    let port: Int
    var key: String { "\(host):\(port)" }
    var channel: (any Channel)?
    let encoder = HTTPRequestEncoder()
    let decoder = ByteToMessageHandler(
        HTTPResponseDecoder(leftOverBytesStrategy: .forwardBytes, informationalResponseStrategy: .forward))
    /// The proxy this connection answers now.
    weak var owner: HTTP1Proxy?

    init(host: String, port: Int) {
        self.host = host
        self.port = port
    }

    func install(on channel: any Channel) throws {
        self.channel = channel
        try channel.pipeline.syncOperations.addHandlers([encoder, decoder, self])
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        owner?.upstreamRead(self, unwrapInboundIn(data))
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        owner?.upstreamReadComplete()
    }

    func channelInactive(context: ChannelHandlerContext) {
        owner?.upstreamClosed(self)
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        owner?.upstreamWritabilityChanged(context.channel.isWritable)
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        context.close(promise: nil)
    }
}

/// A client's HTTP/1.1 connection: each request routed by its headers to a shadow or to the original pods, its body
/// and the response streamed both ways (chunked or not, `Expect: 100-continue` and its interim answer passed on), an
/// `Upgrade` (WebSocket and the like) carried on as raw bytes once the upstream agrees, and `Upgrade: h2c` taken
/// here: the connection turns into HTTP/2 and every stream is routed on its own.
final class HTTP1Proxy: ChannelInboundHandler, RemovableChannelHandler, @unchecked Sendable {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    let proxy: ProxyContext
    let handlers: HTTP1ServerHandlers
    private var context: ChannelHandlerContext?

    /// The request in progress.
    private struct Exchange {
        var head: HTTPRequestHead
        var upstream: Upstream
        var port: Int
        var why: String
        var started = ContinuousClock.now
        var connection: HTTP1Upstream?
        /// Parts read before the upstream connection was up.
        var pending: [HTTPClientRequestPart] = []
        var requestEnded = false
        var responseEnded = false
        var responseStarted = false
        var status: HTTPResponseStatus?
        var bytes = 0
        var upgrade = false
        /// The upstream's 101, while its end is awaited.
        var switching: HTTPResponseHead?
        /// The upstream answered (502 sent, say); the rest of the request is dropped and the client closed.
        var failed = false
        var upstreamKeepAlive = true
        /// On a kept connection (which the upstream may close at any moment: its keep-alive timeout).
        var reused = false
        var retried = false
        var bodySent = false
    }

    private var exchange: Exchange?
    private var keepAlive = true
    /// Parts of pipelined requests, handled once the current one is answered.
    private var queued: [HTTPServerRequestPart] = []
    /// The client's address, for the access log (worked out once).
    private var remote: String?
    private var readsHeld = false
    /// An `Upgrade: h2c` request, taken when its end has been read.
    private var h2cUpgrade: (HTTPRequestHead, (upstream: Upstream, port: Int, why: String))?
    /// Upstream connections at rest, by `host:port`; the latest one aside (most clients keep to one upstream).
    private var idle: [String: HTTP1Upstream] = [:]
    private var lastIdle: HTTP1Upstream?

    init(context: ProxyContext, handlers: HTTP1ServerHandlers) {
        self.proxy = context
        self.handlers = handlers
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
    }

    func channelInactive(context: ChannelHandlerContext) {
        for connection in idle.values { connection.channel?.close(promise: nil) }
        idle = [:]
        lastIdle?.channel?.close(promise: nil)
        lastIdle = nil
        exchange?.connection?.channel?.close(promise: nil)
        exchange = nil
        context.fireChannelInactive()
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        exchange?.connection?.channel?.setOption(ChannelOptions.autoRead, value: context.channel.isWritable)
            .whenFailure { _ in }
        context.fireChannelWritabilityChanged()
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        context.close(promise: nil)
    }

    // MARK: - Requests

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let part = unwrapInboundIn(data)
        // A request that arrives while the one before is still being answered (HTTP pipelining) waits, with reads
        // held so that a pipelining client cannot fill memory.
        if !queued.isEmpty || (exchange?.requestEnded == true && exchange != nil) {
            queued.append(part)
            if queued.count == 1 {
                readsHeld = true
                context.channel.setOption(ChannelOptions.autoRead, value: false).whenFailure { _ in }
            }
            return
        }
        handle(part, context: context)
    }

    private func handle(_ part: HTTPServerRequestPart, context: ChannelHandlerContext) {
        switch part {
        case .head(let head):
            begin(head, context: context)
        case .body(let body):
            exchange?.bodySent = true
            forward(.body(.byteBuffer(body)))
        case .end(let trailers):
            if let (head, decision) = h2cUpgrade {
                // Taken once the decoder is done with the request (it still has its end to deliver at the head).
                h2cUpgrade = nil
                H2CUpgrade.accept(
                    head, decision: decision, proxy: proxy, handlers: handlers, context: context, from: self)
                return
            }
            exchange?.requestEnded = true
            forward(.end(trailers))
            if exchange?.responseEnded == true { finish() }
        }
    }

    private func begin(_ received: HTTPRequestHead, context: ChannelHandlerContext) {
        var head = received
        keepAlive = head.isKeepAlive
        let decision = proxy.decide { head.headers[$0] }
        let upgrade =
            head.headers.contains(name: "upgrade")
            && head.headers[canonicalForm: "connection"].contains { $0.lowercased() == "upgrade" }
        if upgrade, head.headers["upgrade"].contains(where: { $0.lowercased().contains("h2c") }),
            head.headers.contains(name: "http2-settings"), !Self.hasBody(head)
        {
            h2cUpgrade = (head, decision)
            return
        }
        Self.dropHopByHop(&head.headers, keeping: upgrade ? ["upgrade"] : [])
        if upgrade { head.headers.add(name: "connection", value: "upgrade") }
        var exchange = Exchange(
            head: head, upstream: decision.upstream, port: decision.port, why: decision.why, upgrade: upgrade)
        exchange.pending = [.head(head)]
        self.exchange = exchange
        // The upstream of the previous request, kept aside: the usual case, found without building a key.
        if let last = lastIdle, last.host == decision.upstream.host, last.port == decision.port {
            lastIdle = nil
            if last.channel?.isActive == true {
                self.exchange?.reused = true
                attach(last)
                return
            }
        }
        let key = "\(decision.upstream.host):\(decision.port)"
        if let connection = idle.removeValue(forKey: key), connection.channel?.isActive == true {
            self.exchange?.reused = true
            attach(connection)
            return
        }
        dial(decision.upstream, port: decision.port, on: context.eventLoop)
    }

    /// A new upstream connection for the exchange in progress; its pending parts go once it is up.
    private func dial(_ upstream: Upstream, port: Int, on eventLoop: any EventLoop) {
        let connection = HTTP1Upstream(host: upstream.host, port: port)
        connection.owner = self
        self.exchange?.connection = connection
        proxy.connect(upstream, port: port, on: eventLoop) { channel in
            channel.eventLoop.makeCompletedFuture { try connection.install(on: channel) }
        }.whenComplete { [weak self] result in
            guard let self, self.exchange?.connection === connection else {
                if case .success(let channel) = result { channel.close(promise: nil) }
                return
            }
            switch result {
            case .success: self.attach(connection)
            case .failure(let error): self.fail(error)
            }
        }
    }

    private func attach(_ connection: HTTP1Upstream) {
        guard var exchange else { return }
        connection.owner = self
        exchange.connection = connection
        let pending = exchange.pending
        exchange.pending = []
        self.exchange = exchange
        guard let channel = connection.channel else { return }
        for part in pending { channel.write(part, promise: nil) }
        channel.flush()
    }

    private func forward(_ part: HTTPClientRequestPart) {
        guard exchange != nil, exchange?.failed == false else { return }
        if let channel = exchange?.connection?.channel, exchange?.pending.isEmpty == true, channel.isActive {
            if case .end = part {
                channel.writeAndFlush(part, promise: nil)
            } else {
                channel.write(part, promise: nil)
            }
        } else {
            exchange?.pending.append(part)
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        exchange?.connection?.channel?.flush()
        context.fireChannelReadComplete()
    }

    // MARK: - Responses

    func upstreamRead(_ connection: HTTP1Upstream, _ part: HTTPClientResponsePart) {
        guard let context, var exchange, exchange.connection === connection else { return }
        switch part {
        case .head(var head):
            if head.status == .switchingProtocols, exchange.upgrade {
                // Switched at the response's end: the decoder still has that to deliver.
                exchange.switching = head
                self.exchange = exchange
                return
            }
            if head.status.code >= 100 && head.status.code < 200 {
                // An interim answer (100 Continue, 103 Early Hints): passed on as it came.
                context.writeAndFlush(
                    wrapOutboundOut(
                        .head(HTTPResponseHead(version: head.version, status: head.status, headers: head.headers))),
                    promise: nil)
                return
            }
            exchange.upstreamKeepAlive = head.isKeepAlive
            Self.dropHopByHop(&head.headers, keeping: [])
            if !keepAlive { head.headers.add(name: "connection", value: "close") }
            exchange.status = head.status
            exchange.responseStarted = true
            self.exchange = exchange
            context.write(
                wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: head.status, headers: head.headers))),
                promise: nil)
        case .body(let body):
            self.exchange?.bytes += body.readableBytes
            context.write(wrapOutboundOut(.body(.byteBuffer(body))), promise: nil)
        case .end(let trailers):
            if let head = exchange.switching {
                switchToRaw(head, connection: connection, context: context)
                return
            }
            self.exchange?.responseEnded = true
            context.writeAndFlush(wrapOutboundOut(.end(trailers)), promise: nil)
            if self.exchange?.requestEnded == true { finish() }
        }
    }

    func upstreamReadComplete() {
        context?.flush()
    }

    func upstreamWritabilityChanged(_ writable: Bool) {
        context?.channel.setOption(ChannelOptions.autoRead, value: writable).whenFailure { _ in }
    }

    func upstreamClosed(_ connection: HTTP1Upstream) {
        if lastIdle === connection { lastIdle = nil }
        if idle[connection.key] === connection { idle[connection.key] = nil }
        guard var exchange, exchange.connection === connection, !exchange.responseEnded else { return }
        if exchange.responseStarted {
            context?.close(promise: nil)
        } else if exchange.reused, !exchange.retried, !exchange.bodySent, Self.isIdempotent(exchange.head.method),
            let eventLoop = context?.eventLoop
        {
            // A kept connection the upstream closed (its keep-alive timeout) as the request went out: nothing was
            // answered, there was no body and the method is idempotent (RFC 9110 §9.2.2), so the request goes again,
            // once, on a new connection.
            exchange.retried = true
            exchange.reused = false
            exchange.pending = [.head(exchange.head)] + (exchange.requestEnded ? [.end(nil)] : [])
            self.exchange = exchange
            dial(exchange.upstream, port: exchange.port, on: eventLoop)
        } else {
            fail(ChannelError.eof)
        }
    }

    /// The request is answered: logged, its upstream connection kept for the next request (or closed).
    private func finish() {
        guard let exchange, let context else { return }
        self.exchange = nil
        log(exchange)
        if let connection = exchange.connection, exchange.upstreamKeepAlive, connection.channel?.isActive == true,
            !exchange.failed
        {
            connection.owner = nil
            if let previous = lastIdle, previous !== connection {
                // The one aside moves to the table (closing one there for the same upstream).
                idle[previous.key]?.channel?.close(promise: nil)
                idle[previous.key] = previous
            }
            lastIdle = connection
        } else {
            exchange.connection?.channel?.close(promise: nil)
        }
        if !keepAlive || exchange.failed {
            context.close(promise: nil)
            return
        }
        // The next pipelined request, if one waits.
        while !queued.isEmpty, self.exchange == nil || self.exchange?.requestEnded == false {
            handle(queued.removeFirst(), context: context)
        }
        if queued.isEmpty, readsHeld {
            readsHeld = false
            context.channel.setOption(ChannelOptions.autoRead, value: true).whenFailure { _ in }
        }
    }

    /// The upstream cannot be reached (or went away before answering): 502, naming it, and the client is closed.
    private func fail(_ error: Error) {
        guard let context, var exchange, !exchange.failed else { return }
        exchange.failed = true
        exchange.status = .badGateway
        exchange.responseEnded = true
        exchange.requestEnded = true
        self.exchange = exchange
        exchange.connection?.channel?.close(promise: nil)
        let text = badGatewayText(exchange.upstream, port: exchange.port, error)
        var headers = HTTPHeaders()
        headers.add(name: "content-type", value: "text/plain; charset=utf-8")
        headers.add(name: "content-length", value: String(text.utf8.count))
        headers.add(name: "connection", value: "close")
        context.write(
            wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: .badGateway, headers: headers))),
            promise: nil)
        context.write(wrapOutboundOut(.body(.byteBuffer(ByteBuffer(string: text)))), promise: nil)
        context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
        proxy.logger.warning("\(text.dropLast())")
        finish()
    }

    private func log(_ exchange: Exchange) {
        guard proxy.accessLog != nil else { return }
        let elapsed = ContinuousClock.now - exchange.started
        let micros = elapsed.components.seconds * 1_000_000 + elapsed.components.attoseconds / 1_000_000_000_000
        let hundredths = (micros % 1000) / 10
        if remote == nil { remote = context?.remoteAddress?.ipAddress ?? "?" }
        proxy.log(
            "\(remote ?? "?") \"\(exchange.head.method) \(exchange.head.uri) HTTP/1.1\" [\(exchange.why)] → "
                + "\(exchange.upstream):\(exchange.port) \(exchange.status?.code ?? 0) \(exchange.bytes) B "
                + "\(micros / 1000).\(hundredths < 10 ? "0" : "")\(hundredths) ms")
    }

    // MARK: - Upgrades

    /// The upstream agreed to an `Upgrade`: its 101 goes to the client, and from here on both connections carry raw
    /// bytes to each other.
    private func switchToRaw(_ head: HTTPResponseHead, connection: HTTP1Upstream, context: ChannelHandlerContext) {
        guard let exchange, let upstream = connection.channel else { return }
        self.exchange = nil
        var log = exchange
        log.status = head.status
        self.log(log)
        context.writeAndFlush(
            wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: head.status, headers: head.headers))),
            promise: nil)
        let (clientSide, upstreamSide) = Glue<ByteBuffer>.pair()
        do {
            let clientPipeline = context.pipeline.syncOperations
            let upstreamPipeline = upstream.pipeline.syncOperations
            try clientPipeline.addHandler(clientSide)
            try upstreamPipeline.addHandler(upstreamSide)
            // Encoders first on both sides, then the decoders (whose left-over bytes then reach the glue and are
            // written, unencoded, to the other side).
            connection.owner = nil
            upstreamPipeline.removeHandler(connection, promise: nil)
            upstreamPipeline.removeHandler(connection.encoder, promise: nil)
            for other in idle.values { other.channel?.close(promise: nil) }
            idle = [:]
            lastIdle?.channel?.close(promise: nil)
            lastIdle = nil
            let handlers = self.handlers
            clientPipeline.removeHandler(context: context, promise: nil)
            handlers.removeAllButDecoder(from: clientPipeline)
            upstreamPipeline.removeHandler(connection.decoder, promise: nil)
            handlers.removeDecoder(from: clientPipeline)
            _ = context.channel.setOption(ChannelOptions.autoRead, value: true)
            _ = upstream.setOption(ChannelOptions.autoRead, value: true)
        } catch {
            context.close(promise: nil)
            upstream.close(promise: nil)
        }
    }

    // MARK: - Headers

    /// Methods a client may send again when it got no answer (RFC 9110 §9.2.2).
    static func isIdempotent(_ method: HTTPMethod) -> Bool {
        switch method {
        case .GET, .HEAD, .OPTIONS, .TRACE, .PUT, .DELETE: return true
        default: return false
        }
    }

    static let hopByHop = ["connection", "keep-alive", "proxy-connection", "te", "upgrade", "http2-settings"]

    static func hasBody(_ head: HTTPRequestHead) -> Bool {
        head.headers.contains(name: "transfer-encoding")
            || (head.headers.first(name: "content-length").flatMap(Int.init) ?? 0) > 0
    }

    /// Hop-by-hop headers (RFC 9110 §7.6.1) are the connection's, not the message's: dropped, with the headers the
    /// `Connection` header names; framing (`Transfer-Encoding`, `Content-Length`) stays for the encoder to honour.
    static func dropHopByHop(_ headers: inout HTTPHeaders, keeping: Set<String>) {
        // Most messages carry none: one pass without allocating says so.
        guard
            headers.contains(where: { name, _ in
                hopByHop.contains { name.utf8.count == $0.utf8.count && name.lowercased() == $0 }
            })
        else { return }
        var names: Set<String> = ["connection", "keep-alive", "proxy-connection", "te", "upgrade", "http2-settings"]
        for token in headers[canonicalForm: "connection"] { names.insert(token.lowercased()) }
        names.subtract(keeping)
        names.subtract(["transfer-encoding", "content-length"])
        let trailersWanted = headers[canonicalForm: "te"].contains { $0.lowercased() == "trailers" }
        for name in names { headers.remove(name: name) }
        if trailersWanted { headers.add(name: "te", value: "trailers") }
    }
}
