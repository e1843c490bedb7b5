import KtWire
import NIOCore

/// What the stack tells the engine. Readable and writable are edge-triggered: each is reported once when the
/// condition starts, and again only after it ended.
public enum StackEvent: Sendable {
    /// A SYN for `key` arrived: dial `key.local` through the tunnel, then call `acceptDial` or `refuseDial`.
    case dial(FlowID, FlowKey)
    /// The handshake completed.
    case connected(FlowID)
    /// Bytes are ready to ``NetworkStack/read(_:maximum:now:)``.
    case readable(FlowID)
    /// The send buffer has room again after a write was cut short.
    case writable(FlowID)
    /// The client sent FIN: after the bytes already readable, nothing more comes.
    case peerClosed(FlowID)
    /// The flow is over; its handle is no longer valid once its readable bytes are read.
    case closed(FlowID, FlowCloseReason)
    /// A UDP datagram from the client.
    case udpDatagram(FlowKey, ByteBuffer)
    /// A UDP flow was idle for `udpIdleTimeout` and is forgotten.
    case udpFlowExpired(FlowKey)
    /// An ICMP or ICMPv6 echo request: the cluster side should answer it (``NetworkStack/sendEchoReply(to:data:)``).
    case echoRequest(EchoRequest)
}

/// Why a flow ended.
public enum FlowCloseReason: Sendable, Hashable {
    /// Both sides closed.
    case normal
    /// The client reset it.
    case reset
    /// Retransmissions or keep-alives went unanswered.
    case timedOut
    /// The engine aborted it (``NetworkStack/abort(_:now:)``).
    case aborted
    /// The dial failed and the client was told.
    case refused
}

/// An echo request seen on the TUN.
public struct EchoRequest: Sendable, Hashable {
    /// The client's address (where the reply goes).
    public var source: IPAddress
    /// The address it pinged.
    public var destination: IPAddress
    public var identifier: UInt16
    public var sequenceNumber: UInt16
    public var data: ByteBuffer
}
