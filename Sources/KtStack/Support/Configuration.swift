import KtWire

/// What a stack is allowed to do and how patient it is. Every bound has a reason in its comment.
public struct StackConfiguration: Sendable {
    /// The TUN's MTU: the MSS we announce is this minus 40 (IPv4) or 60 (IPv6) bytes of headers.
    public var mtu: Int = 1500
    /// SYNs waiting for the tunnel to dial. Beyond this, new SYNs are dropped (the client's kernel retries after
    /// 1 s, 3 s, …) rather than queued without bound: 4096 dials in flight is far more than a laptop makes, and a
    /// port scan through the tunnel must not exhaust memory.
    public var maximumPendingDials = 4096
    /// How a refused dial looks to the client.
    public var refusal: RefusalStyle = .reset
    /// Receive buffer per flow at the start, in bytes; auto-tuning doubles it while the application keeps up.
    public var initialReceiveBuffer = 256 * 1024
    /// The most a flow's receive buffer grows to: bounds memory per flow when the application is slow (the
    /// window closes instead), and is enough for 10 Gbit/s at 3 ms of RTT.
    public var maximumReceiveBuffer = 4 * 1024 * 1024
    /// Bytes ``NetworkStack/write(_:_:now:)`` accepts per flow beyond what is acknowledged: the sender's
    /// share of per-flow memory.
    public var sendBufferLimit = 4 * 1024 * 1024
    /// Our window scale shift (RFC 7323): 7 allows windows up to 8 MiB, twice the largest receive buffer.
    public var windowScale: UInt8 = 7
    public var congestionControl: CongestionControlAlgorithm = .cubic
    /// How long an ACK may wait for a second segment to share it (RFC 9293 §3.8.6.3 allows up to 500 ms; Linux
    /// waits 40 ms). Short, because the peer is the local kernel and our flows are a proxy's.
    public var delayedACKTimeout = StackDuration.milliseconds(5)
    /// RTO bounds (RFC 6298 §2.4 says at least 1 s; Linux uses 200 ms, which suits a path that is all local).
    public var initialRTO = StackDuration.seconds(1)
    public var minimumRTO = StackDuration.milliseconds(200)
    public var maximumRTO = StackDuration.seconds(60)
    /// Retransmissions of one segment before the flow is given up (Linux's tcp_retries2 is 15).
    public var maximumRetransmissions = 15
    /// SYN or SYN-ACK retransmissions before a handshake is abandoned (Linux: 5 and 6).
    public var maximumHandshakeRetransmissions = 6
    /// TIME-WAIT (2 MSL). Linux uses 60 s; 30 s keeps fewer dead flows in memory and still outlives any segment
    /// on a path that is all inside one machine.
    public var timeWait = StackDuration.seconds(30)
    /// Keep-alive on idle flows: first probe after `keepAliveIdle`, then every `keepAliveInterval`, give up after
    /// `keepAliveProbes` unanswered (RFC 1122 §4.2.3.6 allows it; we use it to notice a client that vanished).
    public var keepAliveIdle: StackDuration? = .seconds(120)
    public var keepAliveInterval = StackDuration.seconds(15)
    public var keepAliveProbes = 6
    /// Idle time after which a UDP flow is forgotten.
    public var udpIdleTimeout = StackDuration.seconds(60)
    /// UDP flows held at once; the least recently used goes when a new one needs room.
    public var maximumUDPFlows = 16384
    /// Check the checksums of arriving packets. Packets a device vouches for (``PacketOffload``: a partial checksum
    /// from the sending kernel, or DATA_VALID) are not checked either way; a harness can turn all checks off.
    public var verifyChecksums = true
    /// Leave transport checksums to the device (virtio NEEDS_CSUM): the stack writes only the pseudo-header sum.
    public var checksumOffload = false
    /// Send TCP super-segments of up to 64 KiB for the device to cut (virtio GSO) instead of MSS-sized ones.
    public var segmentationOffload = false
    /// The address ICMP errors come from when the stack plays a router (TTL exceeded). `nil`: none are sent.
    public var routerAddressV4: IPv4Address?
    public var routerAddressV6: IPv6Address?

    public init() {}
}

/// What the client sees when the tunnel cannot dial.
public enum RefusalStyle: Sendable, Hashable {
    /// A TCP RST: the client's connect fails with ECONNREFUSED at once.
    case reset
    /// ICMP destination unreachable (port unreachable for "refused", host unreachable otherwise).
    case icmp
}

/// Why the tunnel could not dial a flow.
public enum DialFailure: Sendable, Hashable {
    /// The cluster side answered with RST.
    case refused
    /// No route, or the host did not answer ARP/ND.
    case unreachable
    /// No answer in time.
    case timedOut
    /// A name that could not be resolved (for flows dialled by name).
    case nameNotFound
}
