import Foundation
import Glibc
import KtStack
import KtTun
import KtTunnel
import KtWire
import Logging
import NIOConcurrencyHelpers
import NIOCore

/// What the engine has done so far, for `ktctl status` and the tests.
public struct EngineCounters: Sendable, Hashable {
    public var flowsOpened = 0
    public var flowsRefused = 0
    public var bytesToCluster = 0
    public var bytesFromCluster = 0
    public var datagramsToCluster = 0
    public var datagramsFromCluster = 0
    public var echoes = 0
    /// Flows open now (dialed or being dialed).
    public var openFlows = 0
    /// Packets the device dropped (a full queue, unreadable offload metadata).
    public var deviceDrops = PacketDeviceDrops()
    /// Tunnels put in place after the first: the session reconnected this often.
    public var reconnects = 0
    public var stack = StackCounters()
    public init() {}
}

/// The tun-mode engine: the TUN device, the userspace stack and the tunnel joined on one thread.
///
/// The thread owns the stack (a value with no locks of its own) and waits in `poll` on the TUN and on a pipe that
/// the NIO side signals. Packets from the TUN go into the stack; a SYN becomes a dial through the tunnel, answered
/// only once the cluster side connected (`acceptDial`) or said why not (`refuseDial`: RST, ICMP or silence). The
/// bytes of each flow then move between the stack and the flow's SSH channel with backpressure both ways: the
/// engine writes at most `inFlightLimit` bytes to a channel before the writes complete, and the channel reads at
/// most `creditLimit` bytes ahead of what the stack has taken. UDP datagrams and ICMP echoes go over the tunnel's
/// datagram channel (`kt-udp`).
public final class TunEngine: @unchecked Sendable {
    let device: any PacketDevice
    let link: TunnelLink
    let group: any EventLoopGroup
    let logger: Logger
    /// A pipe: the NIO side writes a byte to wake the engine's poll.
    private let wakeup: CInt
    private let wakeupWriter: CInt
    private let inbox = NIOLockedValueBox<[EngineCommand]>([])
    private let shared = NIOLockedValueBox(EngineCounters())
    private let finished = DispatchSemaphore(value: 0)
    private var thread: Thread?
    /// Everything below belongs to the engine thread.
    private var stack: NetworkStack
    private var bridges: [FlowID: Bridge] = [:]
    private var datagrams: TunnelDatagramChannel?
    /// Opens the datagram channel for each tunnel, and again when it closes.
    private var datagramPath: DatagramPath?
    private var udpFlows: [FlowKey: UInt32] = [:]
    private var udpKeys: [UInt32: FlowKey] = [:]
    private var echoes: [UInt32: EchoRequest] = [:]
    private var echoIDs: [EchoKey: UInt32] = [:]
    private var nextDatagramFlow: UInt32 = 1
    private var counters = EngineCounters()
    private var running = true
    /// When packets last moved, and whether freed memory was given back since: after `idleTrim` of quiet the heap
    /// is trimmed once (the buffers of a burst are not needed by an idle session).
    private var lastActivity: ContinuousClock.Instant
    private var trimmedSinceActivity = true
    static let idleTrim = Duration.seconds(2)
    private let clock = ContinuousClock()
    private let start: ContinuousClock.Instant

    static let inFlightLimit = 1 << 20
    static let creditLimit = 1 << 20
    static let readChunk = 256 * 1024

    struct Bridge {
        var key: FlowKey
        /// When the SYN asked for the dial.
        var dialed: ContinuousClock.Instant
        var channel: Channel?
        var handler: FlowBridgeHandler?
        /// From the cluster, not yet taken by the stack.
        var pending: [ByteBuffer] = []
        var inFlight = 0
        var stackReadable = false
        var laptopClosed = false
        var outputClosed = false
        var remoteEOF = false
        /// The flow's channel is gone after the far side finished: bytes the laptop still sends have no reader.
        var remoteGone = false
        var stackShutdown = false
    }

    struct EchoKey: Hashable {
        var source: IPAddress
        var destination: IPAddress
        var identifier: UInt16
    }

