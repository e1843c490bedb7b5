import KtTunnel
import Logging
import NIOCore
import NIOSSH

/// A `session` channel before it knows what it is for. kt-shadow runs no shell and no programs: the only commands are
/// its own — `kt-control` (banner, keep-alive and the reasons of failed
/// dials, ``DialStatus``), `kt-udp` (the datagram channel, ``DatagramFrame``) and `kt-udp-listen <port>` (a UDP port of
/// the pod brought to the client, ``DatagramListener``). A shell, another command or a subsystem is
/// refused and the channel closed; `pty-req` and `env` only get a failure reply (the exec or shell that follows is
/// what gets refused). Other channels are unaffected.
final class SessionHandler: ChannelInboundHandler, RemovableChannelHandler, @unchecked Sendable {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    /// The first line on a control channel: lets the client tell kt-shadow from a stock sshd.
    static let banner = "kt-shadow 1\n"

    private let connection: ShadowConnection
    private var started = false

    init(connection: ShadowConnection) {
        self.connection = connection
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        switch event {
        case let exec as SSHChannelRequestEvent.ExecRequest:
            execute(exec.command, wantReply: exec.wantReply, context: context)
        case let request as SSHChannelRequestEvent.ShellRequest:
            refuse("a shell", wantReply: request.wantReply, context: context)
        case let request as SSHChannelRequestEvent.SubsystemRequest:
            refuse("subsystem \(request.subsystem)", wantReply: request.wantReply, context: context)
        case let request as SSHChannelRequestEvent.PseudoTerminalRequest:
            // A pty alone does no harm; refusing it makes `ssh` without -N say so before its shell is refused too.
            if request.wantReply { context.triggerUserOutboundEvent(ChannelFailureEvent(), promise: nil) }
        case let request as SSHChannelRequestEvent.EnvironmentRequest:
            if request.wantReply { context.triggerUserOutboundEvent(ChannelFailureEvent(), promise: nil) }
        case let event as ChannelEvent where event == .inputClosed && !started:
            context.close(promise: nil)
        default:
            context.fireUserInboundEventTriggered(event)
        }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        // Bytes before a command mean nothing here.
        if !started { context.close(promise: nil) }
    }

    private func refuse(_ what: String, wantReply: Bool, context: ChannelHandlerContext) {
        connection.logger.info("refused \(what): kt-shadow runs no programs")
        if wantReply { context.triggerUserOutboundEvent(ChannelFailureEvent(), promise: nil) }
        context.close(promise: nil)
    }

    private func execute(_ command: String, wantReply: Bool, context: ChannelHandlerContext) {
        guard !started else {
            refuse("a second command on one channel", wantReply: wantReply, context: context)
            return
        }
        let accept = {
            self.started = true
            if wantReply { context.triggerUserOutboundEvent(ChannelSuccessEvent(), promise: nil) }
        }
        if command == "kt-control" {
            accept()
            context.writeAndFlush(wrapOutboundOut(ByteBuffer(string: Self.banner)), promise: nil)
            replace(with: ControlResponder(connection: connection), context: context)
        } else if command == "kt-udp" {
            accept()
            replace(with: DatagramRelay(connection: connection), context: context)
        } else if let port = DatagramListener.port(of: command) {
            started = true
            DatagramListener.bind(port: port, connection: connection, on: context.eventLoop).whenComplete { result in
                switch result {
                case .success(let listener):
                    if wantReply { context.triggerUserOutboundEvent(ChannelSuccessEvent(), promise: nil) }
                    self.replace(with: listener, context: context)
                case .failure(let error):
                    self.connection.logger.warning("cannot listen on UDP port \(port): \(error)")
                    if wantReply { context.triggerUserOutboundEvent(ChannelFailureEvent(), promise: nil) }
                    context.close(promise: nil)
                }
            }
        } else {
            refuse("command '\(command.prefix(60))'", wantReply: wantReply, context: context)
        }
    }

    private func replace(with handler: ChannelHandler & Sendable, context: ChannelHandlerContext) {
        let channel = context.channel
        do {
            try context.pipeline.syncOperations.addHandler(handler, position: .after(self))
        } catch {
            context.close(promise: nil)
            return
        }
        context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
        channel.startReading().whenFailure { _ in channel.close(promise: nil) }
    }
}

/// The control channel: answers `ping` with `pong`, and `why <host> <port>` with the reason the last dial there
/// failed (``DialStatus``).
final class ControlResponder: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer
    private let connection: ShadowConnection
    private var buffer = ByteBuffer()
    /// A line longer than this ends the channel.
    static let maximumLine = 512

    init(connection: ShadowConnection) {
        self.connection = connection
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var bytes = unwrapInboundIn(data)
        buffer.writeBuffer(&bytes)
        var answers = ""
        while let newline = buffer.readableBytesView.firstIndex(of: UInt8(ascii: "\n")) {
            let line = buffer.readString(length: newline - buffer.readerIndex) ?? ""
            buffer.moveReaderIndex(forwardBy: 1)
            if line == "ping" {
                answers += "pong\n"
            } else if let (host, port) = DialStatus.parseWhyRequest(line[...]) {
                let failure =
                    connection.recentFailure(host: host, port: port)
                    ?? .other("the shadow has no record of a failed dial to \(host):\(port)")
                answers += DialStatus.whyAnswer(host: host, port: port, status: .failed(failure))
            }
        }
        buffer.discardReadBytes()
        if buffer.readableBytes > Self.maximumLine {
            context.close(promise: nil)
            return
        }
        if !answers.isEmpty { context.writeAndFlush(wrapOutboundOut(ByteBuffer(string: answers)), promise: nil) }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let event = event as? ChannelEvent, event == .inputClosed { context.close(promise: nil) }
        context.fireUserInboundEventTriggered(event)
    }
}
