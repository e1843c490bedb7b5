import NIOConcurrencyHelpers
import NIOCore

/// Counts the flows glued to local sockets (socks mode's clients, the reverse forwards of exchange, mesh and preview)
/// and the bytes each way, for `ktctl status`. It sits in each flow's SSH channel, in front of the glue: what the
/// channel reads came from the cluster, what it writes goes to the cluster. tun mode counts in the engine instead
/// (`EngineCounters`).
public final class TrafficMeter: Sendable {
    public struct Counts: Sendable, Hashable {
        public var flowsOpened = 0
        public var flowsOpen = 0
        public var bytesToCluster = 0
        public var bytesFromCluster = 0
    }

    private let counts = NIOLockedValueBox(Counts())

    public init() {}

    public var snapshot: Counts { counts.withLockedValue { $0 } }

    /// Counts `flow` from now on: call on its event loop, before it is glued, so that no byte passes uncounted.
    public func attach(to flow: Channel) throws {
        counts.withLockedValue {
            $0.flowsOpened += 1
            $0.flowsOpen += 1
        }
        flow.closeFuture.whenComplete { [weak self] _ in self?.counts.withLockedValue { $0.flowsOpen -= 1 } }
        try flow.pipeline.syncOperations.addHandler(MeteringHandler(meter: self))
    }

    func add(toCluster: Int = 0, fromCluster: Int = 0) {
        counts.withLockedValue {
            $0.bytesToCluster += toCluster
            $0.bytesFromCluster += fromCluster
        }
    }
}

/// One flow's counting: reads are bytes from the cluster, writes bytes to it. A lock per read or write (each up to a
/// channel window's chunk) costs far less than the copy it counts.
final class MeteringHandler: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    let meter: TrafficMeter

    init(meter: TrafficMeter) {
        self.meter = meter
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        meter.add(fromCluster: unwrapInboundIn(data).readableBytes)
        context.fireChannelRead(data)
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        meter.add(toCluster: unwrapOutboundIn(data).readableBytes)
        context.write(data, promise: promise)
    }
}
