import Foundation
import Logging
import NIOCore
import NIOHPACK
import NIOHTTP2

/// The upstream HTTP/2 connections of one client connection, by `host:port`: each client stream becomes a stream on
/// the connection to the upstream its headers route it to (so one client connection can reach several laptops and
/// the original pods at once).
final class HTTP2UpstreamPool: @unchecked Sendable {
    private var connections: [String: EventLoopFuture<NIOHTTP2Handler.StreamMultiplexer>] = [:]
    private var channels: [ObjectIdentifier: any Channel] = [:]
    let proxy: ProxyContext

    init(proxy: ProxyContext) {
        self.proxy = proxy
    }

    func multiplexer(_ upstream: Upstream, port: Int, on eventLoop: any EventLoop) -> EventLoopFuture<
        NIOHTTP2Handler.StreamMultiplexer
    > {
        let key = "\(upstream.host):\(port)"
        if let existing = connections[key] { return existing }
        let promise = eventLoop.makePromise(of: NIOHTTP2Handler.StreamMultiplexer.self)
        connections[key] = promise.futureResult
        // The multiplexer exists once the channel is registered, before it is connected: handed out only once the
        // connection is up (a stream on a connection that never comes would wait for ever).
        let made = Made()
        proxy.connect(upstream, port: port, on: eventLoop) { channel in
            // The inline multiplexer (no separate handler per connection); pushed streams are refused.
            channel.configureHTTP2Pipeline(
                mode: .client, connectionConfiguration: .init(), streamConfiguration: .init(),
                inboundStreamInitializer: { stream in stream.close() }
            ).map { multiplexer in
                made.multiplexer = multiplexer
            }
        }.whenComplete { [weak self] result in
            switch result {
            case .success(let channel):
                guard let multiplexer = made.multiplexer else {
                    promise.fail(ChannelError.inappropriateOperationForState)
                    channel.close(promise: nil)
                    return
                }
                promise.succeed(multiplexer)
                self?.channels[ObjectIdentifier(channel)] = channel
                channel.closeFuture.whenComplete { _ in
                    self?.channels[ObjectIdentifier(channel)] = nil
                    if self?.connections[key] === promise.futureResult { self?.connections[key] = nil }
                }
            case .failure(let error):
                promise.fail(error)
                if self?.connections[key] === promise.futureResult { self?.connections[key] = nil }
            }
        }
        return promise.futureResult
    }

    final class Made: @unchecked Sendable {
        var multiplexer: NIOHTTP2Handler.StreamMultiplexer?
    }

    func closeAll() {
        for channel in channels.values { channel.close(promise: nil) }
        channels = [:]
        connections = [:]
    }
}

extension EventLoopFuture {
    fileprivate static func === (lhs: EventLoopFuture, rhs: EventLoopFuture) -> Bool {
        ObjectIdentifier(lhs) == ObjectIdentifier(rhs)
    }
}

/// A client's HTTP/2 stream until its headers are routed: then the stream is glued to a new stream on the chosen
/// upstream's connection, and frames (headers, data, trailers, resets) pass both ways as they are, flow control
/// holding reads on the side whose partner cannot take more. An upstream that cannot be reached gets the stream a
/// 502 that names it.
final class HTTP2StreamRouter: ChannelInboundHandler, RemovableChannelHandler, @unchecked Sendable {
    typealias InboundIn = HTTP2Frame.FramePayload
    typealias OutboundOut = HTTP2Frame.FramePayload

    let proxy: ProxyContext
    let pool: HTTP2UpstreamPool
    let remote: String
    private var pending: [HTTP2Frame.FramePayload] = []
    private var routed = false
    private var closed = false

    init(proxy: ProxyContext, pool: HTTP2UpstreamPool, remote: String) {
        self.proxy = proxy
        self.pool = pool
        self.remote = remote
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let payload = unwrapInboundIn(data)
        switch payload {
        case .headers, .data: pending.append(payload)
        case .rstStream:
            context.close(promise: nil)
            return
        default: return
        }
        guard !routed, case .headers(let headers) = payload else { return }
        routed = true
        route(headers.headers, context: context)
    }

    func channelInactive(context: ChannelHandlerContext) {
        closed = true
        context.fireChannelInactive()
    }

    private func route(_ headers: HPACKHeaders, context: ChannelHandlerContext) {
        let decision = proxy.decide { headers[$0] }
        let method = headers.first(name: ":method") ?? "?"
        let path = headers.first(name: ":path") ?? "?"
        let (clientSide, upstreamSide) = Glue<HTTP2Frame.FramePayload>.pair(measure: { payload in
            if case .data(let data) = payload { return data.data.readableBytes }
            return 0
        })
        let clientStream = context.channel
        pool.multiplexer(decision.upstream, port: decision.port, on: context.eventLoop).flatMap { multiplexer in
            multiplexer.createStreamChannel { channel in
                channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(upstreamSide) }
            }
        }.whenComplete { [self] result in
            switch result {
            case .success(let upstream):
                guard !closed else {
                    upstream.close(promise: nil)
                    return
                }
                proxy.log(
                    "\(remote) \"\(method) \(path) HTTP/2\" [\(decision.why)] → \(decision.upstream):\(decision.port)")
                do {
                    try clientStream.pipeline.syncOperations.addHandler(clientSide)
                } catch {
                    clientStream.close(promise: nil)
                    upstream.close(promise: nil)
                    return
                }
                for payload in pending { upstream.write(payload, promise: nil) }
                upstream.flush()
                pending = []
                clientStream.pipeline.syncOperations.removeHandler(self, promise: nil)
            case .failure(let error):
                guard !closed else { return }
                let text = badGatewayText(decision.upstream, port: decision.port, error)
                proxy.logger.warning("\(text.dropLast())")
                proxy.log(
                    "\(remote) \"\(method) \(path) HTTP/2\" [\(decision.why)] → \(decision.upstream):\(decision.port) 502"
                )
                let response = HPACKHeaders([
                    (":status", "502"), ("content-type", "text/plain; charset=utf-8"),
                    ("content-length", String(text.utf8.count)),
                ])
                clientStream.write(
                    HTTP2Frame.FramePayload.headers(
                        HTTP2Frame.FramePayload.Headers(headers: response, endStream: false)), promise: nil)
                clientStream.writeAndFlush(
                    HTTP2Frame.FramePayload.data(.init(data: .byteBuffer(ByteBuffer(string: text)), endStream: true)),
                    promise: nil)
            }
        }
    }
}

enum HTTP2Server {
    /// Turns a client connection into an HTTP/2 server whose streams are each routed.
    static func configure(_ channel: any Channel, proxy: ProxyContext) -> EventLoopFuture<Void> {
        let pool = HTTP2UpstreamPool(proxy: proxy)
        let remote = channel.remoteAddress?.ipAddress ?? "?"
        return channel.configureHTTP2Pipeline(
            mode: .server, connectionConfiguration: .init(), streamConfiguration: .init()
        ) { stream in
            stream.eventLoop.makeCompletedFuture {
                try stream.pipeline.syncOperations.addHandler(
                    HTTP2StreamRouter(proxy: proxy, pool: pool, remote: remote))
            }
        }.map { _ in
            channel.closeFuture.whenComplete { _ in pool.closeAll() }
        }
    }
}
