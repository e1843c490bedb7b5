import KtStack
import KtWire
import NIOCore

/// Two stacks joined in memory, one sending `segments` full-size segments to the other, which reads everything at
/// once. Run under `valgrind` twice with different counts (bench/allocations.sh): the difference in heap allocations
/// divided by the difference in packets is what one packet costs in allocations on the hot path.
enum AllocationBenchmark {
    /// Returns the packets that crossed in both directions.
    static func run(segments: Int) -> Int {
        struct Fixed: RandomNumberGenerator {
            var state: UInt64 = 42
            mutating func next() -> UInt64 {
                state = state &* 6_364_136_223_846_793_005 &+ 1
                return state
            }
        }
        var configuration = StackConfiguration()
        configuration.checksumOffload = true
        configuration.verifyChecksums = false
        var client = NetworkStack(configuration: configuration, random: Fixed())
        var server = NetworkStack(configuration: configuration, random: Fixed(state: 7))
        var now = StackInstant(nanoseconds: 1_000_000_000)
        let flow = client.connect(
            from: Endpoint(.v4(IPv4Address(10, 0, 0, 1)), 40000), to: Endpoint(.v4(IPv4Address(10, 96, 0, 15)), 80),
            now: now)
        let chunk = ByteBuffer(repeating: 0x42, count: 64 * 1024)
        var packets = 0
        var received = 0
        let target = segments * 1448
        var serverFlow: FlowID?
        while received < target {
            now = now + .microseconds(50)
            _ = client.write(flow, chunk, now: now)
            let toServer = client.takeOutput()
            packets += toServer.count
            server.receive(toServer.map(\.bytes), now: now)
            for event in server.takeEvents() {
                if case .dial(let id, _) = event {
                    server.acceptDial(id, now: now)
                    serverFlow = id
                }
            }
            if let serverFlow {
                while let bytes = server.read(serverFlow, maximum: 1 << 20, now: now) {
                    received += bytes.readableBytes
                }
            }
            client.recycle(toServer)
            let toClient = server.takeOutput()
            packets += toClient.count
            client.receive(toClient.map(\.bytes), now: now)
            server.recycle(toClient)
            _ = client.takeEvents()
            client.advance(to: now)
            server.advance(to: now)
        }
        return packets
    }
}