    /// Starts the engine thread on `device` (already up, with addresses and routes), dialing through `link`;
    /// `group` is where dials wait for a tunnel. Offloads are used only when the device takes them.
    public init(
        device: any PacketDevice, link: TunnelLink, group: any EventLoopGroup, configuration: StackConfiguration,
        logger: Logger
    ) throws {
        self.device = device
        self.link = link
        self.group = group
        self.logger = logger
        var configuration = configuration
        if !device.takesOffloads {
            configuration.checksumOffload = false
            configuration.segmentationOffload = false
        }
        stack = NetworkStack(configuration: configuration, random: SystemRandomNumberGenerator())
        var ends: [CInt] = [-1, -1]
        guard pipe(&ends) == 0 else { throw EngineError.system("pipe", errno) }
        for end in ends {
            _ = fcntl(end, F_SETFL, fcntl(end, F_GETFL) | O_NONBLOCK)
            _ = fcntl(end, F_SETFD, FD_CLOEXEC)
        }
        wakeup = ends[0]
        wakeupWriter = ends[1]
        start = clock.now
        lastActivity = start
        // UDP and ICMP echo ride one datagram channel, kept open (and reopened) by the path.
        datagramPath = DatagramPath(
            link: link, logger: logger, onFrame: { [weak self] frame in self?.post(.frame(frame)) },
            onChannel: { [weak self] channel in self?.post(.datagramChannel(channel)) })
        let thread = Thread { [self] in
            run()
            finished.signal()
        }
        thread.name = "kt-engine"
        thread.start()
        self.thread = thread
    }

    /// Stops the thread and closes every flow. The device stays open (its owner closes it).
    public func stop() {
        post(.stop)
        finished.wait()
        close(wakeup)
        close(wakeupWriter)
    }

    public var statistics: EngineCounters { shared.withLockedValue { $0 } }

    // MARK: - Inbox

    func post(_ command: EngineCommand) {
        // Only the first command into an empty inbox wakes the loop: it takes the whole inbox at once, so later ones
        // ride along (one write(2) per batch, not per command).
        let wasEmpty = inbox.withLockedValue { inbox -> Bool in
            defer { inbox.append(command) }
            return inbox.isEmpty
        }
        guard wasEmpty else { return }
        var one: UInt8 = 1
        _ = write(wakeupWriter, &one, 1)  // a full pipe already wakes the loop
    }

    // MARK: - The loop

    var now: StackInstant {
        let elapsed = start.duration(to: clock.now)
        return StackInstant(
            nanoseconds: 1_000_000_000 + UInt64(elapsed.components.seconds) * 1_000_000_000
                + UInt64(elapsed.components.attoseconds / 1_000_000_000))
    }

    func run() {
        var packets: [DevicePacket] = []
        packets.reserveCapacity(TunDevice.defaultBatch)
        var descriptors = [
            pollfd(fd: device.readinessDescriptor, events: Int16(POLLIN), revents: 0),
            pollfd(fd: wakeup, events: Int16(POLLIN), revents: 0),
        ]
        while running {
            var timeout: Int32 = 1000
            if let deadline = stack.nextDeadline {
                let current = now
                timeout =
                    deadline <= current
                    ? 0 : Int32(min(1000, (deadline.since(current).nanoseconds + 999_999) / 1_000_000))
            }
            descriptors[0].revents = 0
            descriptors[1].revents = 0
            _ = poll(&descriptors, 2, timeout)
            if descriptors[1].revents != 0 {
                var drain = [UInt8](repeating: 0, count: 256)
                while read(wakeup, &drain, 256) > 0 {}
            }
            if descriptors[0].revents != 0 || descriptors[1].revents != 0 {
                lastActivity = clock.now
                trimmedSinceActivity = false
            } else if !trimmedSinceActivity, lastActivity.duration(to: clock.now) > Self.idleTrim {
                trimmedSinceActivity = true
                stack.releaseSpareBuffers()
                AllocatorTuning.trim()
                if logger.logLevel <= .debug {
                    let pending = bridges.values.reduce(0) { $0 + $1.pending.reduce(0) { $0 + $1.readableBytes } }
                    logger.debug(
                        "engine idle: \(bridges.count) flows bridged (\(pending) bytes pending), \(stack.flowCount) in the stack, \(udpFlows.count) UDP flows"
                    )
                }
            }
            handleInbox()
            if descriptors[0].revents & Int16(POLLIN) != 0 {
                // A few batches per wake-up, so that a burst does not wait for the next poll.
                for _ in 0..<4 {
                    packets.removeAll(keepingCapacity: true)
                    guard (try? device.readPackets(into: &packets, maximum: TunDevice.defaultBatch)) ?? 0 > 0 else {
                        break
                    }
                    stack.receive(packets, now: now)
                    handleEvents()
                }
                packets.removeAll(keepingCapacity: true)
            }
            stack.advance(to: now)
            handleEvents()
            flushOutput()
            var snapshot = counters
            snapshot.stack = stack.counters
            snapshot.openFlows = bridges.count
            snapshot.deviceDrops = device.drops
            snapshot.reconnects = link.reconnects
            shared.withLockedValue { $0 = snapshot }
        }
        for bridge in bridges.values { bridge.channel?.close(promise: nil) }
        bridges = [:]
        datagramPath?.close()
        datagrams?.close()
    }

