import NIOCore

/// Joins two channels on one event loop: what one reads, the other writes, with reads held while the other cannot
/// take more (so a slow side slows the fast one instead of filling memory), and a close on one side closing the
/// other. For raw bytes after an `Upgrade` (ByteBuffer) and for the two halves of an HTTP/2 stream
/// (`HTTP2Frame.FramePayload`).
final class Glue<Payload>: ChannelDuplexHandler, RemovableChannelHandler, @unchecked Sendable {
    typealias InboundIn = Payload
    typealias OutboundIn = Payload
    typealias OutboundOut = Payload

    private var partner: Glue<Payload>?
    private var context: ChannelHandlerContext?
    private var pendingRead = false
    /// Counts what passes, for the access log.
    private(set) var bytes = 0
    private let measure: (Payload) -> Int

    private init(measure: @escaping (Payload) -> Int) {
        self.measure = measure
    }

    /// A joined pair: add the first to one channel and the second to the other.
    static func pair(measure: @escaping (Payload) -> Int = { _ in 0 }) -> (Glue<Payload>, Glue<Payload>) {
        let first = Glue(measure: measure)
        let second = Glue(measure: measure)
        first.partner = second
        second.partner = first
        return (first, second)
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
        partner = nil
    }

    private func partnerWrite(_ data: NIOAny) {
        context?.write(data, promise: nil)
    }

    private func partnerFlush() {
        context?.flush()
    }

    private func partnerClose() {
        context?.close(promise: nil)
    }

    private var partnerWritable: Bool { context?.channel.isWritable ?? false }

    private func partnerBecameWritable() {
        if pendingRead {
            pendingRead = false
            context?.read()
        }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        bytes += measure(unwrapInboundIn(data))
        partner?.partnerWrite(data)
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        partner?.partnerFlush()
    }

    func channelInactive(context: ChannelHandlerContext) {
        partner?.partnerClose()
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        context.close(promise: nil)
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable { partner?.partnerBecameWritable() }
        context.fireChannelWritabilityChanged()
    }

    func read(context: ChannelHandlerContext) {
        if partner?.partnerWritable ?? true {
            context.read()
        } else {
            pendingRead = true
        }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        // A half-close of raw bytes (the peer's FIN) is passed on as one.
        if let event = event as? ChannelEvent, event == .inputClosed {
            partner?.context?.close(mode: .output, promise: nil)
            return
        }
        context.fireUserInboundEventTriggered(event)
    }
}
