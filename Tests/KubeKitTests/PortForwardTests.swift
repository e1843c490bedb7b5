import Foundation
import NIOConcurrencyHelpers
import NIOCore
import NIOEmbedded
import NIOPosix
import NIOWebSocket
import Testing

@testable import KubeKit

/// Bytes whose value depends on their offset, so that a lost, repeated or reordered byte is seen.
enum OffsetPattern {
    static let period = 65521
    static let table: [UInt8] = (0..<(period + 65536)).map {
        UInt8(truncatingIfNeeded: ($0 % period) &* 2_654_435_761 >> 13)
    }

    static func write(into buffer: inout ByteBuffer, offset: Int, count: Int) {
        var done = 0
        while done < count {
            let start = (offset + done) % period
            let length = min(count - done, 65536)
            buffer.writeBytes(table[start..<(start + length)])
            done += length
        }
    }

    /// True when `bytes` are the pattern at `offset`.
    static func matches(_ bytes: ByteBufferView, offset: Int) -> Bool {
        bytes.withUnsafeBytes { raw in
            table.withUnsafeBytes { pattern in
                var done = 0
                while done < raw.count {
                    let start = (offset + done) % period
                    let length = min(raw.count - done, 65536)
                    if memcmp(raw.baseAddress! + done, pattern.baseAddress! + start, length) != 0 { return false }
                    done += length
                }
                return true
            }
        } ?? false
    }
}

/// The "pod": reads a 16-byte header (download N, upload M), sends N pattern bytes, checks M uploaded bytes, then
/// sends one byte: 1 if every uploaded byte was right.
final class PatternPodHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private var header = ByteBuffer()
    private var download = 0
    private var upload = 0
    private var sent = 0
    private var received = 0
    private var good = true
    private var started = false

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var bytes = unwrapInboundIn(data)
        if !started {
            let needed = 16 - header.readableBytes
            var part = bytes.readSlice(length: min(needed, bytes.readableBytes)) ?? ByteBuffer()
            header.writeBuffer(&part)
            guard header.readableBytes == 16, let n = header.readInteger(as: UInt64.self),
                let m = header.readInteger(as: UInt64.self)
            else { return }
            started = true
            download = Int(n)
            upload = Int(m)
            sendMore(context: context)
        }
        if bytes.readableBytes > 0 {
            if !OffsetPattern.matches(bytes.readableBytesView, offset: received) { good = false }
            received += bytes.readableBytes
        }
        finishIfDone(context: context)
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        sendMore(context: context)
    }

    private func sendMore(context: ChannelHandlerContext) {
        while sent < download && context.channel.isWritable {
            let count = min(64 << 10, download - sent)
            var buffer = context.channel.allocator.buffer(capacity: count)
            OffsetPattern.write(into: &buffer, offset: sent, count: count)
            sent += count
            context.write(wrapOutboundOut(buffer), promise: nil)
        }
        context.flush()
        finishIfDone(context: context)
    }

    private func finishIfDone(context: ChannelHandlerContext) {
        guard started, sent == download, received >= upload else { return }
        started = false
        download = -1
        var verdict = context.channel.allocator.buffer(capacity: 1)
        verdict.writeInteger(UInt8(good && received == upload ? 1 : 0))
        context.writeAndFlush(wrapOutboundOut(verdict), promise: nil)
    }
}

/// The client end: sends the header and M upload bytes, checks N download bytes and the verdict.
final class PatternClientHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    struct Result: Sendable {
        var downloadedCorrectly: Bool
        var uploadVerdict: UInt8?
        var error: String?
    }

    private let download: Int
    private let upload: Int
    private let done: EventLoopPromise<Result>
    private var received = 0
    private var good = true
    private var sent = 0
    private var verdict: UInt8?

    init(download: Int, upload: Int, done: EventLoopPromise<Result>) {
        self.download = download
        self.upload = upload
        self.done = done
    }

    func handlerAdded(context: ChannelHandlerContext) {
        var header = context.channel.allocator.buffer(capacity: 16)
        header.writeInteger(UInt64(download))
        header.writeInteger(UInt64(upload))
        context.write(wrapOutboundOut(header), promise: nil)
        sendMore(context: context)
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        sendMore(context: context)
    }

    private func sendMore(context: ChannelHandlerContext) {
        while sent < upload && context.channel.isWritable {
            let count = min(64 << 10, upload - sent)
            var buffer = context.channel.allocator.buffer(capacity: count)
            OffsetPattern.write(into: &buffer, offset: sent, count: count)
            sent += count
            context.write(wrapOutboundOut(buffer), promise: nil)
        }
        context.flush()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var bytes = unwrapInboundIn(data)
        let wanted = min(download - received, bytes.readableBytes)
        if wanted > 0, let slice = bytes.readSlice(length: wanted) {
            if !OffsetPattern.matches(slice.readableBytesView, offset: received) { good = false }
            received += wanted
        }
        if received == download, let byte = bytes.readInteger(as: UInt8.self) {
            verdict = byte
            done.succeed(Result(downloadedCorrectly: good, uploadVerdict: byte))
            context.close(promise: nil)
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        done.succeed(Result(downloadedCorrectly: false, uploadVerdict: verdict, error: "\(error)"))
        context.close(promise: nil)
    }

    func channelInactive(context: ChannelHandlerContext) {
        done.succeed(Result(downloadedCorrectly: received == download && good, uploadVerdict: verdict, error: "closed"))
    }
}

