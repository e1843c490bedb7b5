import Foundation
import KubeKit
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL
import NIOWebSocket

/// The lab's API server: HTTPS (HTTP/1.1), bearer-token or client-certificate authentication, RBAC, the REST
/// semantics of `APIHandler`, and pod exec and port-forward over WebSocket (`v5.channel.k8s.io`, `v4.channel.k8s.io`).
public final class APIServer: Sendable {
    public struct Configuration: Sendable {
        public var host: String
        public var port: Int
        /// PEM files of the server's certificate chain and key.
        public var certificate: String
        public var key: String
        /// The CA that signs accepted client certificates.
        public var clientCA: String
        /// The administrator's bearer tokens (user `kubernetes-admin` in `system:masters`, as every client
        /// certificate the CA signed).
        public var tokens: Set<String>
        /// The lab's users file (`UserTokens`): restricted users' tokens, read again when it changes.
        public var userTokenFile: String?
        /// The key service-account tokens are checked with (the kubelet's, which mints them).
        public var serviceAccountTokens: ServiceAccountTokens?

        public init(
            host: String, port: Int, certificate: String, key: String, clientCA: String, tokens: Set<String>,
            userTokenFile: String? = nil
        ) {
            self.host = host
            self.port = port
            self.certificate = certificate
            self.key = key
            self.clientCA = clientCA
            self.tokens = tokens
            self.userTokenFile = userTokenFile
        }
    }

    /// Opens a TCP connection to a pod's port, on the given event loop (port-forward).
    public typealias PodDialer =
        @Sendable (_ pod: JSONValue, _ port: Int, _ eventLoop: any EventLoop) -> EventLoopFuture<any Channel>

    /// Where a container of a running pod can run a command (nil: the pod or container does not run here).
    public typealias ExecLocator = @Sendable (_ pod: JSONValue, _ container: String?) -> ExecTarget?

    public let handler: APIHandler
    let group: any EventLoopGroup
    let logger: Logger
    let initializer: @Sendable (any Channel) -> EventLoopFuture<Void>
    private let listeners = NIOLockedValueBox<[any Channel]>([])

    /// The first listener's address.
    public var localAddress: SocketAddress? { listeners.withLockedValue { $0.first?.localAddress } }

    /// Binds `configuration.host:port` and starts serving on `group` (whose threads decide the network namespace
    /// pod dials happen in). More listeners: `listen`.
    public convenience init(
        configuration: Configuration, handler: APIHandler, group: any EventLoopGroup, logger: Logger,
        dialPod: @escaping PodDialer = APIServer.dialPodIP, locateExec: @escaping ExecLocator = { _, _ in nil }
    ) async throws {
        try self.init(
            preparing: configuration, handler: handler, group: group, logger: logger, dialPod: dialPod,
            locateExec: locateExec)
        _ = try await listen(host: configuration.host, port: configuration.port)
    }

    /// Prepares to serve; nothing listens until `listen`.
    public init(
        preparing configuration: Configuration, handler: APIHandler, group: any EventLoopGroup, logger: Logger,
        dialPod: @escaping PodDialer = APIServer.dialPodIP, locateExec: @escaping ExecLocator = { _, _ in nil }
    ) throws {
        self.handler = handler
        self.logger = logger
        self.group = group
        var tls = TLSConfiguration.makeServerConfiguration(
            certificateChain: try NIOSSLCertificate.fromPEMFile(configuration.certificate).map { .certificate($0) },
            privateKey: .privateKey(try NIOSSLPrivateKey(file: configuration.key, format: .pem)))
        tls.certificateVerification = .optionalVerification
        tls.trustRoots = .file(configuration.clientCA)
        tls.applicationProtocols = ["http/1.1"]
        tls.minimumTLSVersion = .tlsv12
        let context = try NIOSSLContext(configuration: tls)
        let store = handler.store
        let authenticator = TokenAuthenticator(
            adminTokens: configuration.tokens, userFile: configuration.userTokenFile,
            serviceAccounts: configuration.serviceAccountTokens.map { tokens in
                (
                    tokens,
                    { namespace, name in
                        (try? store.get(ResourceRegistry.serviceAccount, namespace: namespace, name: name)) != nil
                    }
                )
            })
        initializer = { channel in
            channel.eventLoop.makeCompletedFuture {
                let ssl = NIOSSLServerHandler(context: context)
                try channel.pipeline.syncOperations.addHandler(ssl)
                let http = HTTPHandler(
                    api: handler, authenticator: authenticator, logger: logger,
                    hasClientCertificate: { ssl.peerCertificate != nil }, locateExec: locateExec)
                let upgrader = NIOWebSocketServerUpgrader(
                    maxFrameSize: 16 << 20,
                    shouldUpgrade: { channel, head in
                        channel.eventLoop.makeCompletedFuture {
                            http.upgradeTarget(head).map { target in
                                HTTPHeaders([("Sec-WebSocket-Protocol", target.protocolName)])
                            }
                        }
                    },
                    upgradePipelineHandler: { channel, head in
                        channel.eventLoop.makeCompletedFuture {
                            switch http.upgradeTarget(head) {
                            case .portForward(let pod, let port)?:
                                let name = pod["metadata"]?["name"]?.stringValue ?? ""
                                try channel.pipeline.syncOperations.addHandler(
                                    PortForwardRelay(
                                        port: UInt16(port), pod: name,
                                        dial: { eventLoop in dialPod(pod, port, eventLoop) }))
                            case .exec(let command, let target, let stdin, let version5)?:
                                try channel.pipeline.syncOperations.addHandler(
                                    ExecSession(command: command, target: target, stdin: stdin, version5: version5))
                            case nil:
                                break
                            }
                        }
                    })
                try channel.pipeline.syncOperations.configureHTTPServerPipeline(
                    withServerUpgrade: (
                        upgraders: [upgrader],
                        completionHandler: { context in
                            context.pipeline.syncOperations.removeHandler(http, promise: nil)
                        }
                    ))
                try channel.pipeline.syncOperations.addHandler(http)
            }
        }
    }

