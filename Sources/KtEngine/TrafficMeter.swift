import NIOConcurrencyHelpers
import NIOCore

/// Counts the flows glued to local sockets (socks mode's clients, the reverse forwards of exchange, mesh and preview,
/// forward's connections) and the bytes each way, for `ktctl status`. It sits in front of the glue, in each flow's SSH
/// channel (what the channel reads came from the cluster) or in the local socket (`Side.local`: what it reads goes to
/// the cluster). tun mode counts in the engine instead
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

    /// Which end of a glued pair the meter sits in.
    public enum Side: Sendable {
        /// The flow's SSH channel (or port-forward stream): it reads what came from the cluster.
        case cluster
        /// The local socket: it reads what goes to the cluster.
        case local
    }

    /// Counts `flow` from now on: call on its event loop, before it is glued, so that no byte passes uncounted.
    public func attach(to flow: Channel, side: Side = .cluster) throws {
        counts.withLockedValue {
            $0.flowsOpened += 1
            $0.flowsOpen += 1
        }
        flow.closeFuture.whenComplete { [weak self] _ in self?.counts.withLockedValue { $0.flowsOpen -= 1 } }
        try flow.pipeline.syncOperations.addHandler(MeteringHandler(meter: self, readsFromCluster: side == .cluster))
    }

    func add(toCluster: Int = 0, fromCluster: Int = 0) {
        counts.withLockedValue {
            $0.bytesToCluster += toCluster
            $0.bytesFromCluster += fromCluster
        }
    }
}

/// One flow's counting: in the flow's channel reads are bytes from the cluster and writes bytes to it; in a local
/// socket the other way round. A lock per read or write (each up to a
/// channel window's chunk) costs far less than the copy it counts.
final class MeteringHandler: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    let meter: TrafficMeter
    let readsFromCluster: Bool

    init(meter: TrafficMeter, readsFromCluster: Bool) {
        self.meter = meter
        self.readsFromCluster = readsFromCluster
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let count = unwrapInboundIn(data).readableBytes
        if readsFromCluster { meter.add(fromCluster: count) } else { meter.add(toCluster: count) }
        context.fireChannelRead(data)
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let count = unwrapOutboundIn(data).readableBytes
        if readsFromCluster { meter.add(toCluster: count) } else { meter.add(fromCluster: count) }
        context.write(data, promise: promise)
    }
}
