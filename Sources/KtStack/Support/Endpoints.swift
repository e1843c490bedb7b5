import KtWire

/// An address and a port: one end of a TCP or UDP flow.
public struct Endpoint: Hashable, Sendable, CustomStringConvertible {
    public var address: IPAddress
    public var port: PortNumber

    public init(_ address: IPAddress, _ port: PortNumber) {
        self.address = address
        self.port = port
    }

    public var description: String {
        switch address {
        case .v4(let v4): return "\(v4):\(port)"
        case .v6(let v6): return "[\(v6)]:\(port)"
        }
    }
}

/// A flow as the stack sees it: `local` is the side the stack plays (the cluster address the laptop's program
/// dialled), `remote` the laptop's program. Both are of one family.
public struct FlowKey: Hashable, Sendable, CustomStringConvertible {
    public var local: Endpoint
    public var remote: Endpoint

    public init(local: Endpoint, remote: Endpoint) {
        self.local = local
        self.remote = remote
    }

    public var isIPv6: Bool {
        if case .v6 = local.address { return true }
        return false
    }

    /// The pseudo-header of segments the stack sends on this flow.
    var outboundPseudoHeader: IPPseudoHeader {
        switch (local.address, remote.address) {
        case (.v4(let source), .v4(let destination)): return .v4(source: source, destination: destination)
        case (.v6(let source), .v6(let destination)): return .v6(source: source, destination: destination)
        default: preconditionFailure("a flow key joins two addresses of one family")
        }
    }

    public var description: String { "\(remote) → \(local)" }
}

/// A handle on one TCP flow. The generation makes a stale handle (to a slot that was reused) harmless.
public struct FlowID: Hashable, Sendable, CustomStringConvertible {
    public var slot: UInt32
    public var generation: UInt32

    public var description: String { "flow#\(slot).\(generation)" }
}