    /// Listens on `host:port`. The listening socket belongs to the network namespace of the thread that calls
    /// this, or of `eventLoop`'s thread when one is given.
    @discardableResult
    public func listen(host: String, port: Int, inside eventLoop: (any EventLoop)? = nil) async throws -> SocketAddress?
    {
        let group = self.group
        let initializer = self.initializer
        let bind: @Sendable () -> EventLoopFuture<any Channel> = {
            ServerBootstrap(group: group)
                .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
                .childChannelOption(.tcpOption(.tcp_nodelay), value: 1)
                .childChannelInitializer(initializer)
                .bind(host: host, port: port)
        }
        let channel: any Channel
        if let eventLoop {
            channel = try await eventLoop.flatSubmit { bind() }.get()
        } else {
            channel = try await bind().get()
        }
        listeners.withLockedValue { $0.append(channel) }
        return channel.localAddress
    }

    /// Connects to the pod's IP (from `status.podIP`) on the event loop given.
    public static func dialPodIP(_ pod: JSONValue, _ port: Int, _ eventLoop: any EventLoop) -> EventLoopFuture<
        any Channel
    > {
        guard let address = pod["status"]?["podIP"]?.stringValue, !address.isEmpty else {
            return eventLoop.makeFailedFuture(
                APIStatusError.badRequest("pod \(pod["metadata"]?["name"]?.stringValue ?? "") has no IP yet"))
        }
        return ClientBootstrap(group: eventLoop)
            .channelOption(.tcpOption(.tcp_nodelay), value: 1)
            .connectTimeout(.seconds(5))
            .connect(host: address, port: port)
    }

    public func stop() async {
        handler.store.endWatches()
        for channel in listeners.withLockedValue({ $0 }) { try? await channel.close() }
    }
}

/// One HTTP connection: authenticates each request, hands it to `APIHandler` (which authorizes it), writes the answer
/// (streaming for watches); exec and port-forward upgrades are authorized here.
final class HTTPHandler: ChannelInboundHandler, RemovableChannelHandler, @unchecked Sendable {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private let api: APIHandler
    private let authenticator: TokenAuthenticator
    private let logger: Logger
    private let hasClientCertificate: () -> Bool
    private var head: HTTPRequestHead?
    private var body: [UInt8] = []
    /// The request being answered; the next one waits (HTTP/1.1 without pipelining in practice).
    private var busy = false
    private var queued: [(HTTPRequestHead, [UInt8])] = []
    private var streaming: Task<Void, Never>?

    /// The most body a request may carry (a ConfigMap's limit is 1 MiB; a Secret's too).
    static let maximumBodyBytes = 8 << 20

    private let locateExec: APIServer.ExecLocator

    init(
        api: APIHandler, authenticator: TokenAuthenticator, logger: Logger,
        hasClientCertificate: @escaping () -> Bool, locateExec: @escaping APIServer.ExecLocator
    ) {
        self.api = api
        self.authenticator = authenticator
        self.logger = logger
        self.hasClientCertificate = hasClientCertificate
        self.locateExec = locateExec
    }

