import KtTunnel
import Logging
import NIOCore
import NIOSSH

/// A `session` channel before it knows what it is for. kt-shadow runs no shell and no programs: the only commands are
/// its own — `kt-dial <host> <port>` (a TCP flow with a status line, ``DialStatus``), `kt-control` (banner and
/// keep-alive) and `kt-udp` (the datagram channel, ``DatagramFrame``). A shell, another command or a subsystem is
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
            replace(with: ControlResponder(), context: context)
        } else if command == "kt-udp" {
            accept()
            replace(with: DatagramRelay(connection: connection), context: context)
        } else if let (host, port) = DialStatus.parseCommand(command) {
            accept()
            dial(host: host, port: port, context: context)
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

    /// Dials, writes the status line, and on success joins the channel to the socket.
    private func dial(host: String, port: Int, context: ChannelHandlerContext) {
        let channel = context.channel
        connection.dial(host: host, port: port).whenComplete { result in
            switch result {
            case .success(let socket):
                guard channel.isActive else {
                    socket.close(promise: nil)
                    return
                }
                channel.writeAndFlush(ByteBuffer(string: DialStatus.connected.line), promise: nil)
                channel.pipeline.removeHandler(self).flatMap {
                    GlueHandler.join(channel, socket)
                }.whenFailure { _ in
                    socket.close(promise: nil)
                    channel.close(promise: nil)
                }
            case .failure(let error):
                let status = DialStatus.failed(Dialer.failure(for: error))
                channel.writeAndFlush(ByteBuffer(string: status.line)).whenComplete { _ in
                    channel.close(promise: nil)
                }
            }
        }
    }
}

/// The control channel: answers `ping` with `pong`.
final class ControlResponder: ChannelInboundHandler, Sendable {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let bytes = unwrapInboundIn(data)
        // Pings are whole lines of four letters; counting them is enough, and keeps no state between reads.
        let pings = bytes.readableBytesView.split(separator: UInt8(ascii: "\n")).filter {
            $0.elementsEqual("ping".utf8)
        }.count
        guard pings > 0 else { return }
        context.writeAndFlush(
            wrapOutboundOut(ByteBuffer(string: String(repeating: "pong\n", count: min(pings, 16)))), promise: nil)
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let event = event as? ChannelEvent, event == .inputClosed { context.close(promise: nil) }
        context.fireUserInboundEventTriggered(event)
    }
}
