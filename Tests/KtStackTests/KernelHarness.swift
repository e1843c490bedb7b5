import Foundation
import Glibc
import KtStack
import KtTun
import KtWire
import NIOConcurrencyHelpers
import NIOCore
import NamespaceTestSupport

/// KtStack on a real TUN in a throwaway namespace, with the Linux kernel as its peer.
///
/// A background thread runs the loop an engine would: read a batch from the TUN, feed the stack, fire timers,
/// act on events, write the stack's output back. Instead of a tunnel, flows end in small in-process services
/// chosen by destination port:
/// - 80: HTTP; `GET /<n>` answers n bytes of the pattern `i % 251`, then closes;
/// - 9: discard; checks every byte against the pattern and counts them;
/// - 7: echo;
/// - 1: the dial is refused (the client must see ECONNREFUSED);
/// - 5: the dial is left pending forever (for holding idle SYNs);
/// - any other: accepted and kept open, idle;
/// - UDP 53: DNS, every A question answered with 10.96.0.53.
/// Optionally the harness loses, duplicates and reorders packets in both directions.
final class KernelHarness: @unchecked Sendable {
    static let tunAddress = IPv4Address(10, 210, 0, 1)
    static let tunAddress6 = IPv6Address(bits: 0xFD00_0210 << 96 | 1)
    static let clusterPrefix = "10.96.0.0/12"
    static let clusterPrefix6 = "fd00:96::/108"

    struct Impairment {
        var loss = 0.0
        var duplication = 0.0
        var reordering = 0.0
    }

    struct DiscardResult {
        var bytes = 0
        var correct = true
    }

    let namespace: TestNamespace
    let device: TunDevice
    let netlink: Netlink
    private let state: NIOLockedValueBox<SharedState>
    private var thread: Thread?
    private let finished = DispatchSemaphore(value: 0)

    struct SharedState {
        var stopping = false
        var discards: [DiscardResult] = []
        var counters = StackCounters()
        var flows = 0
        var dnsQueries = 0
        var udpExpired = 0
        var connectedInfos: [FlowInfo] = []
    }

    init(
        prefix: String, virtioHeader: Bool = true, impairment: Impairment = Impairment(),
        configure: (inout StackConfiguration) -> Void = { _ in }
    ) throws {
        namespace = try TestNamespace(prefix: prefix)
        do {
            (netlink, device) = try namespace.inside { () throws -> (Netlink, TunDevice) in
                (
                    try Netlink(),
                    try TunDevice.open(
                        TunOptions(name: "kt0", virtioHeader: virtioHeader, keepSuperPackets: virtioHeader))
                )
            }
            let link = try netlink.link(named: "kt0")
            try netlink.setUp(true, link.index)
            try netlink.addAddress(
                InterfaceAddress(interface: link.index, address: .v4(Self.tunAddress), prefixLength: 24))
            try netlink.addAddress(
                InterfaceAddress(interface: link.index, address: .v6(Self.tunAddress6), prefixLength: 64))
            try netlink.addRoute(
                Route(destination: try AnyIPPrefix.parse(Self.clusterPrefix), outputInterface: link.index, scope: .link)
            )
            try netlink.addRoute(
                Route(destination: try AnyIPPrefix.parse(Self.clusterPrefix6), outputInterface: link.index))
            // A deep transmit queue, so that a burst of thousands of SYNs waits for the reader instead of being dropped
            // (the default of 500 sheds most of a 10000-connection burst while a debug build catches up).
            try TestNamespace.check(namespace.run(["ip", "link", "set", "kt0", "txqueuelen", "20000"]))
        } catch {
            namespace.delete()
            throw error
        }
        var configuration = StackConfiguration()
        configuration.checksumOffload = virtioHeader
        configuration.segmentationOffload = virtioHeader
        configuration.verifyChecksums = !virtioHeader
        configure(&configuration)
        state = NIOLockedValueBox(SharedState())
        let loop = Loop(
            device: device, stack: NetworkStack(configuration: configuration, random: SystemRandomNumberGenerator()),
            impairment: impairment, state: state)
        let done = finished
        let thread = Thread {
            loop.run()
            done.signal()
        }
        thread.start()
        self.thread = thread
    }

    /// Stops the loop, closes the TUN and removes the namespace (and whatever still runs in it).
    func stop() {
        state.withLockedValue { $0.stopping = true }
        finished.wait()
        device.close()
        namespace.delete()
    }

    var discards: [DiscardResult] { state.withLockedValue { $0.discards } }
    var counters: StackCounters { state.withLockedValue { $0.counters } }
    var flowCount: Int { state.withLockedValue { $0.flows } }
    var dnsQueries: Int { state.withLockedValue { $0.dnsQueries } }
    var udpExpired: Int { state.withLockedValue { $0.udpExpired } }
    var connectedInfos: [FlowInfo] { state.withLockedValue { $0.connectedInfos } }

    /// Runs a shell command in the namespace.
    func shell(_ command: String, timeout: Double = 120) throws -> TestNamespace.CommandResult {
        try namespace.run(["bash", "-c", command], timeout: timeout)
    }
}

