import KubeKit
import NIOCore
import NIOWebSocket

/// The server side of a `v4.channel.k8s.io` port-forward for one port: relays WebSocket channel 0 to a TCP
/// connection to the pod and back, as a kubelet does (`portforward/websocket.go`). The first message on the data
/// and the error channel is the port as a little-endian UInt16; a failed dial is reported as text on the error
/// channel, then the WebSocket closes.
///
/// Both channels live on the same event loop (`dial` is called with the WebSocket's loop and must connect on it),
/// so the two halves call each other directly. Each side reads only while the other can take more.
public final class PortForwardRelay: ChannelDuplexHandler, RemovableChannelHandler {
    public typealias InboundIn = WebSocketFrame
    public typealias OutboundIn = WebSocketFrame
    public typealias OutboundOut = WebSocketFrame

    private let port: UInt16
    private let podName: String
    private let dial: @Sendable (any EventLoop) -> EventLoopFuture<any Channel>
    private var context: ChannelHandlerContext?
    private var pod: PodSide?
    private var early: [ByteBuffer] = []
    private var fragmentChannel: UInt8?
    private var pendingRead = false
    private var closed = false

    public init(port: UInt16, pod: String, dial: @escaping @Sendable (any EventLoop) -> EventLoopFuture<any Channel>) {
        self.port = port
        self.podName = pod
        self.dial = dial
    }

    public func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        for channel: UInt8 in [0, 1] {
            var header = context.channel.allocator.buffer(capacity: 3)
            header.writeInteger(channel)
            header.writeInteger(port, endianness: .little)
            context.write(wrapOutboundOut(WebSocketFrame(fin: true, opcode: .binary, data: header)), promise: nil)
        }
        context.flush()
        let bound = NIOLoopBound(self, eventLoop: context.eventLoop)
        dial(context.eventLoop).whenComplete { result in
            let relay = bound.value
            switch result {
            case .success(let channel): relay.connected(channel)
            case .failure(let error):
                relay.fail("error forwarding port \(relay.port) to pod \(relay.podName): \(error)")
            }
        }
    }

    public func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
    }

    private func connected(_ channel: any Channel) {
        precondition(channel.eventLoop === context?.eventLoop, "the pod connection must share the WebSocket's loop")
        guard !closed, context != nil else {
            channel.close(promise: nil)
            return
        }
        let side = PodSide(relay: self)
        do {
            try channel.pipeline.syncOperations.addHandler(side)
        } catch {
            channel.close(promise: nil)
            return fail("error forwarding port \(port) to pod \(podName): \(error)")
        }
        pod = side
        for buffer in early { side.write(buffer) }
        early = []
        side.flush()
        // A dialer may hand the pod's connection over with reading off, so that nothing the pod sends first is read
        // before this relay is in place to take it; from here on it reads (through PodSide's backpressure).
        try? channel.syncOptions?.setOption(.autoRead, value: true)
    }

    private func fail(_ message: String) {
        guard let context else { return }
        var text = context.channel.allocator.buffer(capacity: message.utf8.count + 1)
        text.writeInteger(UInt8(1))
        text.writeString(message)
        context.write(wrapOutboundOut(WebSocketFrame(fin: true, opcode: .binary, data: text)), promise: nil)
        closeWebSocket()
    }

    private func closeWebSocket() {
        guard let context, !closed else { return }
        closed = true
        let frame = WebSocketFrame(
            fin: true, opcode: .connectionClose, data: context.channel.allocator.buffer(capacity: 0))
        let channel = context.channel
        context.writeAndFlush(wrapOutboundOut(frame)).whenComplete { _ in channel.close(promise: nil) }
    }

    // MARK: - From the client

    public func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = unwrapInboundIn(data)
        var payload = frame.data
        if let key = frame.maskKey { WebSocketMasking.apply(key, to: &payload) }
        switch frame.opcode {
        case .binary:
            guard let channel = payload.readInteger(as: UInt8.self) else { return }
            fragmentChannel = frame.fin ? nil : channel
            if channel == 0 { forward(payload) }
        case .continuation:
            if fragmentChannel == 0 { forward(payload) }
            if frame.fin { fragmentChannel = nil }
        case .ping:
            context.writeAndFlush(
                wrapOutboundOut(WebSocketFrame(fin: true, opcode: .pong, data: payload)), promise: nil)
        case .connectionClose:
            pod?.close()
            closeWebSocket()
        default:
            break
        }
    }

    private func forward(_ payload: ByteBuffer) {
        guard payload.readableBytes > 0 else { return }
        if let pod { pod.write(payload) } else { early.append(payload) }
    }

    public func channelReadComplete(context: ChannelHandlerContext) {
        pod?.flush()
    }

    public func channelInactive(context: ChannelHandlerContext) {
        closed = true
        pod?.close()
        context.fireChannelInactive()
    }

    public func errorCaught(context: ChannelHandlerContext, error: any Error) {
        pod?.close()
        closeWebSocket()
    }

    public func read(context: ChannelHandlerContext) {
        if pod?.isWritable ?? true {
            context.read()
        } else {
            pendingRead = true
        }
    }

    public func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable { pod?.partnerBecameWritable() }
        context.fireChannelWritabilityChanged()
    }

    // MARK: - From the pod

    var isWritable: Bool { context?.channel.isWritable ?? false }

    func fromPod(_ bytes: ByteBuffer) {
        guard let context else { return }
        var message = context.channel.allocator.buffer(capacity: bytes.readableBytes + 1)
        message.writeInteger(UInt8(0))
        var bytes = bytes
        message.writeBuffer(&bytes)
        context.write(wrapOutboundOut(WebSocketFrame(fin: true, opcode: .binary, data: message)), promise: nil)
    }

    func flushToClient() { context?.flush() }

    func podClosed() { closeWebSocket() }

    func podBecameWritable() {
        if pendingRead, let context {
            pendingRead = false
            context.read()
        }
    }
}

/// The pod's TCP connection, glued to the relay.
final class PodSide: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private let relay: PortForwardRelay
    private var context: ChannelHandlerContext?
    private var pendingRead = false

    init(relay: PortForwardRelay) {
        self.relay = relay
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        if context.channel.isActive { context.read() }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
    }

    var isWritable: Bool { context?.channel.isWritable ?? false }

    func write(_ buffer: ByteBuffer) { context?.write(wrapOutboundOut(buffer), promise: nil) }
    func flush() { context?.flush() }
    func close() { context?.close(promise: nil) }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        relay.fromPod(unwrapInboundIn(data))
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        relay.flushToClient()
    }

    func channelInactive(context: ChannelHandlerContext) {
        relay.podClosed()
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }

    func read(context: ChannelHandlerContext) {
        if relay.isWritable {
            context.read()
        } else {
            pendingRead = true
        }
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable { relay.podBecameWritable() }
        context.fireChannelWritabilityChanged()
    }

    func partnerBecameWritable() {
        if pendingRead, let context {
            pendingRead = false
            context.read()
        }
    }
}
