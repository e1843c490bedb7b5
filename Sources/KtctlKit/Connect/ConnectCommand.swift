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
        let crashed = PidFile.read("\(options.stateDirectory)/connect.pid").flatMap { $0.isAlive ? nil : $0 }
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
        // What a session that was killed left in the cluster goes before this one makes its own.
        if let crashed, let id = crashed.session {
            let removed = await CleanCommand.removeSession(
                id, client: client, namespace: crashed.namespace ?? namespace, logger: logger)
            if !removed.isEmpty {
                print("ktctl: removed \(removed.joined(separator: ", ")) left by a session that was killed")
            }
        }
        // socks mode glues each client's socket to its tunnel flow, which needs both on one loop.
        let group = MultiThreadedEventLoopGroup(numberOfThreads: options.mode == .socks ? 1 : 2)
        undo.push("stop the event loops") { try? await group.shutdownGracefully() }
        if options.mode == .socks {
            try await socks(
                options, client: client, namespace: namespace, access: access, group: group,
                pidFile: pidFile, logger: logger, print: print, undo: &undo)
            return
        }

        // How DNS is wired, and which ranges: decided before anything is changed, so that a refusal changes nothing.
        let resolved = try chooseResolved(options, resolvConf: resolvConf, print: print)
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
        pidFile.record(session: session.id, namespace: namespace)
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
        try netlink.setMTU(UInt32(options.mtu), of: link0.index)
        try netlink.setUp(true, link0.index)
        for prefix in routes {
            try netlink.addRoute(Route(destination: prefix, outputInterface: link0.index, scope: .link))
        }
        var configuration = StackConfiguration()
        configuration.checksumOffload = true
        configuration.segmentationOffload = true
        configuration.verifyChecksums = false
        configuration.routerAddressV4 = tunAddress
        configuration.mtu = options.mtu
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
        let dnsSummary: String
        if let resolved {
            let domains = ResolvedWiring.domains(
                clusterDomain: options.clusterDomain, namespace: namespace, searchList: names.searchList)
            undo.push("revert systemd-resolved's settings for \(device.name)") {
                await resolved.revert(link: device.name)
            }
            try await resolved.apply(link: device.name, server: options.tunAddress, domains: domains)
            dnsSummary =
                "\(options.tunAddress):53 on \(device.name) through systemd-resolved (domains \(domains.joined(separator: " "))); "
                + "other names stay with resolved's servers"
        } else {
            if options.dnsMode != "none" {
                try resolvConf.apply(resolver: options.tunAddress, search: names.searchList)
                undo.push("restore /etc/resolv.conf") { _ = try? resolvConf.restore() }
            }
            dnsSummary =
                "\(options.tunAddress):53 for *.\(options.clusterDomain), svc.ns and short names; others to "
                + upstreams.map { $0.ipAddress ?? "?" }.joined(separator: ", ")
                + (options.dnsMode == "none" ? " (--dns-mode none: nothing points at it)" : " (/etc/resolv.conf)")
        }

        print(
            """
            ktctl: connected to \(access.server.absoluteString) (context \(access.contextName)), namespace \(namespace)
              shadow     pod \(shadow.podName) (\(shadow.podIP ?? "?")) through port-forward and SSH
              routes     \(routes.map(\.description).joined(separator: " ")) via \(device.name) \
            (services: \(ranges.serviceSource); pods: \(ranges.podSource))
              dns        \(dnsSummary)
              stop       Ctrl-C (routes, DNS and the pod are removed)
            """)
        await waitForSignal()
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
        _ options: ConnectOptions, client: KubeClient, namespace: String, access: ClusterAccess,
        group: MultiThreadedEventLoopGroup, pidFile: PidFile, logger: Logger,
        print: @escaping @Sendable (String) -> Void, undo: inout UndoStack
    ) async throws {
        let session = SessionIdentity.fresh()
        let link = TunnelLink()
        let proxy = ProxyServer(link: link, eventLoop: group.next(), logger: logger)
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
        undo.push("close the proxy") { proxy.close() }
        pidFile.record(session: session.id, namespace: namespace)
        let shadow = ShadowSession(
            client: client, namespace: namespace, options: options.cluster, session: session,
            link: link, group: group, logger: logger, progress: { print("ktctl: \($0)") })
        undo.push("delete the shadow pod and secret") { await shadow.stop() }
        try await shadow.start()
        let address = bound.ipAddress.map { $0.contains(":") ? "[\($0)]" : $0 } ?? options.proxyAddress
        let port = bound.port ?? options.proxyPort
        print(
            """
            ktctl: connected to \(access.server.absoluteString) (context \(access.contextName)), namespace \(namespace)
              shadow     pod \(shadow.podName) (\(shadow.podIP ?? "?")) through port-forward and SSH
              proxy      SOCKS5 and HTTP on \(address):\(port); names resolve in the cluster \
            (short names in namespace \(namespace))
              use        export ALL_PROXY=socks5h://\(address):\(port) http_proxy=http://\(address):\(port) \
            https_proxy=http://\(address):\(port)
              stop       Ctrl-C (the pod is removed)
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

/// One `ktctl connect` per state directory: a pid file that a live ktctl holds. Its second line names the session,
/// so that `ktctl clean` can tell the objects of a ktctl that was killed.
struct PidFile: Sendable {
    let path: String

    struct Record: Sendable {
        var pid: Int32
        var session: String?
        var namespace: String?
        /// A live ktctl has that pid.
        var isAlive: Bool
    }

    static func read(_ path: String) -> Record? {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { return nil }
        let lines = text.split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }
        guard let first = lines.first, let pid = Int32(first) else { return nil }
        let command = (try? String(contentsOfFile: "/proc/\(pid)/cmdline", encoding: .utf8)) ?? ""
        let alive = kill(pid, 0) == 0 && command.contains("ktctl")
        return Record(
            pid: pid, session: lines.count > 1 ? lines[1] : nil, namespace: lines.count > 2 ? lines[2] : nil,
            isAlive: alive)
    }

    static func claim(_ path: String) throws -> PidFile {
        if let record = read(path), record.pid != getpid(), record.isAlive {
            throw ConnectError.alreadyRunning(pid: record.pid, file: path)
        }
        // A dead session's line stays until this one has its own, so `ktctl clean` can still find its objects.
        let previous = read(path).flatMap { $0.isAlive ? nil : $0 }
        let kept = [previous?.session, previous?.namespace].compactMap { $0 }.map { $0 + "\n" }.joined()
        try "\(getpid())\n\(kept)".write(toFile: path, atomically: true, encoding: .utf8)
        return PidFile(path: path)
    }

    /// Names this process's session (and the namespace of its objects) in the file.
    func record(session: String, namespace: String) {
        try? "\(getpid())\n\(session)\n\(namespace)\n".write(toFile: path, atomically: true, encoding: .utf8)
    }

    func release() {
        try? FileManager.default.removeItem(atPath: path)
    }
}
