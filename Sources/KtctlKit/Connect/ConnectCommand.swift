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
/// A session (`Session`): the plan (DNS wiring, ranges, route conflicts, permissions) is decided before anything is
/// changed, so a refusal changes nothing; then, each change journaled before it is made: Lease → Secret and shadow
/// pod → port-forward and SSH → TUN, address and routes → engine → DNS resolver → resolv.conf or systemd-resolved.
/// A signal at any step undoes exactly what was done so far.
public enum ConnectCommand {
    public static func run(_ options: ConnectOptions, logger: Logger, print: @escaping @Sendable (String) -> Void)
        async throws
    {
        if options.mode == .tun && geteuid() != 0 { throw ConnectError.needsRoot }
        var sessionOptions = Session.Options(command: "connect", state: StateDirectory(options.stateDirectory))
        sessionOptions.leaseDuration = options.leaseDuration
        try await Session.run(sessionOptions, logger: logger, print: print) { session in
            try await connect(options, session: session, logger: logger, print: print)
        }
        print("ktctl: disconnected; \(options.mode == .tun ? "routes, DNS and " : "")the cluster objects are removed")
    }

    static func connect(
        _ options: ConnectOptions, session: Session, logger: Logger, print: @escaping @Sendable (String) -> Void
    ) async throws {
        let cluster = try await session.connect(options.cluster)
        let client = cluster.client
        let namespace = cluster.namespace
        let access = cluster.access

        // What the session may do, before it does anything.
        let needed = Permissions.session + (options.mode == .tun ? Permissions.clusterRanges : [])
        let missing = await Permissions.missing(needed, client: client, namespace: namespace)
        let missingForSession = (missing ?? []).filter { !$0.clusterWide }
        if !missingForSession.isEmpty {
            throw ConnectError.permissions(
                "ktctl connect cannot run here: the cluster does not let you\n"
                    + Permissions.explain(missingForSession, namespace: namespace, user: nil)
                    + "\nnothing was changed")
        }
        let clusterWide = missing.map { !$0.contains(where: \.clusterWide) } ?? true

        // socks mode glues each client's socket to its tunnel flow, which needs both on one loop.
        let group = MultiThreadedEventLoopGroup(numberOfThreads: options.mode == .socks ? 1 : 2)
        session.onStop("stop the event loops") { try? await group.shutdownGracefully() }
        if options.mode == .socks {
            try await socks(options, session: session, cluster: cluster, group: group, logger: logger, print: print)
            return
        }

        // How DNS is wired, and which ranges: decided before anything is changed, so that a refusal changes nothing.
        let resolvConf = ResolvConfWiring()
        let resolved = try chooseResolved(options, resolvConf: resolvConf, print: print)
        var ranges = try await discoverRanges(client, namespace: namespace, clusterWide: clusterWide, print: print)
        let wide = ranges.tooWide
        if !wide.isEmpty {
            if options.includeIPs.isEmpty {
                throw ConnectError.routes(
                    "the cluster's ranges could not be read and the addresses seen do not fit a safe range: "
                        + wide.joined(separator: "; ")
                        + "; routing that would send much of the Internet into the cluster. Nothing was changed. "
                        + "Name the cluster's ranges with --include-ips (e.g. --include-ips 10.96.0.0/12,10.244.0.0/16)"
                )
            }
            print("ktctl: not routing \(wide.joined(separator: "; ")); --include-ips names the ranges instead")
            ranges = ranges.droppingTooWide()
        }
        var excluded = options.excludeIPs
        if let host = access.server.host, let address = IPAddress(host) {
            switch address {
            case .v4(let v4): excluded.append(.v4(IPv4Prefix(host: v4)))
            case .v6(let v6): excluded.append(.v6(IPv6Prefix(host: v6)))
            }
        }
        let routes = ranges.routes(include: options.includeIPs, exclude: excluded)
        if routes.isEmpty {
            guard !clusterWide else {
                throw ConnectError.routes(
                    "no range to route: the cluster declares no ranges and no pod or service address was seen; "
                        + "nothing was changed; name them with --include-ips")
            }
            print(
                "ktctl: no pod or service address is visible in namespace \(namespace), so nothing is routed yet "
                    + "(cluster names still resolve); name the cluster's ranges with --include-ips")
        }
        let netlink = try Netlink()
        let conflicts = RouteConflicts.find(for: routes, in: try netlink.routes().filter { !$0.isOwnedByKtctl })
        if !conflicts.isEmpty && !options.forceRoutes {
            throw ConnectError.routes(
                "the cluster's ranges would collide with routes this machine has; nothing was changed:\n"
                    + conflicts.map { "  " + $0.explanation }.joined(separator: "\n")
                    + "\nexclude them with --exclude-ips, or route them anyway with --force-routes "
                    + "(`ktctl route --check \(routes.map(\.description).joined(separator: ","))` explains)")
        }
        guard let tunAddress = IPv4Address(options.tunAddress) else {
            throw ConnectError.badFlag("--tun-address", "'\(options.tunAddress)' is not an IPv4 address")
        }
        let namespaces =
            clusterWide ? Set(((try? await client.list(Namespace.self).items) ?? []).map(\.name)) : [namespace]
        let names = ClusterNames(
            domain: try DNSName(parsing: options.clusterDomain), namespace: namespace, namespaces: namespaces)

        // The cluster side.
        try await session.startLease()
        let link = TunnelLink()
        let shadow = ShadowSession(
            session: session, spec: .connect(session.identity), options: options.cluster, link: link, group: group,
            logger: logger, progress: { print("ktctl: \($0)") })
        try await shadow.start()

        // The data path: the TUN, its address and routes, the engine and the resolver on the TUN's address.
        // Closing the device removes the address and routes with it, also when the process is killed.
        let upstreams = resolvConf.nameservers().filter { $0 != options.tunAddress }.compactMap {
            try? SocketAddress(ipAddress: $0, port: 53)
        }
        let plan = DataPathPlan(
            deviceName: options.tunName, address: tunAddress, mtu: options.mtu, routes: routes, names: names,
            upstreams: upstreams)
        let holder = DataPathHolder()
        try session.record(
            "create the TUN device \(options.tunName) with \(options.tunAddress) and routes to "
                + routes.map(\.description).joined(separator: " "),
            undo: .goesWithProcess("the TUN device \(options.tunName) and its routes"),
            before: { holder.stop() })
        session.onStop("stop the engine and the resolver") { holder.stop() }
        let path = try await DataPath.open(plan, link: link, group: group, logger: logger)
        holder.set(path)
        session.status.update {
            $0.mode = "tun"
            $0.routes = routes.map(\.description)
        }
        session.status.sample { status in status.traffic = SessionStatus.Traffic(path.counters) }

        // DNS: resolv.conf or systemd-resolved points at the resolver.
        let deviceName = path.deviceName
        let dnsSummary: String
        if let resolved {
            let domains = ResolvedWiring.domains(
                clusterDomain: options.clusterDomain, namespace: namespace, searchList: names.searchList)
            try session.record(
                "set systemd-resolved's DNS for \(deviceName) to \(options.tunAddress)",
                undo: .revertResolvedLink(deviceName))
            try await resolved.apply(link: deviceName, server: options.tunAddress, domains: domains)
            dnsSummary =
                "\(options.tunAddress):53 on \(deviceName) through systemd-resolved (domains \(domains.joined(separator: " "))); "
                + "other names stay with resolved's servers"
        } else {
            if options.dnsMode != "none" {
                let (original, written) = try resolvConf.plan(resolver: options.tunAddress, search: names.searchList)
                try session.record(
                    "point \(resolvConf.path) at \(options.tunAddress)",
                    undo: .restoreFile(path: resolvConf.path, original: original, written: written))
                try resolvConf.write(written)
            }
            dnsSummary =
                "\(options.tunAddress):53 for *.\(options.clusterDomain), svc.ns and short names; others to "
                + upstreams.map { $0.ipAddress ?? "?" }.joined(separator: ", ")
                + (options.dnsMode == "none" ? " (--dns-mode none: nothing points at it)" : " (\(resolvConf.path))")
        }

        session.status.update { $0.dns = dnsSummary }
        print(
            """
            ktctl: connected to \(access.server.absoluteString) (context \(access.contextName)), namespace \(namespace)
              session    \(session.identity.id) (lease kt-connect-\(session.identity.id), renewed every \
            \(max(1, options.leaseDuration / 3)) s)
              shadow     pod \(shadow.podName) (\(shadow.podIP ?? "?")) through port-forward and SSH
              routes     \(routes.map(\.description).joined(separator: " ")) via \(deviceName) \
            (services: \(ranges.serviceSource); pods: \(ranges.podSource))
              dns        \(dnsSummary)
              stop       Ctrl-C (routes, DNS and the pod are removed)
            """)
        try await session.waitUntilStopped()
    }

