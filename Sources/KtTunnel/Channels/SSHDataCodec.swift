import NIOCore
import NIOSSH

/// Turns an SSH child channel into a plain byte stream: inbound `SSHChannelData` of the data type becomes
/// `ByteBuffer` (extended data such as stderr is dropped), outbound `ByteBuffer` becomes `SSHChannelData`.
/// Half-closure is the channel's own: EOF arrives as `ChannelEvent.inputClosed`, `close(mode: .output)` sends EOF.
///
/// Two repairs, so that closing never loses bytes already written:
/// - swift-nio-ssh 0.15.1 refuses to send `CHANNEL_EOF` once the peer has sent its own (its state machine allows a
///   second EOF of ours instead), failing the channel with "Sent EOF out of sequence" and dropping the data still
///   waiting for window. So when the peer's EOF has come, `close(mode: .output)` waits until everything written
///   before it has gone out and then closes the channel: with both directions finished, `CHANNEL_CLOSE` says all
///   that `CHANNEL_EOF` would have.
/// - A full close sends `CHANNEL_CLOSE` at once and drops writes still waiting for window. `NIOAsyncChannel`'s
///   `executeThenClose` closes right after `outbound.finish()`, so a full close that comes while an output close
///   is on its way waits for it.
public final class SSHDataCodec: ChannelDuplexHandler, @unchecked Sendable {
    public typealias InboundIn = SSHChannelData
    public typealias InboundOut = ByteBuffer
    public typealias OutboundIn = ByteBuffer
    public typealias OutboundOut = SSHChannelData

    private var peerSentEOF = false
    /// The output close in progress, once one was asked for.
    private var outputClose: EventLoopFuture<Void>?

    public init() {}

    public func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let message = unwrapInboundIn(data)
        guard case .channel = message.type, case .byteBuffer(let bytes) = message.data else { return }
        context.fireChannelRead(wrapInboundOut(bytes))
    }

    public func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let event = event as? ChannelEvent, event == .inputClosed { peerSentEOF = true }
        context.fireUserInboundEventTriggered(event)
    }

    public func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let bytes = unwrapOutboundIn(data)
        context.write(wrapOutboundOut(SSHChannelData(type: .channel, data: .byteBuffer(bytes))), promise: promise)
    }

    public func close(context: ChannelHandlerContext, mode: CloseMode, promise: EventLoopPromise<Void>?) {
        switch mode {
        case .output where outputClose == nil:
            let done = context.eventLoop.makePromise(of: Void.self)
            outputClose = done.futureResult
            if let promise { done.futureResult.cascade(to: promise) }
            guard peerSentEOF else {
                context.close(mode: .output, promise: done)
                return
            }
            // An empty data message is queued behind every earlier write; once it is out, so are they.
            let drained = context.eventLoop.makePromise(of: Void.self)
            context.writeAndFlush(
                wrapOutboundOut(SSHChannelData(type: .channel, data: .byteBuffer(ByteBuffer()))), promise: drained)
            drained.futureResult.assumeIsolated().whenComplete { _ in
                context.close(mode: .all, promise: done)
            }
        case .all:
            guard let outputClose else {
                context.close(mode: .all, promise: promise)
                return
            }
            outputClose.assumeIsolated().whenComplete { _ in
                if context.channel.isActive {
                    context.close(mode: .all, promise: promise)
                } else if let promise {
                    context.channel.closeFuture.cascade(to: promise)
                }
            }
        case .output:
            // A second output close: EOF is already on its way (or the channel is closing).
            promise?.fail(ChannelError.outputClosed)
        default:
            context.close(mode: mode, promise: promise)
        }
    }
}