    func flushOutput() {
        for _ in 0..<8 {
            let output = stack.takeOutput()
            if output.isEmpty { return }
            try? device.writePackets(output)
            stack.recycle(output)
            handleEvents()
        }
    }

    // MARK: - Commands from the NIO side

    func handleInbox() {
        let commands = inbox.withLockedValue { inbox -> [EngineCommand] in
            defer { inbox.removeAll(keepingCapacity: true) }
            return inbox
        }
        for command in commands {
            switch command {
            case .stop:
                running = false
            case .dialed(let flow, let channel, let handler):
                guard bridges[flow] != nil else {
                    channel.close(promise: nil)
                    continue
                }
                bridges[flow]?.channel = channel
                bridges[flow]?.handler = handler
                counters.flowsOpened += 1
                stack.acceptDial(flow, now: now)
                if logger.logLevel <= .debug, let bridge = bridges[flow] {
                    let took = bridge.dialed.duration(to: clock.now)
                    logger.debug(
                        "flow \(bridge.key.local): SYN to SYN/ACK in \(took.formatted(.units(allowed: [.microseconds])))"
                    )
                }
                pumpToChannel(flow)
            case .dialFailed(let flow, let failure):
                guard bridges.removeValue(forKey: flow) != nil else { continue }
                counters.flowsRefused += 1
                stack.refuseDial(flow, reason: failure, now: now)
            case .data(let flow, let chunks):
                guard bridges[flow] != nil else { continue }
                for bytes in chunks { counters.bytesFromCluster += bytes.readableBytes }
                bridges[flow]?.pending += chunks
                pumpToStack(flow)
            case .remoteEOF(let flow):
                bridges[flow]?.remoteEOF = true
                pumpToStack(flow)
            case .remoteClosed(let flow):
                guard let bridge = bridges[flow] else { continue }
                bridges[flow]?.channel = nil
                bridges[flow]?.handler = nil
                if bridge.remoteEOF || bridge.outputClosed {
                    // After its EOF the flow finishes in the stack: what is pending still goes to the laptop, then
                    // FIN. (When our EOF went out first, the far side closes the channel instead of sending its own
                    // EOF — a peer that saw EOF answers with CLOSE, §8.5 — which is its end of the stream too.) What
                    // the laptop sends from now on has no reader: it is answered with a reset, as the far side's
                    // kernel would answer data for a closed socket, or the flow would hold it forever.
                    bridges[flow]?.remoteEOF = true
                    bridges[flow]?.remoteGone = true
                    pumpToStack(flow)
                    pumpToChannel(flow)
                } else {
                    // The cluster side went away without finishing (reset, or the tunnel was lost): the laptop's
                    // program gets a reset.
                    stack.abort(flow, now: now)
                    bridges[flow] = nil
                }
            case .written(let flow, let count):
                guard bridges[flow] != nil else { continue }
                bridges[flow]?.inFlight -= count
                pumpToChannel(flow)
            case .datagramChannel(let channel):
                if datagrams !== channel { datagrams?.close() }
                datagrams = channel
                udpFlows = [:]
                udpKeys = [:]
                echoes = [:]
                echoIDs = [:]
            case .frame(let frame):
                received(frame)
            }
        }
        handleEvents()
    }