    /// systemd-resolved's wiring when `--dns-mode` asks for it or (`auto`) resolved answers lookups here; nil for
    /// resolv.conf or none. `resolved` where resolved is not in charge is refused before anything changes.
    static func chooseResolved(
        _ options: ConnectOptions, resolvConf: ResolvConfWiring, print: @Sendable (String) -> Void
    ) throws -> ResolvedWiring? {
        guard options.dnsMode == "auto" || options.dnsMode == "resolved" else { return nil }
        let inCharge = ResolvedWiring.isInCharge(resolvConfNameservers: resolvConf.nameservers())
        let resolvectl = ResolvedWiring.locate()
        if inCharge, let resolvectl { return ResolvedWiring(resolvectl: resolvectl) }
        if options.dnsMode == "resolved" {
            throw ConnectError.badFlag(
                "--dns-mode resolved",
                inCharge
                    ? "systemd-resolved runs but resolvectl is not on PATH; nothing was changed; install it or use "
                        + "--dns-mode resolv.conf"
                    : "systemd-resolved does not answer lookups here (\(ResolvedWiring.socketPath) takes no "
                        + "connections, or /etc/resolv.conf does not name its stub 127.0.0.53); nothing was changed; "
                        + "use --dns-mode resolv.conf")
        }
        if inCharge {
            print("ktctl: systemd-resolved runs but resolvectl is not on PATH: rewriting /etc/resolv.conf instead")
        }
        return nil
    }