    enum UpgradeTarget {
        case portForward(JSONValue, Int)
        case exec(command: [String], target: ExecTarget, stdin: Bool, version5: Bool)

        var protocolName: String {
            switch self {
            case .portForward: return "v4.channel.k8s.io"
            case .exec(_, _, _, let version5): return version5 ? "v5.channel.k8s.io" : "v4.channel.k8s.io"
            }
        }
    }

    /// A WebSocket request this server upgrades: a port-forward, or an exec into a running container, that the
    /// user may `create` (a refused one is answered by `next` with the 403).
    func upgradeTarget(_ head: HTTPRequestHead) -> UpgradeTarget? {
        guard let user = authenticate(head.headers),
            api.refusal(
                APIServerRequest(method: "GET", uri: head.uri, headers: [], body: [], user: user),
                webSocketUpgrade: true
            ) == nil
        else { return nil }
        if let (pod, port) = try? portForwardTarget(head) { return .portForward(pod, port) }
        let request = APIServerRequest(method: "GET", uri: head.uri, headers: [], body: [])
        let parts = request.path.split(separator: "/").map(String.init)
        let offered = head.headers[canonicalForm: "Sec-WebSocket-Protocol"].map {
            String($0).trimmingCharacters(in: .whitespaces)
        }
        guard parts.count == 7, parts[0] == "api", parts[2] == "namespaces", parts[4] == "pods", parts[6] == "exec",
            offered.contains("v5.channel.k8s.io") || offered.contains("v4.channel.k8s.io"),
            let command = request.query["command"], !command.isEmpty,
            let pod = try? api.store.get(Pod.resource, namespace: parts[3], name: parts[5]),
            let target = locateExec(pod, request.first("container"))
        else { return nil }
        return .exec(
            command: command, target: target, stdin: request.first("stdin") == "true" || request.first("stdin") == "1",
            version5: offered.contains("v5.channel.k8s.io"))
    }

    /// The request's user: a bearer token's, else the client certificate's (every certificate the lab CA signed is
    /// the administrator's); nil is 401.
    func authenticate(_ headers: HTTPHeaders) -> UserInfo? {
        if let value = headers.first(name: "Authorization"), value.hasPrefix("Bearer ") {
            return authenticator.user(forToken: String(value.dropFirst(7)))
        }
        return hasClientCertificate() ? .admin : nil
    }