    // MARK: - Stack events

    func handleEvents() {
        for event in stack.takeEvents() {
            switch event {
            case .dial(let flow, let key):
                dial(flow, key)
            case .connected:
                break
            case .readable(let flow):
                bridges[flow]?.stackReadable = true
                pumpToChannel(flow)
            case .writable(let flow):
                pumpToStack(flow)
            case .peerClosed(let flow):
                bridges[flow]?.laptopClosed = true
                bridges[flow]?.stackReadable = true
                pumpToChannel(flow)
            case .closed(let flow, let reason):
                guard var bridge = bridges.removeValue(forKey: flow) else { continue }
                if reason == .normal, let channel = bridge.channel {
                    // Send what is still readable, then the channel closes behind it.
                    while let bytes = stack.read(flow, maximum: Self.readChunk, now: now) {
                        counters.bytesToCluster += bytes.readableBytes
                        channel.write(bytes, promise: nil)
                    }
                    channel.flush()
                }
                bridge.channel?.close(promise: nil)
                bridge.channel = nil
            case .udpDatagram(let key, let payload):
                sendDatagram(key, payload)
            case .udpFlowExpired(let key):
                if let id = udpFlows.removeValue(forKey: key) {
                    udpKeys[id] = nil
                    datagrams?.send(
                        DatagramFrame(
                            kind: .closed, flow: id, address: Self.frameAddress(key.local.address), port: 0,
                            payload: ByteBuffer()))
                }
            case .echoRequest(let request):
                sendEcho(request)
            }
        }
    }

    func dial(_ flow: FlowID, _ key: FlowKey) {
        bridges[flow] = Bridge(key: key, dialed: clock.now)
        let host: String
        switch key.local.address {
        case .v4(let address): host = "\(address)"
        case .v6(let address): host = "\(address)"
        }
        let port = Int(key.local.port.rawValue)
        let post: @Sendable (EngineCommand) -> Void = { [weak self] in self?.post($0) }
        link.openTCP(host: host, port: port, on: group.next()).whenComplete { result in
            switch result {
            case .success(let tunnelFlow):
                let channel = tunnelFlow.channel
                channel.eventLoop.execute {
                    let handler = FlowBridgeHandler(flow: flow, credit: Self.creditLimit, post: post)
                    // Posted before the handler reads, so the engine knows the channel before its first bytes.
                    post(.dialed(flow, channel, handler))
                    do {
                        try channel.pipeline.syncOperations.addHandler(handler)
                    } catch {
                        channel.close(promise: nil)
                    }
                }
            case .failure(let error):
                post(.dialFailed(flow, Self.stackFailure(error)))
            }
        }
    }

    static func stackFailure(_ error: any Error) -> KtStack.DialFailure {
        switch error as? TunnelError {
        case .dial(.refused): return .refused
        case .dial(.unreachable): return .unreachable
        case .dial(.nameNotFound): return .nameNotFound
        case .dial(.timedOut), .connectionLost, .connectionFailed: return .timedOut
        default: return .unreachable
        }
    }

    /// Bytes from the cluster into the stack's send buffer, as far as it takes them; then more may be read.
    func pumpToStack(_ flow: FlowID) {
        guard var bridge = bridges[flow] else { return }
        var taken = 0
        while var first = bridge.pending.first {
            let count = stack.write(flow, first, now: now)
            taken += count
            if count < first.readableBytes {
                first.moveReaderIndex(forwardBy: count)
                bridge.pending[0] = first
                break
            }
            bridge.pending.removeFirst()
        }
        if bridge.pending.isEmpty && bridge.remoteEOF && !bridge.stackShutdown {
            bridge.stackShutdown = true
            stack.shutdownWrite(flow, now: now)
        }
        bridges[flow] = bridge
        if taken > 0, let handler = bridge.handler, let channel = bridge.channel {
            channel.eventLoop.execute { handler.grant(taken) }
        }
    }

