import Foundation
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix

/// What the router serves: the Service's target ports (each with the stuntman's port for unrouted requests), the
/// default upstream, and the port of `/healthz` and `/routes`.
public struct RouterConfiguration: Sendable {
    public struct Port: Sendable, Hashable {
        /// Where requests arrive (the Service's target port; a shadow listens on the same number).
        public var listen: Int
        /// The stuntman Service's port that reaches the original pods' `listen`.
        public var defaultPort: Int

        public init(listen: Int, defaultPort: Int) {
            self.listen = listen
            self.defaultPort = defaultPort
        }
    }

    public var ports: [Port]
    public var defaultUpstream: Upstream
    public var healthPort: Int
    public var accessLog: Bool
    public var host: String

    public init(
        ports: [Port], defaultUpstream: Upstream, healthPort: Int, accessLog: Bool = true, host: String = "0.0.0.0"
    ) {
        self.ports = ports
        self.defaultUpstream = defaultUpstream
        self.healthPort = healthPort
        self.accessLog = accessLog
        self.host = host
    }
}

/// The router's listeners. `/healthz` answers from the start (503 until the routes have been read once); the
/// proxied ports open only once they have, so a router is Ready (its ports accept) only when it routes.
public final class RouterServer: Sendable {
    let configuration: RouterConfiguration
    let routes: RouteStore
    let group: any EventLoopGroup
    let logger: Logger
    let accessLog: AccessLog?

    public init(configuration: RouterConfiguration, routes: RouteStore, group: any EventLoopGroup, logger: Logger) {
        self.accessLog = configuration.accessLog ? AccessLog() : nil
        self.configuration = configuration
        self.routes = routes
        self.group = group
        self.logger = logger
    }

    /// Writes out the access log's last lines.
    public func flushLog() {
        accessLog?.flush()
    }

    /// Opens the health port; returns its channel.
    public func startHealth() async throws -> any Channel {
        let routes = self.routes
        return try await ServerBootstrap(group: group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline()
                    try channel.pipeline.syncOperations.addHandler(HealthHandler(routes: routes))
                }
            }
            .bind(host: configuration.host, port: configuration.healthPort).get()
    }

    /// Opens every proxied port (call once the routes are synced); returns their channels.
    public func startProxies() async throws -> [any Channel] {
        var channels: [any Channel] = []
        for port in configuration.ports {
            let context = ProxyContext(
                routes: routes, port: port.listen, defaultUpstream: configuration.defaultUpstream,
                defaultPort: port.defaultPort, logger: logger, accessLog: accessLog)
            let channel = try await ServerBootstrap(group: group)
                .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
                .serverChannelOption(.backlog, value: 1024)
                .childChannelOption(.tcpOption(.tcp_nodelay), value: 1)
                .childChannelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHandler(ProtocolSniffer(context: context))
                    }
                }
                .bind(host: configuration.host, port: port.listen).get()
            channels.append(channel)
            logger.info(
                "routing port \(port.listen): unrouted requests to \(configuration.defaultUpstream):\(port.defaultPort)"
            )
        }
        return channels
    }
}

/// Tells HTTP/2 with prior knowledge (its 24-byte preface) from HTTP/1 by the first bytes, sets the connection up
/// for the one it is, hands those bytes on and steps aside.
final class ProtocolSniffer: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer

    static let preface = Array("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".utf8)
    let context: ProxyContext
    private var buffered: ByteBuffer?

    init(context: ProxyContext) {
        self.context = context
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var incoming = unwrapInboundIn(data)
        if buffered == nil {
            buffered = incoming
        } else {
            buffered!.writeBuffer(&incoming)
        }
        guard let bytes = buffered else { return }
        let seen = bytes.readableBytesView.prefix(Self.preface.count)
        let isHTTP2 = seen.elementsEqual(Self.preface.prefix(seen.count))
        guard !isHTTP2 || seen.count == Self.preface.count else { return }
        let channel = context.channel
        let pipeline = context.pipeline.syncOperations
        buffered = nil
        if isHTTP2 {
            HTTP2Server.configure(channel, proxy: self.context).whenComplete { result in
                switch result {
                case .success:
                    context.fireChannelRead(self.wrapInboundOut(bytes))
                    context.fireChannelReadComplete()
                    pipeline.removeHandler(context: context, promise: nil)
                case .failure:
                    channel.close(promise: nil)
                }
            }
        } else {
            do {
                try HTTP1ServerHandlers.install(on: pipeline, context: self.context)
                context.fireChannelRead(wrapInboundOut(bytes))
                context.fireChannelReadComplete()
                pipeline.removeHandler(context: context, promise: nil)
            } catch {
                channel.close(promise: nil)
            }
        }
    }
}

/// `/healthz` (200 once the routes are read, else 503) and `/routes` (one line per route).
final class HealthHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    let routes: RouteStore

    init(routes: RouteStore) {
        self.routes = routes
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard case .head(let head) = unwrapInboundIn(data) else { return }
        let table = routes.table
        let (status, text): (HTTPResponseStatus, String)
        switch head.uri.split(separator: "?").first.map(String.init) ?? "" {
        case "/healthz":
            (status, text) =
                routes.synced
                ? (.ok, "ok: \(table.routes.count) route(s)\n") : (.serviceUnavailable, "routes not read yet\n")
        case "/routes":
            (status, text) = (.ok, table.routes.map { "\($0)\n" }.joined())
        default:
            (status, text) = (.notFound, "kt-router: /healthz or /routes\n")
        }
        var headers = HTTPHeaders()
        headers.add(name: "content-type", value: "text/plain; charset=utf-8")
        headers.add(name: "content-length", value: String(text.utf8.count))
        context.write(
            wrapOutboundOut(.head(HTTPResponseHead(version: head.version, status: status, headers: headers))),
            promise: nil)
        context.write(wrapOutboundOut(.body(.byteBuffer(ByteBuffer(string: text)))), promise: nil)
        context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
    }
}