/// The pattern every service sends and checks: byte i of a stream is i % 251.
enum Pattern {
    static let period = 251
    /// 1044 periods (262 044 bytes): any chunk of up to 256 KiB starting at any phase is a slice of it.
    static let buffer: ByteBuffer = ByteBuffer(bytes: (0..<(period * 1045)).map { UInt8($0 % period) })

    static func chunk(at position: Int, length: Int) -> ByteBuffer {
        buffer.getSlice(at: position % period, length: min(length, period * 1044)) ?? ByteBuffer()
    }

    /// Whether `bytes` is the pattern from `position` on (compared a slice at a time, so it is fast in debug builds).
    static func matches(_ bytes: ByteBuffer, at position: Int) -> Bool {
        var remaining = bytes
        var at = position
        while remaining.readableBytes > 0 {
            let length = min(remaining.readableBytes, period * 1044)
            guard let piece = remaining.readSlice(length: length), piece == chunk(at: at, length: length) else {
                return false
            }
            at += length
        }
        return true
    }
}

/// The harness's event loop, on its own thread.
private final class Loop: @unchecked Sendable {
    enum Service {
        case http(request: [UInt8], remaining: Int, position: Int, responded: Bool)
        case discard(index: Int, position: Int)
        case echo(pending: ByteBuffer?)
        case idle
    }

    let device: TunDevice
    var stack: NetworkStack
    let impairment: KernelHarness.Impairment
    let state: NIOLockedValueBox<KernelHarness.SharedState>
    var services: [FlowID: Service] = [:]
    var impairer: PathImpairer
    /// With KT_TRACE set: one line per packet either way, written to /tmp/kt-harness-trace.txt when the loop ends.
    let tracing = ProcessInfo.processInfo.environment["KT_TRACE"] != nil
    var traceLines: [String] = []
    let clock = ContinuousClock()
    let start: ContinuousClock.Instant

    init(
        device: TunDevice, stack: NetworkStack, impairment: KernelHarness.Impairment,
        state: NIOLockedValueBox<KernelHarness.SharedState>
    ) {
        self.device = device
        self.stack = stack
        self.impairment = impairment
        impairer = PathImpairer(impairment: impairment)
        self.state = state
        start = clock.now
    }

    var now: StackInstant {
        let elapsed = start.duration(to: clock.now)
        return StackInstant(
            nanoseconds: 1_000_000_000 + UInt64(elapsed.components.seconds) * 1_000_000_000
                + UInt64(elapsed.components.attoseconds / 1_000_000_000))
    }

    /// Loss, duplication and reordering (a held packet goes out after the next batch).
    func impair(_ packets: [ByteBuffer], toStack: Bool) -> [ByteBuffer] {
        impairer.impair(packets, forward: toStack)
    }

    func run() {
        var packets: [ByteBuffer] = []
        packets.reserveCapacity(256)
        while !state.withLockedValue({ $0.stopping }) {
            var timeout: Int32 = 20
            if let deadline = stack.nextDeadline {
                let current = now
                timeout = deadline <= current ? 0 : Int32(min(20, deadline.since(current).nanoseconds / 1_000_000))
            }
            if impairer.isHolding { timeout = min(timeout, 1) }
            if device.waitUntilReadable(timeout: timeout) {
                packets.removeAll(keepingCapacity: true)
                _ = try? device.read(into: &packets, maximum: 64)
                let delivered = impair(packets, toStack: true)
                if tracing { for packet in delivered { traceLines.append("\(now) IN  \(trace(packet))") } }
                stack.receive(delivered, now: now)
            } else if impairer.isHolding {
                stack.receive(impair([], toStack: true), now: now)
            }
            stack.advance(to: now)
            handleEvents()
            pumpWriters()
            flushOutput()
            state.withLockedValue {
                $0.counters = stack.counters
                $0.flows = stack.flowCount
            }
        }
        if tracing {
            try? traceLines.suffix(200_000).joined(separator: "\n").write(
                toFile: "/tmp/kt-harness-trace.txt", atomically: true, encoding: .utf8)
        }
    }

    func flushOutput() {
        var output = stack.takeOutput()
        // Acting on events can queue more output; a few rounds settle it.
        for _ in 0..<4 where output.isEmpty == false || impairer.isHolding {
            let packets = output.map(Self.offloaded)
            let impaired: [OffloadedPacket]
            if impairment.loss > 0 || impairment.duplication > 0 || impairment.reordering > 0 {
                let kept = impair(packets.map(\.packet), toStack: false)
                impaired = kept.map { bytes in
                    packets.first { $0.packet == bytes } ?? OffloadedPacket(header: .plain, packet: bytes)
                }
            } else {
                impaired = packets
            }
            if tracing { for packet in impaired { traceLines.append("\(now) OUT \(trace(packet.packet))") } }
            _ = try? device.write(offloaded: impaired)
            stack.recycle(output)
            handleEvents()
            pumpWriters()
            output = stack.takeOutput()
            if output.isEmpty { break }
        }
        if !output.isEmpty {
            _ = try? device.write(offloaded: output.map(Self.offloaded))
            stack.recycle(output)
        }
    }

