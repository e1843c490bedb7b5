import Foundation
import LabKit
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL
import NIOWebSocket

/// An HTTP(S) server on 127.0.0.1 that answers API requests from a script: recorded responses of a real API
/// server, streams that end or break when the test says, and WebSocket port-forwards relayed to local TCP ports.
/// It is a stand-in until ktlab serves the same; it checks nothing about Kubernetes itself.
final class TestAPIServer: Sendable {
    struct Request: Sendable {
        var method: String
        var uri: String
        var headers: [(String, String)]
        var body: [UInt8]

        func header(_ name: String) -> String? {
            headers.last { $0.0.lowercased() == name.lowercased() }?.1
        }
        var path: String { String(uri.split(separator: "?", maxSplits: 1).first ?? "") }
        var query: [String: String] {
            guard let components = URLComponents(string: uri) else { return [:] }
            return Dictionary(
                (components.queryItems ?? []).map { ($0.name, $0.value ?? "") }, uniquingKeysWith: { $1 })
        }
    }

    enum Reply: Sendable {
        case json(Int, String)
        /// A chunked 200 answer: each chunk written and flushed, `pause` apart; then the response ends
        /// (`end: true`) or the connection is dropped.
        case stream([String], pause: Duration, end: Bool)
    }

    let group: MultiThreadedEventLoopGroup
    let channel: any Channel
    private let recorded = NIOLockedValueBox<[Request]>([])

    var port: Int { channel.localAddress?.port ?? 0 }
    var requests: [Request] { recorded.withLockedValue { $0 } }

    /// `portForward` maps a pod name to the local TCP port its forward goes to (nil: the upgrade is refused and
    /// `respond` answers the request instead).
    init(
        pki: TestPKI?, requireClientCertificate: Bool = false, namedOnly: Bool = false,
        portForward: @escaping @Sendable (String) -> Int? = { _ in nil },
        respond: @escaping @Sendable (Request) -> Reply
    ) async throws {
        group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        var sslContext: NIOSSLContext?
        if let pki {
            var configuration = TLSConfiguration.makeServerConfiguration(
                certificateChain: try NIOSSLCertificate.fromPEMFile(
                    namedOnly ? pki.namedOnlyCertificate : pki.serverCertificate
                ).map { .certificate($0) },
                privateKey: .privateKey(try NIOSSLPrivateKey(file: pki.serverKey, format: .pem)))
            if requireClientCertificate {
                configuration.certificateVerification = .noHostnameVerification
                configuration.trustRoots = .file(pki.caCertificate)
            }
            sslContext = try NIOSSLContext(configuration: configuration)
        }
        let recorded = self.recorded
        let context = sslContext
        channel = try await ServerBootstrap(group: group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    let sync = channel.pipeline.syncOperations
                    if let context { try sync.addHandler(NIOSSLServerHandler(context: context)) }
                    let handler = ScriptedHandler(recorded: recorded, respond: respond)
                    let upgrader = NIOWebSocketServerUpgrader(
                        maxFrameSize: 1 << 24,
                        shouldUpgrade: { channel, head in
                            let parts = head.uri.split(separator: "/")
                            guard head.uri.contains("/portforward"), parts.count >= 6,
                                portForward(String(parts[5])) != nil
                            else { return channel.eventLoop.makeSucceededFuture(nil) }
                            return channel.eventLoop.makeSucceededFuture(
                                HTTPHeaders([("Sec-WebSocket-Protocol", "v4.channel.k8s.io")]))
                        },
                        upgradePipelineHandler: { channel, head in
                            let parts = head.uri.split(separator: "/")
                            let pod = String(parts[5])
                            let target = portForward(pod) ?? 1
                            let asked = URLComponents(string: head.uri)?.queryItems?.first { $0.name == "ports" }?.value
                            recorded.withLockedValue {
                                $0.append(
                                    Request(
                                        method: "GET", uri: head.uri, headers: head.headers.map { ($0.name, $0.value) },
                                        body: []))
                            }
                            return channel.eventLoop.makeCompletedFuture {
                                try channel.pipeline.syncOperations.addHandler(
                                    PortForwardRelay(
                                        port: UInt16(asked ?? "0") ?? 0, pod: pod,
                                        dial: { eventLoop in
                                            ClientBootstrap(group: eventLoop)
                                                .channelOption(.autoRead, value: true)
                                                .connect(host: "127.0.0.1", port: target)
                                        }))
                            }
                        })
                    try sync.configureHTTPServerPipeline(
                        withServerUpgrade: (
                            upgraders: [upgrader],
                            completionHandler: { context in
                                // The WebSocket handlers were added after this one.
                                context.pipeline.syncOperations.removeHandler(handler, promise: nil)
                            }
                        ))
                    try sync.addHandler(handler)
                }
            }
            .bind(host: "127.0.0.1", port: 0).get()
    }

    func stop() async {
        try? await channel.close()
        try? await group.shutdownGracefully()
    }
}

/// Answers one request at a time from the script.
private final class ScriptedHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private let recorded: NIOLockedValueBox<[TestAPIServer.Request]>
    private let respond: @Sendable (TestAPIServer.Request) -> TestAPIServer.Reply
    private var head: HTTPRequestHead?
    private var body: [UInt8] = []

    init(
        recorded: NIOLockedValueBox<[TestAPIServer.Request]>,
        respond: @escaping @Sendable (TestAPIServer.Request) -> TestAPIServer.Reply
    ) {
        self.recorded = recorded
        self.respond = respond
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            self.head = head
            body = []
        case .body(let buffer):
            body += buffer.readableBytesView
        case .end:
            guard let head else { return }
            let request = TestAPIServer.Request(
                method: head.method.rawValue, uri: head.uri, headers: head.headers.map { ($0.name, $0.value) },
                body: body)
            recorded.withLockedValue { $0.append(request) }
            reply(context: context, respond(request))
        }
    }

    private func reply(context: ChannelHandlerContext, _ reply: TestAPIServer.Reply) {
        switch reply {
        case .json(let status, let text):
            var headers = HTTPHeaders([("Content-Type", "application/json"), ("Content-Length", "\(text.utf8.count)")])
            headers.add(name: "Connection", value: "keep-alive")
            context.write(
                wrapOutboundOut(
                    .head(HTTPResponseHead(version: .http1_1, status: .init(statusCode: status), headers: headers))),
                promise: nil)
            context.write(wrapOutboundOut(.body(.byteBuffer(ByteBuffer(string: text)))), promise: nil)
            context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
        case .stream(let chunks, let pause, let end):
            let headers = HTTPHeaders([("Content-Type", "application/json"), ("Transfer-Encoding", "chunked")])
            context.writeAndFlush(
                wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: .ok, headers: headers))), promise: nil
            )
            let channel = context.channel
            let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
            @Sendable func send(_ index: Int) {
                let (handler, context) = bound.value
                guard channel.isActive else { return }
                if index == chunks.count {
                    if end {
                        context.writeAndFlush(handler.wrapOutboundOut(.end(nil)), promise: nil)
                    } else {
                        channel.close(promise: nil)
                    }
                    return
                }
                context.writeAndFlush(
                    handler.wrapOutboundOut(.body(.byteBuffer(ByteBuffer(string: chunks[index])))), promise: nil)
                let (seconds, attoseconds) = pause.components
                channel.eventLoop.scheduleTask(in: .nanoseconds(seconds * 1_000_000_000 + attoseconds / 1_000_000_000))
                {
                    send(index + 1)
                }
            }
            send(0)
        }
    }
}