/// Port-forward over a real WebSocket through TLS to a TCP "pod", with `LabKit`'s relay as the server side.
@Suite(.serialized) struct PortForwardTests {
    struct Fixture {
        let pki: TestPKI
        let api: TestAPIServer
        let podGroup: MultiThreadedEventLoopGroup
        let pod: any Channel
        let client: KubeClient
        let scratch: Scratch

        func stop() async {
            await client.shutdown()
            await api.stop()
            try? await pod.close()
            try? await podGroup.shutdownGracefully()
            pki.remove()
        }
    }

    static func fixture() async throws -> Fixture {
        let pki = try TestPKI()
        let podGroup = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let pod = try await ServerBootstrap(group: podGroup)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(PatternPodHandler())
                }
            }
            .bind(host: "127.0.0.1", port: 0).get()
        let podPort = pod.localAddress?.port ?? 0
        // "dead" forwards to a port nothing listens on (the pod server's port + 1 is not ours, so use a closed one).
        let closed = try await ServerBootstrap(group: podGroup).bind(host: "127.0.0.1", port: 0).get()
        let closedPort = closed.localAddress?.port ?? 0
        try await closed.close()
        let api = try await TestAPIServer(
            pki: pki,
            portForward: { pod in ["pattern": podPort, "dead": closedPort][pod] },
            respond: { request in
                .json(
                    404,
                    #"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"pods \"missing\" not found","reason":"NotFound","details":{"name":"missing","kind":"pods"},"code":404}"#
                )
            })
        let scratch = try Scratch()
        let access = try ClientTests.kubeconfig(scratch, server: "https://127.0.0.1:\(api.port)", ca: pki.caCertificate)
        return Fixture(
            pki: pki, api: api, podGroup: podGroup, pod: pod, client: try KubeClient(access: access), scratch: scratch)
    }

    static func transfer(
        _ forwarder: PortForwarder, download: Int, upload: Int, group: any EventLoopGroup
    ) async throws -> PatternClientHandler.Result {
        let eventLoop = group.next()
        let done = eventLoop.makePromise(of: PatternClientHandler.Result.self)
        do {
            // The pattern client goes in where connect hands the stream over, in the same turn of the loop.
            _ = try await forwarder.connect(on: eventLoop) { channel in
                try channel.pipeline.syncOperations.addHandler(
                    PatternClientHandler(download: download, upload: upload, done: done))
                try channel.syncOptions?.setOption(.autoRead, value: true)
                channel.read()
            }
        } catch let error as PortForwardError {
            // The stream ended before it was handed over (the server's error right behind the 101): connect says why.
            done.fail(error)
            return PatternClientHandler.Result(downloadedCorrectly: false, uploadVerdict: nil, error: "\(error)")
        }
        return try await done.futureResult.get()
    }

    @Test func gibibyteThroughTheForwardByteExact() async throws {
        let fixture = try await Self.fixture()
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let forwarder = PortForwarder(client: fixture.client, pod: "pattern", port: 8080)
        let started = ContinuousClock.now
        let down = try await Self.transfer(forwarder, download: 1 << 30, upload: 0, group: group)
        let downTime = ContinuousClock.now - started
        let upStarted = ContinuousClock.now
        // A second connection through a new WebSocket: reconnecting is connecting again.
        let up = try await Self.transfer(forwarder, download: 0, upload: 256 << 20, group: group)
        let upTime = ContinuousClock.now - upStarted
        try await group.shutdownGracefully()
        await fixture.stop()
        #expect(down.downloadedCorrectly)
        #expect(down.uploadVerdict == 1)
        #expect(up.uploadVerdict == 1)
        func rate(_ bytes: Int, _ time: Duration) -> String {
            let seconds = Double(time.components.seconds) + Double(time.components.attoseconds) / 1e18
            return String(format: "%.0f MB/s", Double(bytes) / seconds / 1e6)
        }
        print(
            "port-forward over TLS WebSocket: 1 GiB down in \(downTime) (\(rate(1 << 30, downTime))), "
                + "256 MiB up in \(upTime) (\(rate(256 << 20, upTime)))")
        // Each forward made its own WebSocket request, with the port and the bearer token.
        let upgrades = fixture.api.requests.filter { $0.uri.contains("/portforward") }
        #expect(upgrades.count == 2)
        #expect(upgrades.allSatisfy { $0.uri == "/api/v1/namespaces/default/pods/pattern/portforward?ports=8080" })
        #expect(upgrades.allSatisfy { $0.header("Authorization") == "Bearer secret" })
        #expect(upgrades.allSatisfy { $0.header("Sec-WebSocket-Protocol") == "v4.channel.k8s.io" })
    }

    @Test func errorChannelTextIsSurfaced() async throws {
        let fixture = try await Self.fixture()
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let result = try await Self.transfer(
            PortForwarder(client: fixture.client, pod: "dead", port: 8080), download: 10, upload: 0, group: group)
        try await group.shutdownGracefully()
        await fixture.stop()
        #expect(
            result.error?.contains("port-forward: the cluster reported: error forwarding port 8080 to pod dead")
                == true,
            "\(String(describing: result.error))")
    }

    @Test func aRefusedUpgradeReportsTheServersStatus() async throws {
        let fixture = try await Self.fixture()
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let error = await #expect(throws: KubeAPIError.self) {
            _ = try await PortForwarder(client: fixture.client, pod: "missing", port: 8080).connect(on: group.next())
        }
        try await group.shutdownGracefully()
        await fixture.stop()
        #expect(error?.reason == .notFound)
        #expect(error?.message == "pods \"missing\" not found")
    }

    @Test func aWrongCAFailsTheForwardWithATLSError() async throws {
        let fixture = try await Self.fixture()
        let access = try ClientTests.kubeconfig(
            fixture.scratch, server: "https://127.0.0.1:\(fixture.api.port)", ca: fixture.pki.otherCA)
        let client = try KubeClient(access: access)
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let error = await #expect(throws: KubeTransportError.self) {
            _ = try await PortForwarder(client: client, pod: "pattern", port: 8080).connect(on: group.next())
        }
        await client.shutdown()
        try await group.shutdownGracefully()
        await fixture.stop()
        #expect(error?.kind == .tls, "\(String(describing: error))")
        #expect(error?.description.contains(fixture.pki.otherCA) == true)
    }
}

