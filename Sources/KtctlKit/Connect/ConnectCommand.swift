import Foundation
import Glibc
import KtEngine
import KtStack
import KtTun
import KtTunnel
import KtWire
import KubeKit
import Logging
import NIOCore
import NIOPosix

/// `ktctl connect`: the cluster's network on this machine until Ctrl-C.
///
/// Order of work, undone in reverse on the way out (also when a step fails): pid file → Secret and shadow pod →
/// port-forward and SSH → TUN, address and routes → engine → DNS resolver → resolv.conf. Everything undoable is
/// undone within a few seconds of SIGINT or SIGTERM.
public enum ConnectCommand {
    public static func run(_ options: ConnectOptions, logger: Logger, print: @escaping @Sendable (String) -> Void)
        async throws
    {
        if options.mode == .tun && geteuid() != 0 { throw ConnectError.needsRoot }
        guard options.mode == .tun else {
            throw ConnectError.other("--mode socks is not built yet; use --mode tun")
        }
        var undo = UndoStack()
        do {
            try await connect(options, logger: logger, print: print, undo: &undo)
            print("ktctl: stopping")
        } catch {
            await undo.run(logger: logger)
            throw error
        }
        await undo.run(logger: logger)
        print("ktctl: disconnected; routes, DNS and the cluster objects are removed")
    }

    static func connect(
        _ options: ConnectOptions, logger: Logger, print: @escaping @Sendable (String) -> Void, undo: inout UndoStack
    ) async throws {
        try FileManager.default.createDirectory(atPath: options.stateDirectory, withIntermediateDirectories: true)
        let pidFile = try PidFile.claim("\(options.stateDirectory)/connect.pid")
        undo.push("remove \(pidFile.path)") { pidFile.release() }

        // A crashed session's resolv.conf change comes back first.
        let resolvConf = ResolvConfWiring(stateDirectory: options.stateDirectory)
        if (try? resolvConf.restore()) == true {
            print("ktctl: restored /etc/resolv.conf left by a session that crashed")
        }

        let config = try Kubeconfig.load(explicitPath: options.cluster.kubeconfig)
        let access = try config.access(context: options.cluster.context, namespace: options.cluster.namespace)
        let client = try KubeClient(access: access, logger: logger)
        undo.push("close the API client") { await client.shutdown() }
        let namespace = access.namespace
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 2)
        undo.push("stop the event loops") { try? await group.shutdownGracefully() }

        // Which ranges: decided before anything is changed, so that a conflict changes nothing.
        let ranges = try await discoverRanges(client)
        var excluded = options.excludeIPs
        if let host = access.server.host, let address = IPAddress(host) {
            switch address {
            case .v4(let v4): excluded.append(.v4(IPv4Prefix(host: v4)))
            case .v6(let v6): excluded.append(.v6(IPv6Prefix(host: v6)))
            }
        }
        let routes = ranges.routes(include: options.includeIPs, exclude: excluded)
        let netlink = try Netlink()
        let conflicts = RouteConflicts.find(for: routes, in: try netlink.routes().filter { !$0.isOwnedByKtctl })
        if !conflicts.isEmpty && !options.forceRoutes {
            throw ConnectError.routes(
                "the cluster's ranges would collide with routes this machine has; nothing was changed:\n"
                    + conflicts.map { "  " + $0.explanation }.joined(separator: "\n")
                    + "\nexclude them with --exclude-ips, or route them anyway with --force-routes "
                    + "(`ktctl route --check \(routes.map(\.description).joined(separator: ","))` explains)")
        }

        let session = SessionIdentity.fresh()
        let link = TunnelLink()
        let shadow = ShadowSession(
            client: client, namespace: namespace, options: options.cluster, session: session, link: link,
            group: group, logger: logger, progress: { print("ktctl: \($0)") })
        undo.push("delete the shadow pod and secret") { await shadow.stop() }
        try await shadow.start()

        // The TUN, its address and routes; closing the device removes them all.
        let device = try TunDevice.open(TunOptions(name: options.tunName, virtioHeader: true, keepSuperPackets: true))
        undo.push("close \(options.tunName)") { device.close() }
        let link0 = try netlink.link(named: device.name)
        guard let tunAddress = IPv4Address(options.tunAddress) else {
            throw ConnectError.badFlag("--tun-address", "'\(options.tunAddress)' is not an IPv4 address")
        }
        try netlink.addAddress(InterfaceAddress(interface: link0.index, address: .v4(tunAddress), prefixLength: 32))
        try netlink.setUp(true, link0.index)
        for prefix in routes {
            try netlink.addRoute(Route(destination: prefix, outputInterface: link0.index, scope: .link))
        }
        var configuration = StackConfiguration()
        configuration.checksumOffload = true
        configuration.segmentationOffload = true
        configuration.verifyChecksums = false
        configuration.routerAddressV4 = tunAddress
        let engine = try TunEngine(
            device: device, link: link, group: group, configuration: configuration, logger: logger)
        undo.push("stop the engine") { engine.stop() }

