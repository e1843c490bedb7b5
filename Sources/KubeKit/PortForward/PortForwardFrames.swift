import NIOCore
import NIOWebSocket

/// The client side of the `v4.channel.k8s.io` port-forward protocol, as a handler between WebSocket frames and a
/// plain byte stream: what the pod's port sends comes out as `ByteBuffer`s, what is written goes to the pod.
///
/// The protocol (kubelet `portforward/websocket.go`): for the i-th requested port, channel 2i carries data both
/// ways and channel 2i+1 carries error text from the server; every binary message starts with its channel byte;
/// the server's first message on each channel is the port number as a little-endian UInt16.
///
/// Inbound data is held until someone downstream asks to read (`read()`), so that bytes the pod sends right after
/// the handshake (an SSH server's version line) wait for the handler that will consume them. The end of the stream
/// is held the same way: the server's error text (or a protocol violation) is fired and the connection closed only
/// on the consumer's first read, behind the data before it. Ending it at once lost the error whenever it came right
/// behind the 101: the error went down a pipeline with nobody listening, the TLS close took a moment, and the consumer
/// that was added meanwhile saw only the channel going inactive (the `errorChannelTextIsSurfaced` flake).
final class PortForwardFrameHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = WebSocketFrame
    typealias InboundOut = ByteBuffer
    typealias OutboundIn = ByteBuffer
    /// Whole frames, already masked (`WebSocketMasking.clientFrame`).
    typealias OutboundOut = ByteBuffer

    /// The most error text kept from the error channel (it is one line in practice).
    static let maximumErrorBytes = 16 << 10

    private let port: UInt16
    private var seenPortHeader: [Bool] = [false, false]
    /// A fragmented message in progress: its channel, and for the error channel its text so far.
    private var fragmentChannel: UInt8?
    private var errorText: [UInt8] = []
    private var pending: [ByteBuffer] = []
    private var delivering = false
    private var readRequested = false
    private var closeSent = false
    /// Why the handler ended the stream (the server's error text or a protocol violation), for a caller that was not
    /// yet listening when it happened.
    private(set) var failure: PortForwardError?
    /// The failure is recorded but not yet fired downstream (nobody has asked to read since it came).
    private var failurePending = false

    init(port: UInt16) {
        self.port = port
    }

    /// From now on inbound bytes go downstream whenever a read is asked for. Called on the event loop once the
    /// pipeline's consumer is in place.
    func startDelivering(context: ChannelHandlerContext) {
        delivering = true
        if readRequested { flushPending(context: context) }
    }

    /// The consumer is in place and has asked to read: the end can be delivered now.
    private var consumerReading: Bool { delivering && readRequested }

    // MARK: - Inbound

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        // After the stream's end, the server's frames are not part of it.
        guard failure == nil else { return }
        let frame = unwrapInboundIn(data)
        switch frame.opcode {
        case .binary:
            var payload = frame.unmaskedData
            guard let channel = payload.readInteger(as: UInt8.self) else {
                return protocolError(context: context, "an empty message (no channel byte)")
            }
            fragmentChannel = frame.fin ? nil : channel
            receive(context: context, channel: channel, payload: payload)
        case .continuation:
            guard let channel = fragmentChannel else {
                return protocolError(context: context, "a continuation frame without a message")
            }
            if frame.fin { fragmentChannel = nil }
            receive(context: context, channel: channel, payload: frame.unmaskedData, continuing: true)
        case .text:
            protocolError(context: context, "a text message (the base64 protocol was not asked for)")
        case .ping:
            let reply = WebSocketMasking.clientFrame(
                opcode: .pong, prefix: nil, payload: frame.unmaskedData, allocator: context.channel.allocator)
            context.writeAndFlush(wrapOutboundOut(reply), promise: nil)
        case .pong:
            break
        case .connectionClose:
            finishError(context: context)
            if failure == nil {
                sendClose(context: context, code: .normalClosure)
                context.close(promise: nil)
            }
        default:
            protocolError(context: context, "an unknown opcode \(frame.opcode)")
        }
    }

    private func receive(context: ChannelHandlerContext, channel: UInt8, payload: ByteBuffer, continuing: Bool = false)
    {
        var payload = payload
        switch channel {
        case 0, 1:
            if !seenPortHeader[Int(channel)] && !continuing {
                guard let low = payload.readInteger(as: UInt8.self), let high = payload.readInteger(as: UInt8.self)
                else {
                    return protocolError(context: context, "a first message on channel \(channel) without the port")
                }
                let announced = UInt16(low) | UInt16(high) << 8
                guard announced == port else {
                    return protocolError(context: context, "port \(announced) announced, \(port) asked for")
                }
                seenPortHeader[Int(channel)] = true
            }
            guard payload.readableBytes > 0 else { return }
            if channel == 0 {
                deliver(context: context, payload)
            } else if errorText.count < Self.maximumErrorBytes {
                errorText += payload.readableBytesView.prefix(Self.maximumErrorBytes - errorText.count)
                // The kubelet writes the whole message at once, then closes: report it as soon as it is complete.
                if fragmentChannel == nil { finishError(context: context) }
            }
        default:
            protocolError(context: context, "a message on channel \(channel), which was not asked for")
        }
    }

    private func deliver(context: ChannelHandlerContext, _ buffer: ByteBuffer) {
        // Only once the consumer has asked: between the hand-over and its first read nobody may be there yet, and a
        // read still in flight from the handshake delivered the first 30 KiB of a transfer to nobody (seen once,
        // under load, as a 1 GiB port-forward that came up short).
        if consumerReading && pending.isEmpty {
            context.fireChannelRead(wrapInboundOut(buffer))
        } else {
            pending.append(buffer)
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        if consumerReading { context.fireChannelReadComplete() }
    }

    /// Delivers the data held back, then the failure held back (if any) and the close it means.
    private func flushPending(context: ChannelHandlerContext) {
        if !pending.isEmpty {
            let buffers = pending
            pending = []
            for buffer in buffers { context.fireChannelRead(wrapInboundOut(buffer)) }
            context.fireChannelReadComplete()
        }
        deliverFailure(context: context)
    }

    private func deliverFailure(context: ChannelHandlerContext) {
        guard failurePending, let failure else { return }
        failurePending = false
        context.fireErrorCaught(failure)
        sendClose(context: context, code: failure.isProtocolViolation ? .protocolError : .normalClosure)
        context.close(promise: nil)
    }

    /// Records why the stream ends; it reaches the consumer behind the data before it (at once if it is reading).
    private func end(context: ChannelHandlerContext, _ why: PortForwardError) {
        guard failure == nil else { return }
        failure = why
        failurePending = true
        // Nothing more is read from the server: what follows the failure is not part of the stream.
        fragmentChannel = nil
        if consumerReading && pending.isEmpty { deliverFailure(context: context) }
    }

    private func finishError(context: ChannelHandlerContext) {
        guard !errorText.isEmpty else { return }
        let text = String(decoding: errorText, as: UTF8.self)
        errorText = []
        end(context: context, .remote(text))
    }

    private func protocolError(context: ChannelHandlerContext, _ problem: String) {
        end(context: context, .protocolViolation("the server sent \(problem)"))
    }

    func channelInactive(context: ChannelHandlerContext) {
        // Whatever arrived before the end is still delivered, then why it ended, then the end.
        if !pending.isEmpty {
            let buffers = pending
            pending = []
            for buffer in buffers { context.fireChannelRead(wrapInboundOut(buffer)) }
            context.fireChannelReadComplete()
        }
        if failurePending, let failure {
            failurePending = false
            context.fireErrorCaught(failure)
        }
        context.fireChannelInactive()
    }

    // MARK: - Outbound

    func read(context: ChannelHandlerContext) {
        readRequested = true
        if delivering {
            flushPending(context: context)
            // The stream has ended: the failure (delivered above) closed the connection.
            if failure != nil { return }
        }
        context.read()
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let payload = unwrapOutboundIn(data)
        guard payload.readableBytes > 0 else {
            // An empty message would read as "no data" to some servers; nothing to send.
            promise?.succeed(())
            return
        }
        let frame = WebSocketMasking.clientFrame(
            opcode: .binary, prefix: 0, payload: payload, allocator: context.channel.allocator)
        context.write(wrapOutboundOut(frame), promise: promise)
    }

    func close(context: ChannelHandlerContext, mode: CloseMode, promise: EventLoopPromise<Void>?) {
        // The v4 protocol cannot half-close a port's stream: any close ends the connection.
        if mode == .output || mode == .all { sendClose(context: context, code: .normalClosure) }
        if mode == .output {
            context.close(mode: .all, promise: promise)
        } else {
            context.close(mode: mode, promise: promise)
        }
    }

    private func sendClose(context: ChannelHandlerContext, code: WebSocketErrorCode) {
        guard !closeSent, context.channel.isActive else { return }
        closeSent = true
        var data = context.channel.allocator.buffer(capacity: 2)
        data.write(webSocketErrorCode: code)
        let frame = WebSocketMasking.clientFrame(
            opcode: .connectionClose, prefix: nil, payload: data, allocator: context.channel.allocator)
        context.writeAndFlush(wrapOutboundOut(frame), promise: nil)
    }
}

/// Why a port-forward ended or could not start.
public enum PortForwardError: Error, Sendable, Hashable, CustomStringConvertible {
    /// The server's error channel said this (e.g. nothing listens on the pod's port).
    case remote(String)
    case protocolViolation(String)
    /// The upgrade to WebSocket was refused; the server's answer.
    case upgradeRefused(status: Int, message: String)

    public var description: String {
        switch self {
        case .remote(let text): return "port-forward: the cluster reported: \(text)"
        case .protocolViolation(let problem): return "port-forward: protocol error: \(problem)"
        case .upgradeRefused(let status, let message):
            return "port-forward: the API server refused the WebSocket upgrade (HTTP \(status)): \(message)"
        }
    }

    var isProtocolViolation: Bool {
        if case .protocolViolation = self { return true }
        return false
    }
}