/// The word-at-a-time mask agrees with NIO's byte-at-a-time one for every length and starting offset.
@Suite struct WebSocketMaskingTests {
    @Test(arguments: [0, 1, 3, 7, 8, 9, 15, 16, 125, 126, 65535, 65536, 70001])
    func agreesWithNIO(length: Int) {
        let key = WebSocketMaskingKey.random()
        var source = ByteBuffer()
        OffsetPattern.write(into: &source, offset: length, count: length)
        for offset in 0..<4 {
            var ours = source
            var theirs = source
            WebSocketMasking.apply(key, to: &ours, offset: offset)
            theirs.webSocketMask(key, indexOffset: offset)
            #expect(ours == theirs)
        }
    }

    /// A whole client frame (masked while copied), with and without the port-forward's channel byte, unmasks to
    /// exactly what was framed, as NIO's own decoder reads it.
    @Test(arguments: [0, 1, 7, 8, 125, 126, 65535, 65536, 70001])
    func clientFramesDecode(length: Int) throws {
        var payload = ByteBuffer()
        OffsetPattern.write(into: &payload, offset: length, count: length)
        for prefix in [nil, UInt8(3)] as [UInt8?] {
            var frame = WebSocketMasking.clientFrame(
                opcode: .binary, prefix: prefix, payload: payload, allocator: ByteBufferAllocator())
            let channel = EmbeddedChannel(
                handler: ByteToMessageHandler(WebSocketFrameDecoder(maxFrameSize: 1 << 20)))
            try channel.writeInbound(frame)
            let decoded = try #require(try channel.readInbound(as: WebSocketFrame.self))
            var data = decoded.unmaskedData
            if let prefix { #expect(data.readInteger(as: UInt8.self) == prefix) }
            #expect(data == payload)
            #expect(decoded.fin && decoded.opcode == .binary)
            frame.clear()
            _ = try channel.finish()
        }
    }
}

/// The frame handler holds the end of the stream for its consumer: an error that comes right behind the 101, before
/// anybody reads, is neither lost nor turned into a bare close (the `errorChannelTextIsSurfaced` race, made
/// deterministic with an `EmbeddedChannel`).
@Suite struct PortForwardFrameHandlerTests {
    /// A server message on `channel`: the channel byte, then `payload`.
    static func message(_ channel: UInt8, _ payload: [UInt8]) -> WebSocketFrame {
        var data = ByteBuffer()
        data.writeInteger(channel)
        data.writeBytes(payload)
        return WebSocketFrame(fin: true, opcode: .binary, data: data)
    }