        // DNS: a resolver on the TUN's address; resolv.conf points at it.
        let upstreams = resolvConf.nameservers().filter { $0 != options.tunAddress }.compactMap {
            try? SocketAddress(ipAddress: $0, port: 53)
        }
        let namespaces = Set(((try? await client.list(Namespace.self).items) ?? []).map(\.name))
        let names = ClusterNames(
            domain: try DNSName(parsing: options.clusterDomain), namespace: namespace, namespaces: namespaces)
        let resolver = ClusterResolver(names: names, upstreams: upstreams, link: link, group: group, logger: logger)
        undo.push("stop the resolver") { resolver.close() }
        _ = try await resolver.listen(host: options.tunAddress, port: 53)
        if options.dnsMode != "none" {
            try resolvConf.apply(resolver: options.tunAddress, search: names.searchList)
            undo.push("restore /etc/resolv.conf") { try? resolvConf.restore() }
        }

        print(
            """
            ktctl: connected to \(access.server.absoluteString) (context \(access.contextName)), namespace \(namespace)
              shadow     pod \(shadow.podName) (\(shadow.podIP ?? "?")) through port-forward and SSH
              routes     \(routes.map(\.description).joined(separator: " ")) via \(device.name) \
            (services: \(ranges.serviceSource); pods: \(ranges.podSource))
              dns        \(options.tunAddress):53 for *.\(options.clusterDomain), svc.ns and short names; \
            others to \(upstreams.map { $0.ipAddress ?? "?" }.joined(separator: ", "))
              stop       Ctrl-C (routes, DNS and the pod are removed)
            """)
        await waitForSignal()
    }

    /// Ranges from the ServiceCIDR API and the nodes, else inferred from ClusterIPs and pod IPs.
    static func discoverRanges(_ client: KubeClient) async throws -> ClusterRanges {
        let serviceCIDRs = ((try? await client.list(ServiceCIDR.self).items) ?? []).flatMap { $0.spec?.cidrs ?? [] }
        let nodes = (try? await client.list(Node.self).items) ?? []
        let podCIDRs = nodes.flatMap { node in
            node.spec?.podCIDRs ?? node.spec?.podCIDR.map { [$0] } ?? []
        }
        var clusterIPs: [String] = []
        var podIPs: [String] = []
        if serviceCIDRs.isEmpty {
            let services = try await client.listAll(Service.self, allNamespaces: true).items
            clusterIPs = services.compactMap { $0.raw["spec"]?["clusterIP"]?.stringValue }
        }
        if podCIDRs.isEmpty {
            let pods = try await client.listAll(Pod.self, allNamespaces: true).items
            podIPs = pods.filter { $0.raw["spec"]?["hostNetwork"]?.boolValue != true }.compactMap { $0.status?.podIP }
        }
        return ClusterRanges.decide(
            serviceCIDRs: serviceCIDRs, nodePodCIDRs: podCIDRs, clusterIPs: clusterIPs, podIPs: podIPs)
    }

    /// Returns on SIGINT or SIGTERM.
    static func waitForSignal() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let queue = DispatchQueue(label: "ktctl.signals")
            let once = NSLock()
            var resumed = false
            var sources: [DispatchSourceSignal] = []
            for number in [SIGINT, SIGTERM] {
                signal(number, SIG_IGN)
                let source = DispatchSource.makeSignalSource(signal: number, queue: queue)
                source.setEventHandler {
                    let first = once.withLock { () -> Bool in
                        defer { resumed = true }
                        return !resumed
                    }
                    if first {
                        for source in sources { source.cancel() }
                        continuation.resume()
                    }
                }
                source.resume()
                sources.append(source)
            }
        }
    }
}

/// What to undo, last first.
struct UndoStack {
    private var steps: [(String, () async -> Void)] = []

    mutating func push(_ what: String, _ step: @escaping () async -> Void) {
        steps.append((what, step))
    }

    func run(logger: Logger) async {
        for (what, step) in steps.reversed() {
            logger.debug("undo: \(what)")
            await step()
        }
    }
}

/// One `ktctl connect` per machine: a pid file that a live ktctl holds.
struct PidFile: Sendable {
    let path: String

    static func claim(_ path: String) throws -> PidFile {
        if let text = try? String(contentsOfFile: path, encoding: .utf8),
            let pid = Int32(text.trimmingCharacters(in: .whitespacesAndNewlines)), pid != getpid(), kill(pid, 0) == 0,
            let command = try? String(contentsOfFile: "/proc/\(pid)/cmdline", encoding: .utf8),
            command.contains("ktctl")
        {
            throw ConnectError.alreadyRunning(pid: pid, file: path)
        }
        try "\(getpid())\n".write(toFile: path, atomically: true, encoding: .utf8)
        return PidFile(path: path)
    }

    func release() {
        try? FileManager.default.removeItem(atPath: path)
    }
}
