import NIOCore

/// One TCP flow through the tunnel: an SSH child channel that carries `ByteBuffer`s both ways, with `autoRead` off
/// (reads happen when the consumer asks) and half-closure on (EOF one way leaves the other open).
///
/// Backpressure is SSH's own: bytes the consumer has not read are not acknowledged with a window adjust, so the
/// far side stops sending once the channel window (8 MiB with swift-nio-ssh's defaults) is full.
public final class TunnelFlow: Sendable {
    /// The SSH child channel, `ByteBuffer` in and out.
    public let channel: Channel
    private let connection: TunnelConnection

    init(channel: Channel, connection: TunnelConnection) {
        self.channel = channel
        self.connection = connection
        connection.flowOpened()
        channel.closeFuture.whenComplete { [connection] _ in connection.flowClosed() }
    }

    /// Joins this flow to another `ByteBuffer` channel (a local socket), both ways, with backpressure; the pair
    /// closes together.
    public func glue(to other: Channel) -> EventLoopFuture<Void> {
        GlueHandler.join(channel, other)
    }

    /// The flow as an async channel (`for try await chunk in inbound`, `outbound.write(_:)`). Must be called once.
    public func asyncChannel() async throws -> NIOAsyncChannel<ByteBuffer, ByteBuffer> {
        let wrapped = try await channel.eventLoop.submit { [channel] in
            try NIOAsyncChannel<ByteBuffer, ByteBuffer>(
                wrappingChannelSynchronously: channel,
                configuration: .init(isOutboundHalfClosureEnabled: true))
        }.get()
        // The async channel reads on demand from here on.
        try await channel.startReading().get()
        return wrapped
    }
}

/// kt-shadow's datagram channel: UDP datagrams and ICMP echoes for many flows, framed (``DatagramFrame``).
public final class TunnelDatagramChannel: Sendable {
    public let channel: Channel

    init(channel: Channel) {
        self.channel = channel
    }

    /// Sends one frame.
    public func send(_ frame: DatagramFrame) {
        var buffer = channel.allocator.buffer(capacity: 2 + frame.encodedLength)
        guard frame.encode(into: &buffer) else { return }
        channel.writeAndFlush(buffer, promise: nil)
    }

    public func close() {
        channel.close(promise: nil)
    }
}

/// Splits the byte stream of a datagram channel into frames; a malformed frame ends the channel.
final class DatagramFrameHandler: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = ByteBuffer
    private let onFrame: @Sendable (DatagramFrame) -> Void
    private var buffer = ByteBuffer()

    /// Bytes of an incomplete frame we hold at most: one maximal frame and its length field.
    static let maximumBuffered = DatagramFrame.maximumLength + 2

    init(onFrame: @escaping @Sendable (DatagramFrame) -> Void) {
        self.onFrame = onFrame
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var bytes = unwrapInboundIn(data)
        buffer.writeBuffer(&bytes)
        do {
            while let frame = try DatagramFrame.decode(from: &buffer) { onFrame(frame) }
        } catch {
            context.close(promise: nil)
            return
        }
        buffer.discardReadBytes()
        if buffer.readableBytes > Self.maximumBuffered { context.close(promise: nil) }
    }
}
