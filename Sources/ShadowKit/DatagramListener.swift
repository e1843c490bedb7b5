import KtTunnel
import KtWire
import Logging
import NIOCore
import NIOPosix

/// The shadow's end of a reverse datagram channel (`exec kt-udp-listen <port>`): one UDP socket bound to the port in
/// the pod. Every datagram it receives goes to the client as a frame whose address and port are the sender's, with a
/// flow id per sender; a frame from the client goes out of the same socket to the address and port it names (so a
/// cluster client's answer comes from the port it asked). The socket closes with the channel.
///
/// Datagrams are datagrams: when the client reads slower than they arrive, they are dropped, not queued.
final class DatagramListener: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private let connection: ShadowConnection
    private let socket: Channel
    private var context: ChannelHandlerContext?
    private var buffer = ByteBuffer()
    /// Flow ids by sender, and their last use, for the idle sweep.
    private var flows: [SocketAddress: (id: UInt32, lastUsed: NIODeadline)] = [:]
    private var nextFlow: UInt32 = 1
    private var sweeper: RepeatedTask?
    private var dropped = 0

    /// The command's form.
    static let command = "kt-udp-listen"

    /// The port of `kt-udp-listen <port>`; nil for anything else.
    static func port(of command: String) -> Int? {
        let parts = command.split(separator: " ", omittingEmptySubsequences: false)
        guard parts.count == 2, parts[0] == Self.command, parts[1].count <= 5, let port = Int(parts[1]),
            (1...65535).contains(port)
        else { return nil }
        return port
    }

    /// Binds the port (every address of the pod) on `eventLoop`; the listener once bound.
    static func bind(port: Int, connection: ShadowConnection, on eventLoop: EventLoop) -> EventLoopFuture<
        DatagramListener
    > {
        let reader = SocketReader()
        return DatagramBootstrap(group: eventLoop)
            .channelOption(.socketOption(.so_reuseaddr), value: 1)
            .channelOption(.recvAllocator, value: FixedSizeRecvByteBufferAllocator(capacity: 65536))
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(reader) }
            }
            .bind(host: "0.0.0.0", port: port)
            .map { socket in
                let listener = DatagramListener(connection: connection, socket: socket)
                reader.listener = listener
                return listener
            }
    }

    private init(connection: ShadowConnection, socket: Channel) {
        self.connection = connection
        self.socket = socket
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        let interval = TimeAmount.nanoseconds(max(connection.configuration.udpIdleTimeout.nanoseconds / 4, 1_000_000))
        sweeper = context.eventLoop.scheduleRepeatedTask(initialDelay: interval, delay: interval) { [weak self] _ in
            self?.sweep()
        }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        shut()
        self.context = nil
    }

    func channelInactive(context: ChannelHandlerContext) {
        shut()
        context.fireChannelInactive()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let event = event as? ChannelEvent, event == .inputClosed { context.close(promise: nil) }
        context.fireUserInboundEventTriggered(event)
    }

    private func shut() {
        sweeper?.cancel()
        sweeper = nil
        socket.close(promise: nil)
    }

    /// Answers from the client: out of the bound socket to the sender the frame names.
    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var bytes = unwrapInboundIn(data)
        buffer.writeBuffer(&bytes)
        do {
            while let frame = try DatagramFrame.decode(from: &buffer) {
                let destination: SocketAddress
                switch (frame.kind, frame.address) {
                case (.udp, .v4(let address)): destination = SocketAddress(.v4(address), port: Int(frame.port))
                case (.udp, .v6(let address)): destination = SocketAddress(.v6(address), port: Int(frame.port))
                default: continue
                }
                flows[destination]?.lastUsed = .now()
                socket.writeAndFlush(AddressedEnvelope(remoteAddress: destination, data: frame.payload), promise: nil)
            }
        } catch {
            connection.logger.warning("malformed datagram frame (\(error)); closing the reverse datagram channel")
            context.close(promise: nil)
            return
        }
        buffer.discardReadBytes()
    }

    /// A datagram from a cluster client: to the client as a frame.
    fileprivate func received(_ envelope: AddressedEnvelope<ByteBuffer>) {
        guard let context, context.channel.isActive, let source = envelope.remoteAddress.ipAddressValue else { return }
        let id: UInt32
        if let known = flows[envelope.remoteAddress] {
            id = known.id
        } else {
            guard flows.count < connection.configuration.maximumUDPFlows else {
                dropped += 1
                return
            }
            id = nextFlow
            nextFlow &+= 1
        }
        flows[envelope.remoteAddress] = (id, .now())
        let address: DatagramFrame.Address
        switch source {
        case .v4(let v4): address = .v4(v4)
        case .v6(let v6): address = .v6(v6)
        }
        let frame = DatagramFrame(
            kind: .udp, flow: id, address: address, port: UInt16(envelope.remoteAddress.port ?? 0),
            payload: envelope.data)
        guard context.channel.isWritable else {
            dropped += 1
            if dropped.nonzeroBitCount == 1 {
                connection.logger.debug("reverse datagram channel full: \(dropped) dropped")
            }
            return
        }
        var out = context.channel.allocator.buffer(capacity: 2 + frame.encodedLength)
        guard frame.encode(into: &out) else { return }
        context.writeAndFlush(wrapOutboundOut(out), promise: nil)
    }

    /// Senders idle for the configured time are forgotten, and the client told (it closes its socket for them).
    private func sweep() {
        let limit = NIODeadline.now() - connection.configuration.udpIdleTimeout
        for (sender, flow) in flows where flow.lastUsed < limit {
            flows[sender] = nil
            guard let context, context.channel.isActive else { continue }
            var out = context.channel.allocator.buffer(capacity: 16)
            DatagramFrame(kind: .closed, flow: flow.id, address: .nameserver, port: 0, payload: ByteBuffer())
                .encode(into: &out)
            context.writeAndFlush(wrapOutboundOut(out), promise: nil)
        }
    }
}

/// Reads the bound socket.
private final class SocketReader: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = AddressedEnvelope<ByteBuffer>
    weak var listener: DatagramListener?

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        listener?.received(unwrapInboundIn(data))
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        // ECONNREFUSED from an ICMP port unreachable: the socket stays.
    }
}

/// kt-shadow's exec commands, as it reads them (for the fuzzer).
public enum ShadowCommands {
    /// The port of `kt-udp-listen <port>`; nil for anything else.
    public static func udpListenPort(_ command: String) -> Int? { DatagramListener.port(of: command) }
}
