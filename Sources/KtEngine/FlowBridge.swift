import KtStack
import KtTunnel
import NIOCore

/// The engine's end of one tunnel flow, in the flow's SSH child channel. What the cluster side sends goes to the
/// engine as it is read; reading stops when the engine holds `credit` bytes it has not yet handed to the stack, so
/// no window adjust goes out and the far side stops at the SSH window (the stack's send buffer is full, which means
/// the laptop's program reads slower than the cluster side sends).
final class FlowBridgeHandler: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = ByteBuffer

    let flow: FlowID
    let post: @Sendable (EngineCommand) -> Void
    /// Touched only on the channel's event loop.
    private var credit: Int
    private var starved = false
    private var context: ChannelHandlerContext?
    /// What one read delivered, handed to the engine at its end as one command.
    private var received: [ByteBuffer] = []

    init(flow: FlowID, credit: Int, post: @escaping @Sendable (EngineCommand) -> Void) {
        self.flow = flow
        self.credit = credit
        self.post = post
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        if context.channel.isActive { context.read() }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let bytes = unwrapInboundIn(data)
        credit -= bytes.readableBytes
        received.append(bytes)
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        deliver()
        if credit > 0 {
            context.read()
        } else {
            starved = true
        }
    }

    /// Hands what was read to the engine, before any event that must come after it.
    private func deliver() {
        guard !received.isEmpty else { return }
        post(.data(flow, received))
        received = []
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let event = event as? ChannelEvent, event == .inputClosed {
            deliver()
            post(.remoteEOF(flow))
        }
        context.fireUserInboundEventTriggered(event)
    }

    func channelInactive(context: ChannelHandlerContext) {
        deliver()
        post(.remoteClosed(flow))
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }

    /// The engine handed `bytes` to the stack: read again if reading had stopped. On the event loop.
    func grant(_ bytes: Int) {
        credit += bytes
        if starved, credit > 0, let context {
            starved = false
            context.read()
        }
    }
}

/// What the NIO side tells the engine thread.
enum EngineCommand: Sendable {
    case dialed(FlowID, Channel, FlowBridgeHandler)
    case dialFailed(FlowID, KtStack.DialFailure)
    case data(FlowID, [ByteBuffer])
    case remoteEOF(FlowID)
    case remoteClosed(FlowID)
    case written(FlowID, Int)
    case datagramChannel(TunnelDatagramChannel)
    case frame(DatagramFrame)
    case stop
}
