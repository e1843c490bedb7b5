import KtStack
import KtWire
import NIOCore

/// A seeded generator (SplitMix64), so that every simulated run can be replayed from its seed.
struct SeededGenerator: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// Two stacks joined by a simulated link that can lose, duplicate, reorder and delay packets, driven by a manual
/// clock: each step jumps to the next delivery or timer.
struct Simulation {
    struct Link {
        var loss = 0.0
        var duplication = 0.0
        /// Probability that a packet is held back by up to `reorderDelay`.
        var reordering = 0.0
        var delay = StackDuration.milliseconds(1)
        var reorderDelay = StackDuration.milliseconds(5)
    }

    var client: NetworkStack
    var server: NetworkStack
    var link: Link
    var random: SeededGenerator
    var now = StackInstant(nanoseconds: 1_000_000_000)
    /// Packets in flight: delivery time, destination (true: server), bytes.
    private var inFlight: [(at: StackInstant, toServer: Bool, bytes: ByteBuffer)] = []
    var clientEvents: [StackEvent] = []
    var serverEvents: [StackEvent] = []
    private(set) var delivered = 0
    private(set) var dropped = 0
    var tracing = false
    /// The last packets put on the link, for reading a failure.
    var recent: [String] = []

    init(link: Link, seed: UInt64, configuration: StackConfiguration = StackConfiguration()) {
        self.link = link
        random = SeededGenerator(seed: seed)
        client = NetworkStack(configuration: configuration, random: SeededGenerator(seed: seed &+ 1))
        server = NetworkStack(configuration: configuration, random: SeededGenerator(seed: seed &+ 2))
    }

    private mutating func chance(_ p: Double) -> Bool { p > 0 && Double(random.next() % 1_000_000) / 1e6 < p }

    /// Moves what each stack emitted onto the link.
    mutating func collect() {
        for (packets, toServer) in [(client.takeOutput(), true), (server.takeOutput(), false)] {
            for packet in packets {
                // Copy: the stack reuses its buffers once recycled.
                let bytes = ByteBuffer(bytes: packet.bytes.readableBytesView)
                if tracing {
                    recent.append("\(now) \(dropped) \(trace(bytes))")
                    if recent.count > 100_000 { recent.removeFirst() }
                }
                if chance(link.loss) {
                    dropped += 1
                    continue
                }
                var at = now + link.delay
                if chance(link.reordering) {
                    at = at + StackDuration(nanoseconds: random.next() % link.reorderDelay.nanoseconds)
                }
                inFlight.append((at, toServer, bytes))
                if chance(link.duplication) { inFlight.append((at + link.delay, toServer, bytes)) }
            }
            if toServer { client.recycle(packets) } else { server.recycle(packets) }
        }
        clientEvents += client.takeEvents()
        serverEvents += server.takeEvents()
    }

    /// Advances to the next delivery or timer and processes it; false when nothing is left to happen.
    mutating func step(until limit: StackInstant) -> Bool {
        collect()
        let nextDelivery = inFlight.map(\.at).min()
        let candidates = [nextDelivery, client.nextDeadline, server.nextDeadline].compactMap { $0 }
        guard let next = candidates.min(), next <= limit else { return false }
        now = max(now, next)
        var remaining: [(at: StackInstant, toServer: Bool, bytes: ByteBuffer)] = []
        var toServer: [ByteBuffer] = []
        var toClient: [ByteBuffer] = []
        for item in inFlight {
            if item.at <= now {
                if item.toServer { toServer.append(item.bytes) } else { toClient.append(item.bytes) }
                delivered += 1
            } else {
                remaining.append(item)
            }
        }
        inFlight = remaining
        server.receive(toServer, now: now)
        client.receive(toClient, now: now)
        server.advance(to: now)
        client.advance(to: now)
        collect()
        return true
    }
}
