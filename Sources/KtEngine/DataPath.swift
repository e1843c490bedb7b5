import KtStack
import KtTun
import KtTunnel
import KtWire
import Logging
import NIOConcurrencyHelpers
import NIOCore

/// What a tun-mode session's data path is to be: decided by ktctl before anything changes, made by ``DataPath``.
public struct DataPathPlan: Sendable {
    /// The TUN's name (`kt0`).
    public var deviceName: String
    /// The TUN's own address: the DNS resolver listens there.
    public var address: IPv4Address
    public var mtu: Int
    /// The cluster's ranges, routed into the TUN.
    public var routes: [AnyIPPrefix]
    /// Which names the resolver answers through the cluster.
    public var names: ClusterNames
    /// Where the other names go.
    public var upstreams: [SocketAddress]

    public init(
        deviceName: String, address: IPv4Address, mtu: Int, routes: [AnyIPPrefix], names: ClusterNames,
        upstreams: [SocketAddress]
    ) {
        self.deviceName = deviceName
        self.address = address
        self.mtu = mtu
        self.routes = routes
        self.names = names
        self.upstreams = upstreams
    }

    /// The stack's settings for a TUN with offloads (a virtio header): partial checksums and super-segments both
    /// ways, the TUN address as the router that ICMP errors come from.
    public var stackConfiguration: StackConfiguration {
        var configuration = StackConfiguration()
        configuration.checksumOffload = true
        configuration.segmentationOffload = true
        configuration.routerAddressV4 = address
        configuration.mtu = mtu
        return configuration
    }
}

/// The laptop's side of the data path, owned in one place: the packet device (the TUN with its address and routes),
/// the engine thread with the userspace stack, the tunnel it dials through, and the DNS resolver. ktctl asks for one,
/// reads its ``counters`` while it runs and ``stop()``s it; stopping removes the device, and with it the address and
/// routes.
public final class DataPath: Sendable {
    /// The device's interface name.
    public let deviceName: String
    let engine: TunEngine
    let resolver: ClusterResolver?
    let device: any PacketDevice
    private let closeDevice: @Sendable () -> Void
    private let stopped = NIOLockedValueBox(false)

    init(
        device: any PacketDevice, engine: TunEngine, resolver: ClusterResolver?,
        closeDevice: @escaping @Sendable () -> Void
    ) {
        self.deviceName = device.name
        self.device = device
        self.engine = engine
        self.resolver = resolver
        self.closeDevice = closeDevice
    }

    /// Makes the plan real: the TUN, its address, MTU and routes, the engine on it, the resolver on its address.
    /// What was made is removed again when a step fails.
    public static func open(
        _ plan: DataPathPlan, link: TunnelLink, group: any EventLoopGroup, logger: Logger
    ) async throws -> DataPath {
        let tun = try TunDevice.open(TunOptions(name: plan.deviceName, virtioHeader: true, keepSuperPackets: true))
        let engine: TunEngine
        do {
            let netlink = try Netlink()
            let interface = try netlink.link(named: tun.name)
            try netlink.addAddress(
                InterfaceAddress(interface: interface.index, address: .v4(plan.address), prefixLength: 32))
            try netlink.setMTU(UInt32(plan.mtu), of: interface.index)
            try netlink.setUp(true, interface.index)
            for prefix in plan.routes {
                try netlink.addRoute(Route(destination: prefix, outputInterface: interface.index, scope: .link))
            }
            engine = try TunEngine(
                device: tun, link: link, group: group, configuration: plan.stackConfiguration, logger: logger)
        } catch {
            tun.close()
            throw error
        }
        let resolver = ClusterResolver(
            names: plan.names, upstreams: plan.upstreams, link: link, group: group, logger: logger)
        let path = DataPath(device: tun, engine: engine, resolver: resolver, closeDevice: { tun.close() })
        do {
            _ = try await resolver.listen(host: "\(plan.address)", port: 53)
        } catch {
            path.stop()
            throw error
        }
        return path
    }

    /// An engine on a device made elsewhere (an in-memory device in tests), without a resolver. Stopping leaves
    /// the device to its owner.
    public init(
        device: any PacketDevice, configuration: StackConfiguration, link: TunnelLink, group: any EventLoopGroup,
        logger: Logger
    ) throws {
        self.deviceName = device.name
        self.device = device
        self.engine = try TunEngine(
            device: device, link: link, group: group, configuration: configuration, logger: logger)
        self.resolver = nil
        self.closeDevice = {}
    }

    /// Flows, bytes each way, datagrams, drops and reconnections so far.
    public var counters: EngineCounters { engine.statistics }

    /// The resolver's counters, when it has one.
    public var resolverCounters: ResolverCounters? { resolver?.counters }

    /// Stops the resolver and the engine (every flow is closed) and removes the device. Safe to call more than once.
    public func stop() {
        let first = stopped.withLockedValue { stopped -> Bool in
            defer { stopped = true }
            return !stopped
        }
        guard first else { return }
        resolver?.close()
        engine.stop()
        closeDevice()
    }
}
