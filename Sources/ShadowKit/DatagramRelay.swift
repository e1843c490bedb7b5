import Glibc
import KtTunnel
import KtWire
import Logging
import NIOCore
import NIOPosix

/// The shadow's end of a datagram channel (`exec kt-udp`): one UDP socket per client flow, ICMP echo through an
/// unprivileged ping socket where the pod allows one, and DNS queries for "the pod's nameserver" resolved with its
/// resolv.conf (search list included).
///
/// Datagrams are datagrams: when the client reads slower than answers arrive, answers are dropped rather than
/// queued (the SSH channel is not writable), and a flow over the limit is told it is closed.
final class DatagramRelay: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private let connection: ShadowConnection
    private var context: ChannelHandlerContext?
    private var buffer = ByteBuffer()
    private var flows: [UInt32: Flow] = [:]
    private var sweeper: RepeatedTask?
    private var dropped = 0
    private var echoUnavailableLogged = false

    private final class Flow {
        let kind: DatagramFrame.Kind
        let socket: EventLoopFuture<Channel>
        var lastUsed = NIODeadline.now()
        /// The client's echo identifier; the kernel picks the one on the wire.
        var echoIdentifier: UInt16 = 0

        init(kind: DatagramFrame.Kind, socket: EventLoopFuture<Channel>) {
            self.kind = kind
            self.socket = socket
        }
    }

    init(connection: ShadowConnection) {
        self.connection = connection
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        let interval = TimeAmount.nanoseconds(max(connection.configuration.udpIdleTimeout.nanoseconds / 4, 1_000_000))
        sweeper = context.eventLoop.scheduleRepeatedTask(initialDelay: interval, delay: interval) { [weak self] _ in
            self?.sweep()
        }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        closeAll()
        self.context = nil
    }

    func channelInactive(context: ChannelHandlerContext) {
        closeAll()
        context.fireChannelInactive()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let event = event as? ChannelEvent, event == .inputClosed { context.close(promise: nil) }
        context.fireUserInboundEventTriggered(event)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var bytes = unwrapInboundIn(data)
        buffer.writeBuffer(&bytes)
        do {
            while let frame = try DatagramFrame.decode(from: &buffer) { handle(frame) }
        } catch {
            connection.logger.warning("malformed datagram frame (\(error)); closing the datagram channel")
            context.close(promise: nil)
            return
        }
        buffer.discardReadBytes()
    }

    // MARK: - Frames from the client

    private func handle(_ frame: DatagramFrame) {
        switch (frame.kind, frame.address) {
        case (.closed, _):
            close(flow: frame.flow)
        case (.udp, .nameserver):
            resolve(frame)
        case (.udp, .v4(let address)):
            send(frame, to: SocketAddress(.v4(address), port: Int(frame.port)))
        case (.udp, .v6(let address)):
            send(frame, to: SocketAddress(.v6(address), port: Int(frame.port)))
        case (.echo, .v4(let address)):
            echo(frame, to: .v4(address))
        case (.echo, .v6(let address)):
            echo(frame, to: .v6(address))
        case (.echo, .nameserver):
            reply(DatagramFrame(kind: .closed, flow: frame.flow, address: .nameserver, port: 0, payload: ByteBuffer()))
        }
    }

    private func send(_ frame: DatagramFrame, to destination: SocketAddress) {
        guard let flow = flow(frame.flow, kind: .udp, family: destination.protocol) else { return }
        flow.lastUsed = .now()
        let envelope = AddressedEnvelope(remoteAddress: destination, data: frame.payload)
        flow.socket.whenSuccess { $0.writeAndFlush(envelope, promise: nil) }
    }

    private func echo(_ frame: DatagramFrame, to destination: IPAddress) {
        var payload = frame.payload
        guard let identifier = payload.readInteger(as: UInt16.self), let sequence = payload.readInteger(as: UInt16.self)
        else { return }
        let family: NIOBSDSocket.ProtocolFamily = if case .v4 = destination { .inet } else { .inet6 }
        guard let flow = flow(frame.flow, kind: .echo, family: family) else { return }
        flow.lastUsed = .now()
        flow.echoIdentifier = identifier
        var message = ByteBuffer()
        switch destination {
        case .v4:
            ICMPv4Message.echoRequest(ICMPEcho(identifier: 0, sequenceNumber: sequence, data: payload)).emit(
                into: &message)
        case .v6:
            // Type 128; the kernel fills in the checksum (it covers the pseudo-header) and the identifier.
            message.writeInteger(UInt8(128))
            message.writeInteger(UInt8(0))
            message.writeInteger(UInt16(0))
            message.writeInteger(UInt16(0))
            message.writeInteger(sequence)
            message.writeImmutableBuffer(payload)
        }
        let envelope = AddressedEnvelope(remoteAddress: SocketAddress(destination, port: 0), data: message)
        flow.socket.whenSuccess { $0.writeAndFlush(envelope, promise: nil) }
    }

    private func resolve(_ frame: DatagramFrame) {
        guard let query = try? DNSMessage(parsing: frame.payload), !query.header.isResponse else { return }
        connection.nameservers.search(query).recover { error in
            self.connection.logger.debug("DNS \(query.questions.first?.description ?? "?") failed: \(error)")
            return query.makeResponse(responseCode: .serverFailure)
        }.whenSuccess { answer in
            self.reply(
                DatagramFrame(kind: .udp, flow: frame.flow, address: .nameserver, port: 53, payload: answer.encoded()))
        }
    }

    // MARK: - Flows

    /// The flow's socket, made on first use; nil (and the client told) when over the limit or when the pod allows
    /// no ping sockets.
    private func flow(_ id: UInt32, kind: DatagramFrame.Kind, family: NIOBSDSocket.ProtocolFamily) -> Flow? {
        if let flow = flows[id], flow.kind == kind { return flow }
        close(flow: id)
        guard flows.count < connection.configuration.maximumUDPFlows, let context else {
            connection.logger.warning("datagram flow limit (\(connection.configuration.maximumUDPFlows)) reached")
            reply(DatagramFrame(kind: .closed, flow: id, address: .nameserver, port: 0, payload: ByteBuffer()))
            return nil
        }
        let bootstrap = DatagramBootstrap(group: context.eventLoop)
            .channelOption(.recvAllocator, value: FixedSizeRecvByteBufferAllocator(capacity: 65536))
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(FlowReader(relay: self, flow: id, kind: kind))
                }
            }
        let socket: EventLoopFuture<Channel>
        switch kind {
        case .echo:
            guard let descriptor = Self.pingSocket(family: family) else {
                if !echoUnavailableLogged {
                    echoUnavailableLogged = true
                    connection.logger.info(
                        "ICMP echo unavailable: the pod allows no ping sockets (net.ipv4.ping_group_range), errno \(errno)"
                    )
                }
                reply(DatagramFrame(kind: .closed, flow: id, address: .nameserver, port: 0, payload: ByteBuffer()))
                return nil
            }
            socket = bootstrap.withBoundSocket(descriptor)
        default:
            socket = bootstrap.bind(host: family == .inet6 ? "::" : "0.0.0.0", port: 0)
        }
        socket.whenFailure { error in
            self.connection.logger.warning("cannot open a datagram socket: \(error)")
            self.close(flow: id)
        }
        let flow = Flow(kind: kind, socket: socket)
        flows[id] = flow
        return flow
    }

    /// An unprivileged ICMP socket (`SOCK_DGRAM`, `IPPROTO_ICMP`), bound so the kernel picks its identifier.
    private static func pingSocket(family: NIOBSDSocket.ProtocolFamily) -> NIOBSDSocket.Handle? {
        let isV4 = family == .inet
        let descriptor = socket(
            isV4 ? AF_INET : AF_INET6,
            Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue),
            isV4 ? Int32(IPPROTO_ICMP) : Int32(IPPROTO_ICMPV6))
        guard descriptor >= 0 else { return nil }
        let address =
            isV4 ? SocketAddress(.v4(IPv4Address(bits: 0)), port: 0) : SocketAddress(.v6(IPv6Address(bits: 0)), port: 0)
        let bound = address.withSockAddr { pointer, length in bind(descriptor, pointer, socklen_t(length)) }
        guard bound == 0 else {
            Glibc.close(descriptor)
            return nil
        }
        return descriptor
    }

    private func close(flow id: UInt32) {
        guard let flow = flows.removeValue(forKey: id) else { return }
        flow.socket.whenSuccess { $0.close(promise: nil) }
    }

    private func closeAll() {
        sweeper?.cancel()
        sweeper = nil
        for id in Array(flows.keys) { close(flow: id) }
    }

    private func sweep() {
        let limit = NIODeadline.now() - connection.configuration.udpIdleTimeout
        for (id, flow) in flows where flow.lastUsed < limit {
            close(flow: id)
            reply(DatagramFrame(kind: .closed, flow: id, address: .nameserver, port: 0, payload: ByteBuffer()))
        }
    }

    // MARK: - Toward the client

    fileprivate func received(_ envelope: AddressedEnvelope<ByteBuffer>, flow id: UInt32, kind: DatagramFrame.Kind) {
        guard let flow = flows[id], let source = envelope.remoteAddress.ipAddressValue else { return }
        flow.lastUsed = .now()
        let address: DatagramFrame.Address
        switch source {
        case .v4(let v4): address = .v4(v4)
        case .v6(let v6): address = .v6(v6)
        }
        switch kind {
        case .echo:
            var message = envelope.data
            // Echo replies only (type 0 for v4, 129 for v6); the kernel delivers nothing else to a ping socket.
            // Type, code, checksum, identifier (the kernel's), sequence number, data.
            guard let type = message.readInteger(as: UInt8.self), type == 0 || type == 129, message.readableBytes >= 7
            else { return }
            message.moveReaderIndex(forwardBy: 5)
            let sequence = message.readInteger(as: UInt16.self) ?? 0
            var payload = ByteBuffer()
            payload.writeInteger(flow.echoIdentifier)
            payload.writeInteger(sequence)
            payload.writeImmutableBuffer(message)
            reply(DatagramFrame(kind: .echo, flow: id, address: address, port: 0, payload: payload))
        default:
            reply(
                DatagramFrame(
                    kind: .udp, flow: id, address: address, port: UInt16(envelope.remoteAddress.port ?? 0),
                    payload: envelope.data))
        }
    }

    private func reply(_ frame: DatagramFrame) {
        guard let context, context.channel.isActive else { return }
        guard context.channel.isWritable else {
            dropped += 1
            if dropped.nonzeroBitCount == 1 { connection.logger.debug("datagram channel full: \(dropped) dropped") }
            return
        }
        var out = context.channel.allocator.buffer(capacity: 2 + frame.encodedLength)
        guard frame.encode(into: &out) else { return }
        context.writeAndFlush(wrapOutboundOut(out), promise: nil)
    }
}

/// Reads one flow's socket.
private final class FlowReader: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = AddressedEnvelope<ByteBuffer>
    private weak var relay: DatagramRelay?
    private let flow: UInt32
    private let kind: DatagramFrame.Kind

    init(relay: DatagramRelay, flow: UInt32, kind: DatagramFrame.Kind) {
        self.relay = relay
        self.flow = flow
        self.kind = kind
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        relay?.received(unwrapInboundIn(data), flow: flow, kind: kind)
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        // ECONNREFUSED from an ICMP port unreachable: UDP has no answer to give, the flow stays.
    }
}