    /// Bytes from the laptop (the stack's receive buffer) to the flow's channel, up to `inFlightLimit` unwritten.
    func pumpToChannel(_ flow: FlowID) {
        guard var bridge = bridges[flow] else { return }
        guard let channel = bridge.channel else {
            if bridge.remoteGone, bridge.stackReadable, stack.read(flow, maximum: Self.readChunk, now: now) != nil {
                stack.abort(flow, now: now)
                bridges[flow] = nil
            }
            return
        }
        var batch: [ByteBuffer] = []
        var total = 0
        while bridge.stackReadable && bridge.inFlight < Self.inFlightLimit {
            guard let bytes = stack.read(flow, maximum: Self.readChunk, now: now) else {
                bridge.stackReadable = false
                break
            }
            let count = bytes.readableBytes
            bridge.inFlight += count
            total += count
            batch.append(bytes)
        }
        if !batch.isEmpty {
            // One hop to the channel's loop for the whole batch and one completion back (writes complete in order):
            // a write from this thread would be a task of its own, and each completion a command.
            counters.bytesToCluster += total
            let post: @Sendable (EngineCommand) -> Void = { [weak self] in self?.post($0) }
            let frozen = batch
            channel.eventLoop.execute {
                for bytes in frozen.dropLast() { channel.write(bytes, promise: nil) }
                channel.writeAndFlush(frozen[frozen.count - 1]).whenComplete { _ in post(.written(flow, total)) }
            }
        }
        if bridge.laptopClosed && !bridge.stackReadable && !bridge.outputClosed {
            bridge.outputClosed = true
            channel.close(mode: .output, promise: nil)
        }
        bridges[flow] = bridge
    }

    // MARK: - Datagrams

    static func frameAddress(_ address: IPAddress) -> DatagramFrame.Address {
        switch address {
        case .v4(let v4): return .v4(v4)
        case .v6(let v6): return .v6(v6)
        }
    }

    func newDatagramFlow() -> UInt32 {
        defer { nextDatagramFlow = nextDatagramFlow == .max ? 1 : nextDatagramFlow + 1 }
        return nextDatagramFlow
    }

    func sendDatagram(_ key: FlowKey, _ payload: ByteBuffer) {
        guard let datagrams else { return }
        let id: UInt32
        if let known = udpFlows[key] {
            id = known
        } else {
            id = newDatagramFlow()
            udpFlows[key] = id
            udpKeys[id] = key
        }
        counters.datagramsToCluster += 1
        datagrams.send(
            DatagramFrame(
                kind: .udp, flow: id, address: Self.frameAddress(key.local.address), port: key.local.port.rawValue,
                payload: payload))
    }

    func sendEcho(_ request: EchoRequest) {
        guard let datagrams else { return }
        let echoKey = EchoKey(source: request.source, destination: request.destination, identifier: request.identifier)
        let id = echoIDs[echoKey] ?? newDatagramFlow()
        echoIDs[echoKey] = id
        echoes[id] = request
        var payload = ByteBuffer()
        payload.writeInteger(request.identifier)
        payload.writeInteger(request.sequenceNumber)
        var data = request.data
        payload.writeBuffer(&data)
        datagrams.send(
            DatagramFrame(
                kind: .echo, flow: id, address: Self.frameAddress(request.destination), port: 0, payload: payload))
    }

    func received(_ frame: DatagramFrame) {
        switch frame.kind {
        case .udp:
            guard let key = udpKeys[frame.flow] else { return }
            counters.datagramsFromCluster += 1
            stack.sendUDP(frame.payload, on: key, now: now)
        case .echo:
            guard var request = echoes[frame.flow] else { return }
            var payload = frame.payload
            guard payload.readInteger(as: UInt16.self) != nil, let sequence = payload.readInteger(as: UInt16.self)
            else { return }
            request.sequenceNumber = sequence
            counters.echoes += 1
            stack.sendEchoReply(to: request, data: payload)
        case .closed:
            if let key = udpKeys.removeValue(forKey: frame.flow) { udpFlows[key] = nil }
            if let request = echoes.removeValue(forKey: frame.flow) {
                echoIDs[
                    EchoKey(source: request.source, destination: request.destination, identifier: request.identifier)] =
                    nil
            }
        }
    }
}

public enum EngineError: Error, CustomStringConvertible {
    case system(String, Int32)

    public var description: String {
        switch self {
        case .system(let call, let code): return "\(call) failed: \(String(cString: strerror(code)))"
        }
    }
}