    /// The stack's packet with its virtio header (KtTun's conversion).
    static func offloaded(_ packet: OutputPacket) -> OffloadedPacket {
        // Copy: the stack reuses its buffers once recycled, and the impairment may hold packets back.
        OffloadedPacket(
            header: VirtioNetHeader(offload: packet.offload, packet: packet.bytes),
            packet: ByteBuffer(bytes: packet.bytes.readableBytesView))
    }

    func handleEvents() {
        for event in stack.takeEvents() {
            switch event {
            case .dial(let flow, let key):
                switch key.local.port.rawValue {
                case 1:
                    stack.refuseDial(flow, reason: .refused, now: now)
                case 5:
                    break
                default:
                    stack.acceptDial(flow, now: now)
                    switch key.local.port.rawValue {
                    case 80: services[flow] = .http(request: [], remaining: 0, position: 0, responded: false)
                    case 9:
                        let index = state.withLockedValue { shared -> Int in
                            shared.discards.append(KernelHarness.DiscardResult())
                            return shared.discards.count - 1
                        }
                        services[flow] = .discard(index: index, position: 0)
                    case 7: services[flow] = .echo(pending: nil)
                    default: services[flow] = .idle
                    }
                }
            case .connected(let flow):
                if let info = stack.info(flow) { state.withLockedValue { $0.connectedInfos.append(info) } }
            case .readable(let flow):
                readAll(flow)
            case .writable:
                break
            case .peerClosed(let flow):
                readAll(flow)
                if case .http(_, let remaining, _, _) = services[flow], remaining > 0 { break }
                stack.shutdownWrite(flow, now: now)
            case .closed(let flow, _):
                services[flow] = nil
            case .udpDatagram(let key, let payload):
                answerDNS(key, payload)
            case .udpFlowExpired:
                state.withLockedValue { $0.udpExpired += 1 }
            case .echoRequest(let request):
                stack.sendEchoReply(to: request)
            }
        }
    }

    func readAll(_ flow: FlowID) {
        while let bytes = stack.read(flow, maximum: 1 << 20, now: now) {
            switch services[flow] {
            case .http(var request, let remaining, let position, let responded):
                guard !responded else { continue }
                request += Array(buffer: bytes)
                if let end = request.firstRange(of: Array("\r\n\r\n".utf8)) {
                    let line = String(decoding: request[..<end.lowerBound], as: UTF8.self).split(separator: " ")
                    let size = line.count > 1 ? Int(line[1].dropFirst()) ?? 0 : 0
                    let header = "HTTP/1.1 200 OK\r\nContent-Length: \(size)\r\nConnection: close\r\n\r\n"
                    _ = stack.write(flow, ByteBuffer(string: header), now: now)
                    services[flow] = .http(request: [], remaining: size, position: 0, responded: true)
                } else {
                    services[flow] = .http(request: request, remaining: remaining, position: position, responded: false)
                }
            case .discard(let index, let position):
                let correct = Pattern.matches(bytes, at: position)
                state.withLockedValue {
                    $0.discards[index].bytes += bytes.readableBytes
                    $0.discards[index].correct = $0.discards[index].correct && correct
                }
                services[flow] = .discard(index: index, position: position + bytes.readableBytes)
            case .echo(let pending):
                var queue = pending ?? ByteBuffer()
                var incoming = bytes
                queue.writeBuffer(&incoming)
                let taken = stack.write(flow, queue, now: now)
                queue.moveReaderIndex(forwardBy: taken)
                services[flow] = .echo(pending: queue.readableBytes > 0 ? queue : nil)
            case .idle, nil:
                continue
            }
        }
    }

    /// Keeps every download's send buffer full.
    func pumpWriters() {
        for (flow, service) in services {
            switch service {
            case .http(_, let remaining, let position, true) where remaining > 0:
                var left = remaining
                var at = position
                while left > 0 {
                    let taken = stack.write(flow, Pattern.chunk(at: at, length: min(left, 256 * 1024)), now: now)
                    if taken == 0 { break }
                    left -= taken
                    at += taken
                }
                services[flow] = .http(request: [], remaining: left, position: at, responded: true)
                if left == 0 { stack.shutdownWrite(flow, now: now) }
            case .echo(let pending?):
                let taken = stack.write(flow, pending, now: now)
                var rest = pending
                rest.moveReaderIndex(forwardBy: taken)
                services[flow] = .echo(pending: rest.readableBytes > 0 ? rest : nil)
            default:
                continue
            }
        }
    }

    func answerDNS(_ key: FlowKey, _ payload: ByteBuffer) {
        guard key.local.port == 53, let query = try? DNSMessage(parsing: payload) else {
            stack.sendPortUnreachable(for: key, payload: payload)
            return
        }
        state.withLockedValue { $0.dnsQueries += 1 }
        var answer = query.makeResponse(authoritative: true)
        if let question = query.questions.first, question.type == .a {
            answer.answers = [DNSRecord(name: question.name, ttl: 5, data: .a(IPv4Address(10, 96, 0, 53)))]
        }
        stack.sendUDP(answer.encoded(limit: 1232), on: key, now: now)
    }
}