    /// socks mode: the shadow, and a SOCKS5 / HTTP proxy on this machine; nothing else on the machine changes.
    static func socks(
        _ options: ConnectOptions, session: Session, cluster: SessionCluster, group: MultiThreadedEventLoopGroup,
        logger: Logger, print: @escaping @Sendable (String) -> Void
    ) async throws {
        let link = TunnelLink()
        let proxy = ProxyServer(link: link, eventLoop: group.next(), access: options.proxyAccess, logger: logger)
        // The port first: if it is taken, nothing in the cluster is made.
        let bound: SocketAddress
        do {
            bound = try await proxy.listen(host: options.proxyAddress, port: options.proxyPort)
        } catch {
            throw ConnectError.badFlag(
                "--proxy-port",
                "cannot listen on \(options.proxyAddress):\(options.proxyPort): \(error); "
                    + "choose another with --proxy-port")
        }
        session.onStop("close the proxy") { proxy.close() }
        try await session.startLease()
        let shadow = ShadowSession(
            session: session, spec: .connect(session.identity), options: options.cluster, link: link, group: group,
            logger: logger, progress: { print("ktctl: \($0)") })
        try await shadow.start()
        let address = bound.ipAddress.map { $0.contains(":") ? "[\($0)]" : $0 } ?? options.proxyAddress
        let port = bound.port ?? options.proxyPort
        let credentials = options.proxyAccess.credentials.map { "\($0.username):…@" } ?? ""
        session.status.update {
            $0.mode = "socks"
            $0.proxy = "SOCKS5 and HTTP on \(address):\(port) for \(options.proxyAccess.summary)"
            $0.dns = "names resolve in the cluster through the proxy (socks5h)"
        }
        session.status.sample { status in status.traffic = SessionStatus.Traffic(proxy.meter.snapshot) }
        print(
            """
            ktctl: connected to \(cluster.access.server.absoluteString) (context \(cluster.access.contextName)), \
            namespace \(cluster.namespace)
              session    \(session.identity.id) (lease kt-connect-\(session.identity.id))
              shadow     pod \(shadow.podName) (\(shadow.podIP ?? "?")) through port-forward and SSH
              proxy      SOCKS5 and HTTP on \(address):\(port) for \(options.proxyAccess.summary); names resolve in \
            the cluster (short names in namespace \(cluster.namespace))
              use        export ALL_PROXY=socks5h://\(credentials)\(address):\(port) \
            http_proxy=http://\(credentials)\(address):\(port) https_proxy=http://\(credentials)\(address):\(port)
              stop       Ctrl-C (the pod is removed)
            """)
        try await session.waitUntilStopped()
    }

    /// Ranges from the ServiceCIDR API and the nodes, else inferred from ClusterIPs and pod IPs. Without the
    /// cluster-wide permissions (`deploy/rbac/ktctl-cluster.yaml`) only the session's namespace is seen, and the
    /// summary says so.
    static func discoverRanges(
        _ client: KubeClient, namespace: String, clusterWide: Bool, print: @Sendable (String) -> Void
    ) async throws -> ClusterRanges {
        guard clusterWide else {
            print(
                "ktctl: without the cluster-wide permissions of \(Permissions.clusterRole), the ranges are inferred "
                    + "from the services and pods of namespace \(namespace) only; add others with --include-ips")
            let services = (try? await client.listAll(Service.self, namespace: namespace).items) ?? []
            let pods = (try? await client.listAll(Pod.self, namespace: namespace).items) ?? []
            var ranges = ClusterRanges.decide(
                serviceCIDRs: [], nodePodCIDRs: [],
                clusterIPs: services.compactMap { $0.raw["spec"]?["clusterIP"]?.stringValue },
                podIPs: pods.filter { $0.raw["spec"]?["hostNetwork"]?.boolValue != true }.compactMap {
                    $0.status?.podIP
                })
            ranges.serviceSource += " of namespace \(namespace)"
            ranges.podSource += " of namespace \(namespace)"
            return ranges
        }
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
}

/// The data path once it is open: stopped (the TUN, its address and routes with it) when the session stops, also
/// when the stop comes while it is being opened.
final class DataPathHolder: @unchecked Sendable {
    private let lock = NSLock()
    private var path: DataPath?
    private var stopped = false

    func set(_ path: DataPath) {
        let stopNow = lock.withLock { () -> Bool in
            self.path = path
            return stopped
        }
        if stopNow { path.stop() }
    }

    func stop() {
        let path = lock.withLock { () -> DataPath? in
            stopped = true
            return self.path
        }
        path?.stop()
    }
}