    /// For a port-forward upgrade: the pod and port, or nil when this request is not one we upgrade (it is then
    /// answered as a normal request, with the reason).
    func portForwardTarget(_ head: HTTPRequestHead) throws -> (JSONValue, Int)? {
        let request = APIServerRequest(method: "GET", uri: head.uri, headers: [], body: [])
        let parts = request.path.split(separator: "/").map(String.init)
        guard parts.count == 7, parts[0] == "api", parts[2] == "namespaces", parts[4] == "pods",
            parts[6] == "portforward",
            head.headers[canonicalForm: "Sec-WebSocket-Protocol"].contains(where: { $0 == "v4.channel.k8s.io" }),
            let ports = request.query["ports"]?.flatMap({ $0.split(separator: ",") }), ports.count == 1,
            let port = Int(ports[0]), (1...65535).contains(port),
            let pod = try? api.store.get(Pod.resource, namespace: parts[3], name: parts[5])
        else { return nil }
        return (pod, port)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            self.head = head
            body = []
        case .body(let buffer):
            if body.count + buffer.readableBytes <= Self.maximumBodyBytes { body += buffer.readableBytesView }
        case .end:
            guard let head else { return }
            self.head = nil
            queued.append((head, body))
            body = []
            next(context: context)
        }
    }

    private func next(context: ChannelHandlerContext) {
        guard !busy, !queued.isEmpty else { return }
        busy = true
        let (head, body) = queued.removeFirst()
        let keepAlive = head.isKeepAlive
        guard let user = authenticate(head.headers) else {
            let status = APIStatusError(code: 401, reason: "Unauthorized", message: "Unauthorized")
            return respond(context: context, .json(401, status.document), keepAlive: keepAlive)
        }
        if head.uri.contains("/portforward") || head.uri.contains("/exec") {
            // Reached only when the upgrade was not possible: say why.
            let request = APIServerRequest(
                method: head.method.rawValue, uri: head.uri, headers: [], body: [], user: user)
            let upgrade = head.headers[canonicalForm: "Upgrade"].contains { $0.lowercased() == "websocket" }
            if let refusal = api.refusal(request, webSocketUpgrade: upgrade) {
                return respond(context: context, refusal, keepAlive: keepAlive)
            }
            let parts = request.path.split(separator: "/").map(String.init)
            if parts.count == 7, (try? api.store.get(Pod.resource, namespace: parts[3], name: parts[5])) == nil {
                let status = APIStatusError.notFound(Pod.resource, parts[5])
                return respond(context: context, .json(404, status.document), keepAlive: keepAlive)
            }
            let status = APIStatusError.badRequest(
                head.uri.contains("/exec")
                    ? "exec needs a WebSocket upgrade (v5.channel.k8s.io or v4.channel.k8s.io; ktlab does not speak SPDY) "
                        + "to a running container"
                    : "port-forward needs a WebSocket upgrade with subprotocol v4.channel.k8s.io and exactly one port in ?ports="
            )
            return respond(context: context, .json(400, status.document), keepAlive: keepAlive)
        }
        let request = APIServerRequest(
            method: head.method.rawValue, uri: head.uri, headers: head.headers.map { ($0.name, $0.value) }, body: body,
            user: user)
        let api = self.api
        let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        let logger = self.logger
        Task {
            let response = await api.handle(request)
            logger.debug("\(request.method) \(head.uri)")
            bound.eventLoop.execute {
                let (handler, context) = bound.value
                handler.respond(context: context, response, keepAlive: keepAlive)
            }
        }
    }

    private func respond(context: ChannelHandlerContext, _ response: APIServerResponse, keepAlive: Bool) {
        var headers = HTTPHeaders()
        // Clients judge ages in the server's clock (RFC 9110 §6.6.1: an origin server with a clock sends Date).
        headers.add(name: "Date", value: ServerClock.formatHTTPDate(Date()))
        switch response {
        case .json(let status, let document):
            let bytes = (try? document.jsonData()) ?? Data()
            headers.add(name: "Content-Type", value: "application/json")
            headers.add(name: "Content-Length", value: String(bytes.count))
            writeWhole(context: context, status: status, headers: headers, bytes: Array(bytes), keepAlive: keepAlive)
        case .raw(let status, let type, let bytes):
            headers.add(name: "Content-Type", value: type)
            headers.add(name: "Content-Length", value: String(bytes.count))
            writeWhole(context: context, status: status, headers: headers, bytes: bytes, keepAlive: keepAlive)
        case .stream(let type, let chunks):
            headers.add(name: "Content-Type", value: type)
            headers.add(name: "Transfer-Encoding", value: "chunked")
            context.writeAndFlush(
                wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: .ok, headers: headers))), promise: nil
            )
            let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
            let channel = context.channel
            streaming = Task {
                for await chunk in chunks {
                    guard channel.isActive else { break }
                    bound.eventLoop.execute {
                        let (handler, context) = bound.value
                        context.writeAndFlush(
                            handler.wrapOutboundOut(.body(.byteBuffer(ByteBuffer(bytes: chunk)))), promise: nil)
                    }
                }
                bound.eventLoop.execute {
                    let (handler, context) = bound.value
                    handler.streaming = nil
                    context.writeAndFlush(handler.wrapOutboundOut(.end(nil))).whenComplete { _ in
                        if !keepAlive { channel.close(promise: nil) }
                    }
                    handler.busy = false
                    handler.next(context: context)
                }
            }
        }
    }

    private func writeWhole(
        context: ChannelHandlerContext, status: Int, headers: HTTPHeaders, bytes: [UInt8], keepAlive: Bool
    ) {
        context.write(
            wrapOutboundOut(
                .head(HTTPResponseHead(version: .http1_1, status: .init(statusCode: status), headers: headers))),
            promise: nil)
        context.write(wrapOutboundOut(.body(.byteBuffer(ByteBuffer(bytes: bytes)))), promise: nil)
        let channel = context.channel
        context.writeAndFlush(wrapOutboundOut(.end(nil))).whenComplete { _ in
            if !keepAlive { channel.close(promise: nil) }
        }
        busy = false
        next(context: context)
    }

    func channelInactive(context: ChannelHandlerContext) {
        streaming?.cancel()
        streaming = nil
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        // A refused WebSocket upgrade is reported this way, and the request then comes here to be answered.
        if error is NIOWebSocketUpgradeError { return }
        context.close(promise: nil)
    }
}