    /// Records what reaches the consumer.
    final class Consumer: ChannelInboundHandler, @unchecked Sendable {
        typealias InboundIn = ByteBuffer
        var events: [String] = []
        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            events.append("data " + String(buffer: unwrapInboundIn(data)))
        }
        func errorCaught(context: ChannelHandlerContext, error: any Error) { events.append("error \(error)") }
        func channelInactive(context: ChannelHandlerContext) { events.append("inactive") }
    }

    @Test func anErrorBeforeTheConsumerReadsWaitsForItsRead() throws {
        let handler = PortForwardFrameHandler(port: 8080)
        let channel = EmbeddedChannel(handler: handler)
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        // The server: both port headers, a data message, the error text, then its close.
        try channel.writeInbound(Self.message(0, [0x90, 0x1F]))
        try channel.writeInbound(Self.message(1, [0x90, 0x1F]))
        try channel.writeInbound(Self.message(0, Array("hello".utf8)))
        try channel.writeInbound(Self.message(1, Array("error forwarding port 8080".utf8)))
        try channel.writeInbound(WebSocketFrame(fin: true, opcode: .connectionClose, data: ByteBuffer()))
        // Nothing went anywhere yet, and the connection is still open for the consumer.
        #expect(try channel.readInbound(as: ByteBuffer.self) == nil)
        #expect(channel.isActive)
        #expect(try channel.readOutbound(as: ByteBuffer.self) == nil)

        // The consumer arrives (as `PortForwarder.connect` hands over) and reads: the data, then the error, then
        // the close.
        let consumer = Consumer()
        try channel.pipeline.syncOperations.addHandler(consumer)
        let context = try channel.pipeline.syncOperations.context(handler: handler)
        handler.startDelivering(context: context)
        #expect(consumer.events.isEmpty)
        channel.read()
        #expect(
            consumer.events == [
                "data hello", "error port-forward: the cluster reported: error forwarding port 8080", "inactive",
            ])
        #expect(!channel.isActive)
        // Our close frame went out (masked, opcode 0x8).
        let close = try #require(try channel.readOutbound(as: ByteBuffer.self))
        #expect(close.getInteger(at: 0, as: UInt8.self) == 0x88)
    }

    @Test func dataAfterTheHandOverWaitsForTheConsumersFirstRead() throws {
        let handler = PortForwardFrameHandler(port: 8080)
        let channel = EmbeddedChannel(handler: handler)
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        try channel.writeInbound(Self.message(0, [0x90, 0x1F]))
        // Handed over, but nobody has read yet: a frame that arrives now (a read still in flight) is kept.
        handler.startDelivering(context: try channel.pipeline.syncOperations.context(handler: handler))
        try channel.writeInbound(Self.message(0, Array("first".utf8)))
        #expect(try channel.readInbound(as: ByteBuffer.self) == nil)
        let consumer = Consumer()
        try channel.pipeline.syncOperations.addHandler(consumer)
        channel.read()
        try channel.writeInbound(Self.message(0, Array("second".utf8)))
        #expect(consumer.events == ["data first", "data second"])
    }

    @Test func anErrorWhileTheConsumerReadsIsDeliveredAtOnce() throws {
        let handler = PortForwardFrameHandler(port: 8080)
        let channel = EmbeddedChannel(handler: handler)
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        let consumer = Consumer()
        try channel.pipeline.syncOperations.addHandler(consumer)
        handler.startDelivering(context: try channel.pipeline.syncOperations.context(handler: handler))
        channel.read()
        try channel.writeInbound(Self.message(1, [0x90, 0x1F] + Array("no such port".utf8)))
        #expect(consumer.events == ["error port-forward: the cluster reported: no such port", "inactive"])
    }

    @Test func aProtocolViolationIsHeldTheSameWay() throws {
        let handler = PortForwardFrameHandler(port: 8080)
        let channel = EmbeddedChannel(handler: handler)
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        try channel.writeInbound(Self.message(0, [0x91, 0x1F]))
        #expect(channel.isActive)
        let consumer = Consumer()
        try channel.pipeline.syncOperations.addHandler(consumer)
        handler.startDelivering(context: try channel.pipeline.syncOperations.context(handler: handler))
        channel.read()
        #expect(
            consumer.events == [
                "error port-forward: protocol error: the server sent port 8081 announced, 8080 asked for", "inactive",
            ])
    }
}
