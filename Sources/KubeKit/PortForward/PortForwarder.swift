import Foundation
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL
import NIOWebSocket

/// Port-forward to one TCP port of a pod through the API server, over WebSocket (`v4.channel.k8s.io`, the
/// protocol the Python client speaks and every kubelet serves). Each `connect` is a new WebSocket carrying one TCP
/// connection to the pod's port, so reconnecting is calling `connect` again.
///
/// The result is a NIO `Channel` whose inbound and outbound messages are `ByteBuffer`s of the pod's byte stream,
/// with autoRead off: exactly what `TunnelClient`'s transport closure hands to SSH.
public struct PortForwarder: Sendable {
    public let client: KubeClient
    public let pod: String
    public let namespace: String
    public let port: UInt16

    /// The largest WebSocket frame accepted from the server (kubelets send up to 32 KiB; proxies may coalesce).
    public static let maximumFrameBytes = 16 << 20

    public init(client: KubeClient, pod: String, namespace: String? = nil, port: UInt16) {
        self.client = client
        self.pod = pod
        self.namespace = namespace ?? client.access.namespace
        self.port = port
    }

    /// Opens a new forwarded connection on `eventLoop` (for use as a `TunnelClient` transport).
    public func connect(on eventLoop: any EventLoop) -> EventLoopFuture<any Channel> {
        let promise = eventLoop.makePromise(of: (any Channel).self)
        promise.completeWithTask { try await self.connect(on: eventLoop) }
        return promise.futureResult
    }

    /// Opens a new forwarded connection; throws `PortForwardError`, `KubeAPIError` or `KubeTransportError`.
    ///
    /// `handOver` runs on the channel's event loop in the same turn as the check that the stream is still there, so
    /// a consumer that puts its handlers in place there cannot miss the stream's end: when the server's error text
    /// and its close follow the 101 at once, the close can be read in the very next turn, and a consumer that came
    /// later found a closed channel and no reason (the `errorChannelTextIsSurfaced` flake's last form). A stream
    /// that has already ended makes `connect` throw why.
    public func connect(
        on eventLoop: any EventLoop, handOver: @escaping @Sendable (any Channel) throws -> Void = { _ in }
    ) async throws -> any Channel {
        let access = client.access
        if access.proxyURL != nil {
            throw KubeconfigError(
                path: access.clusterOrigin, field: "clusters[\(access.clusterName)].cluster.proxy-url",
                problem: "is set, and port-forward through a proxy is not supported yet",
                hint: "reach the API server directly for ktctl connect")
        }
        let host = access.server.host ?? "localhost"
        let serverPort = access.server.port ?? 443
        let tlsContext: NIOSSLContext? =
            access.server.scheme == "https"
            ? try NIOSSLContext(configuration: try TLSFactory.configuration(for: access)) : nil
        let serverName = access.tls.serverName ?? (Self.isIPAddress(host) ? nil : host)
        let authorization = try await client.authorizationHeaders()
        let request = APIRequest.portForward(pod: pod, namespace: namespace, ports: [Int(port)])
        let upgraded = eventLoop.makePromise(of: Void.self)

        let channel: any Channel
        do {
            channel = try await ClientBootstrap(group: eventLoop)
                .channelOption(.tcpOption(.tcp_nodelay), value: 1)
                .connectTimeout(.seconds(10))
                .connect(host: host, port: serverPort).get()
        } catch {
            throw KubeTransportError(kind: .connection, server: access.server.absoluteString, detail: "\(error)")
        }
        let port = self.port
        let frames: NIOLoopBound<PortForwardFrameHandler>
        do {
            let headers =
                [
                    ("Host", Self.hostHeader(serverName ?? host, port: serverPort)),
                    ("Sec-WebSocket-Protocol", "v4.channel.k8s.io"), ("User-Agent", "ktctl (linux) kubekit"),
                ] + authorization.map { ($0.name, $0.value) }
            let target = access.apiPrefix + request.target
            frames = try await channel.eventLoop.submit {
                let frames = NIOLoopBound(PortForwardFrameHandler(port: port), eventLoop: channel.eventLoop)
                let sync = channel.pipeline.syncOperations
                if let tlsContext {
                    try sync.addHandler(try NIOSSLClientHandler(context: tlsContext, serverHostname: serverName))
                }
                let handshake = WebSocketHandshakeHandler(
                    maxFrameSize: Self.maximumFrameBytes, frames: frames.value,
                    refusal: { status, headers, body in
                        let response = APIResponse(
                            status: status, headers: headers.map { APIRequest.Header($0.0, $0.1) }, body: body)
                        return (200..<300).contains(status)
                            ? PortForwardError.upgradeRefused(
                                status: status, message: "the server answered without switching to WebSocket")
                            : KubeAPIError.from(response, request: request)
                    }, upgraded: upgraded)
                try sync.addHandler(handshake)
                // A failed write means the connection failed (a TLS handshake error, say), which the handshake
                // reports through `upgraded` with its cause.
                channel.closeFuture.whenComplete { _ in upgraded.fail(ChannelError.eof) }
                channel.writeAndFlush(handshake.requestHead(target: target, headers: headers), promise: nil)
                return frames
            }.get()
            try await withTimeout(.seconds(30), on: eventLoop) { upgraded.futureResult }
        } catch {
            channel.close(promise: nil)
            throw translate(error, access: access)
        }
        // Deliver what arrived with the 101, and everything after, on the consumer's reads. The stream may already
        // have ended (the server's error text, then its close, right behind the 101): then that is the answer.
        try await channel.eventLoop.submit {
            // Closed (or closing: its handlers are still there for a moment, but nothing can be added).
            guard channel.isActive, let context = try? channel.pipeline.syncOperations.context(handler: frames.value)
            else {
                throw frames.value.failure
                    ?? PortForwardError.protocolViolation("the connection closed right after the WebSocket handshake")
            }
            frames.value.startDelivering(context: context)
            try handOver(channel)
        }.get()
        return channel
    }

