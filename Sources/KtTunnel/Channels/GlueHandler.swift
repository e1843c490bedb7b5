import NIOCore

/// Joins two channels into one byte pipe, with backpressure both ways: a side reads only while the other side is
/// active and can take writes, so a slow reader slows its sender instead of filling memory. Half-closes pass through
/// (EOF on one side becomes EOF on the other, after the data before it), and the pair closes when both directions
/// are done or either side ends.
///
/// Both channels must carry `ByteBuffer` (put ``SSHDataCodec`` in front of an SSH child channel) and should allow
/// remote half-closure. Use ``join(_:_:)``: it adds the pair and turns `autoRead` on, so reads start as soon as both
/// channels are active.
public final class GlueHandler: ChannelDuplexHandler {
    public typealias InboundIn = NIOAny
    public typealias OutboundIn = NIOAny
    public typealias OutboundOut = NIOAny

    private var partner: GlueHandler?
    private var context: ChannelHandlerContext?
    private var pendingRead = false
    private var inputClosed = false
    private var outputClosed = false
    private var outputFlushed = false
    private var closing = false

    private init() {}

    /// Two handlers that glue the channels they are added to.
    public static func matchedPair() -> (GlueHandler, GlueHandler) {
        let first = GlueHandler()
        let second = GlueHandler()
        first.partner = second
        second.partner = first
        return (first, second)
    }

    /// Glues `first` and `second` (both `ByteBuffer` channels on the same event loop) and starts reading.
    public static func join(_ first: Channel, _ second: Channel) -> EventLoopFuture<Void> {
        precondition(first.eventLoop === second.eventLoop, "glued channels must share an event loop")
        let (one, two) = matchedPair()
        return first.pipeline.addHandler(one).flatMap {
            second.pipeline.addHandler(two)
        }.flatMap {
            first.startReading()
        }.flatMap {
            second.startReading()
        }.flatMapError { error in
            first.close(promise: nil)
            second.close(promise: nil)
            return first.eventLoop.makeFailedFuture(error)
        }
    }

    public func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    public func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
        self.partner = nil
    }

    public func channelActive(context: ChannelHandlerContext) {
        context.fireChannelActive()
        partner?.partnerBecameWritable()
        partnerBecameWritable()
    }

    public func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        partner?.partnerWrite(data)
    }

    public func channelReadComplete(context: ChannelHandlerContext) {
        partner?.partnerFlush()
        context.fireChannelReadComplete()
    }

    public func channelInactive(context: ChannelHandlerContext) {
        partner?.partnerEnded()
        context.fireChannelInactive()
    }

    public func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let event = event as? ChannelEvent, event == .inputClosed {
            inputClosed = true
            partner?.partnerWriteEOF()
            closeIfDone()
        }
        context.fireUserInboundEventTriggered(event)
    }

    public func errorCaught(context: ChannelHandlerContext, error: Error) {
        context.close(promise: nil)
    }

    public func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable { partner?.partnerBecameWritable() }
        context.fireChannelWritabilityChanged()
    }

    /// Reads pass only while this channel is active and the partner can take writes. A read asked of a socket
    /// that is not registered yet (joined from a child-channel initializer) would be remembered by NIO but never
    /// armed, so it waits here for `channelActive`.
    public func read(context: ChannelHandlerContext) {
        if context.channel.isActive, partner?.readyForWrites ?? false {
            context.read()
        } else {
            pendingRead = true
        }
    }

    // MARK: - Called by the partner

    private func partnerWrite(_ data: NIOAny) {
        context?.write(data, promise: nil)
    }

    private func partnerFlush() {
        context?.flush()
    }

    private func partnerWriteEOF() {
        guard !outputClosed, let context else { return }
        outputClosed = true
        // EOF goes out after the queued data; close only once it has, or the queued data would be dropped.
        let promise = context.eventLoop.makePromise(of: Void.self)
        promise.futureResult.assumeIsolated().whenComplete { _ in
            self.outputFlushed = true
            self.closeIfDone()
        }
        guard inputClosed else {
            context.close(mode: .output, promise: promise)
            return
        }
        // A socket whose input has already ended turns `close(mode: .output)` into a full close at once, dropping
        // writes it has not made yet. An empty write queued behind them completes once they are out.
        let drained = context.eventLoop.makePromise(of: Void.self)
        context.writeAndFlush(NIOAny(ByteBuffer()), promise: drained)
        drained.futureResult.assumeIsolated().whenComplete { _ in
            context.close(mode: .output, promise: promise)
        }
    }

    /// The partner closed: send what is queued, then EOF, then close. When EOF is already on its way, the close
    /// waits for it too: closing earlier would drop data still waiting for the peer's window.
    private func partnerEnded() {
        guard !closing, context != nil else { return }
        closing = true
        partnerWriteEOF()
        closeIfDone()
    }

    private func partnerBecameWritable() {
        guard pendingRead, let context, context.channel.isActive, partner?.readyForWrites ?? false else { return }
        pendingRead = false
        context.read()
    }

    private var readyForWrites: Bool {
        guard let channel = context?.channel else { return false }
        return channel.isActive && channel.isWritable && !outputClosed
    }

    private func closeIfDone() {
        if inputClosed || closing, outputFlushed { context?.close(promise: nil) }
    }
}