    func translate(_ error: any Error, access: ClusterAccess) -> any Error {
        if error is PortForwardError || error is KubeAPIError || error is KubeTransportError { return error }
        if let refused = error as? RefusedUpgrade { return refused.error }
        let text = String(describing: error)
        if error is NIOSSLError || error is BoringSSLError || text.contains("SSL") {
            return KubeTransportError(
                kind: .tls, server: access.server.absoluteString,
                detail: text.contains("CERTIFICATE_VERIFY_FAILED") || text.contains("certificate verify failed")
                    ? "the server's certificate is not signed by the trusted CA (certificate verify failed)" : text,
                certificateAuthority: access.tls.certificateAuthoritySource)
        }
        if let channelError = error as? ChannelError, channelError == .eof {
            return PortForwardError.protocolViolation("the connection closed during the WebSocket handshake")
        }
        return KubeTransportError(kind: .connection, server: access.server.absoluteString, detail: text)
    }

    static func isIPAddress(_ host: String) -> Bool {
        (try? SocketAddress(ipAddress: host, port: 0)) != nil
    }

    static func hostHeader(_ host: String, port: Int) -> String {
        let bracketed = host.contains(":") ? "[\(host)]" : host
        return port == 443 ? bracketed : "\(bracketed):\(port)"
    }
}

/// Completes `body`'s future or fails after `timeout`.
func withTimeout(
    _ timeout: TimeAmount, on eventLoop: any EventLoop, _ body: () -> EventLoopFuture<Void>
) async throws {
    let future = body()
    let timer = eventLoop.scheduleTask(in: timeout) {}
    defer { timer.cancel() }
    let promise = eventLoop.makePromise(of: Void.self)
    future.cascade(to: promise)
    timer.futureResult.whenSuccess {
        promise.fail(KubeTransportError(kind: .timeout, server: "", detail: "no WebSocket upgrade within \(timeout)"))
    }
    try await promise.futureResult.get()
}

struct RefusedUpgrade: Error {
    var error: any Error
}
