import Foundation
import KtEngine
import KtTunnel
import KubeKit
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

/// `ktctl forward`'s flags.
public struct ForwardOptions: Sendable {
    public var cluster: ClusterOptions
    /// A Service (`svc/NAME`, or a bare NAME that names one) or a pod (`pod/NAME`, or a bare NAME that names no
    /// Service).
    public var target: String
    /// `local[:remote]`; nil: the Service's only port, or the pod's only declared port, on the same local number.
    public var ports: String?
    /// The local address to listen on.
    public var address = "127.0.0.1"
    /// How long one connection waits for a ready pod (a Service's pod deleted or restarting) before it is closed.
    public var waitForPod: Duration = .seconds(30)
    /// Where `ktctl status` finds the forward (it has no session, but shows there as one).
    public var stateDirectory = StateDirectory.defaultRoot

    public init(cluster: ClusterOptions, target: String, ports: String?) {
        self.cluster = cluster
        self.target = target
        self.ports = ports
    }
}

/// Where a forward goes: a fixed pod, or a Service's ready pod of the moment.
public enum ForwardRoute: Sendable, Hashable, CustomStringConvertible {
    case pod(name: String, port: Int)
    /// The Service, the Service port's name (to find it among the Endpoints' ports), and the target port when it is
    /// a number (used when the Endpoints name no port).
    case service(name: String, port: Int, portName: String?, targetPort: Int?)

    public var description: String {
        switch self {
        case .pod(let name, let port): return "pod/\(name):\(port)"
        case .service(let name, let port, _, _): return "service/\(name):\(port)"
        }
    }
}

/// The pure part of forward: which port of which object, and the local port.
public enum ForwardPlan {
    /// Splits `local[:remote]` (remote a number or a port's name).
    public static func parsePorts(_ text: String) throws -> (local: Int, remote: String?) {
        let parsed = try ExposedPort.parseList(text, flag: "PORTS")
        guard parsed.count == 1, let only = parsed.first else {
            throw PlanError.badFlag("PORTS", "'\(text)': forward takes one local[:remote]")
        }
        return (only.local, only.remote)
    }

    /// The route to a Service's port and the local port.
    public static func route(service: Service, ports: String?) throws -> (route: ForwardRoute, local: Int) {
        let available = (service.spec?.ports ?? []).filter { ($0.protocol ?? "TCP") == "TCP" }
        let listing = available.map { ($0.name.map { "\($0) " } ?? "") + "\($0.port)" }.joined(separator: ", ")
        let local: Int?
        let port: ServicePort?
        if let ports {
            let (number, remote) = try parsePorts(ports)
            local = number
            let wanted = remote ?? String(number)
            port =
                available.first { Int(wanted) == $0.port || $0.name == wanted }
                ?? (remote == nil && available.count == 1 ? available.first : nil)
        } else {
            guard available.count == 1 else {
                throw PlanError.ambiguous(
                    "service \(service.name) has \(available.isEmpty ? "no TCP ports" : "ports \(listing)"); name "
                        + "one: ktctl forward \(service.name) LOCAL:PORT")
            }
            port = available.first
            local = nil
        }
        guard let port else {
            throw PlanError.badFlag(
                "PORTS", "service \(service.name) has no TCP port \(ports ?? "") (its ports: \(listing))")
        }
        if service.spec?.selector?.isEmpty ?? true {
            throw PlanError.notFound(
                "service \(service.name) selects no pods (no selector); forward a pod instead: ktctl forward pod/NAME")
        }
        let targetPort: Int? =
            switch port.targetPort {
            case nil: port.port
            case .int(let number)?: number
            case .string?: nil
            }
        return (
            .service(name: service.name, port: port.port, portName: port.name, targetPort: targetPort),
            local ?? port.port
        )
    }

    /// The route to a pod's port and the local port.
    public static func route(pod: Pod, ports: String?) throws -> (route: ForwardRoute, local: Int) {
        let declared = (pod.spec?.containers ?? []).flatMap { $0.ports ?? [] }.filter {
            ($0.protocol ?? "TCP") == "TCP"
        }
        if let ports {
            let (local, remote) = try parsePorts(ports)
            guard let remote else { return (.pod(name: pod.name, port: local), local) }
            if let number = Int(remote) { return (.pod(name: pod.name, port: number), local) }
            guard let named = declared.first(where: { $0.name == remote }) else {
                throw PlanError.badFlag("PORTS", "pod \(pod.name) declares no port named '\(remote)'")
            }
            return (.pod(name: pod.name, port: named.containerPort), local)
        }
        guard declared.count == 1, let only = declared.first else {
            throw PlanError.ambiguous(
                "pod \(pod.name) declares \(declared.count) TCP ports; name one: ktctl forward pod/\(pod.name) LOCAL:PORT"
            )
        }
        return (.pod(name: pod.name, port: only.containerPort), only.containerPort)
    }

    /// A ready pod behind a Service, and its port, from the Service's Endpoints; `avoiding` a pod that just failed
    /// when another is ready.
    public static func pick(
        _ endpoints: Endpoints, portName: String?, targetPort: Int?, avoiding: String?
    ) -> (pod: String, port: Int)? {
        var choices: [(String, Int)] = []
        for subset in endpoints.subsets ?? [] {
            let ports = subset.ports ?? []
            let port =
                ports.first { $0.name == portName && ($0.protocol ?? "TCP") == "TCP" }?.port
                ?? (ports.count == 1 ? ports.first?.port : nil) ?? targetPort
            guard let port else { continue }
            for address in subset.addresses ?? [] {
                guard let reference = address.targetRef, reference.kind ?? "Pod" == "Pod", let name = reference.name
                else { continue }
                choices.append((name, port))
            }
        }
        choices.sort { $0.0 < $1.0 }
        return choices.first { $0.0 != avoiding } ?? choices.first
    }
}

/// `ktctl forward`: like `kubectl port-forward`, but every local connection gets its own stream (a dropped one costs
/// only that connection) and a Service's connections follow it to another ready pod when its pod goes away.
public enum ForwardCommand {
    public static func run(_ options: ForwardOptions, logger: Logger, print: @escaping @Sendable (String) -> Void)
        async throws
    {
        let config = try Kubeconfig.load(explicitPath: options.cluster.kubeconfig)
        let access = try config.access(context: options.cluster.context, namespace: options.cluster.namespace)
        let client = try KubeClient(access: access, logger: logger)
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        defer {
            Task {
                await client.shutdown()
                try? await group.shutdownGracefully()
            }
        }
        let namespace = access.namespace
        try await Permissions.require(
            Permissions.forward, command: "forward", client: client, namespace: namespace, changes: false)

        // The plan: a Service first (a bare NAME names one if it exists), else a pod.
        let target = try WorkloadTarget.parse(options.target, allowPods: true)
        let route: ForwardRoute
        let local: Int
        switch target {
        case .service(let name):
            if let service = try await optional({
                try await client.get(Service.self, name: name, namespace: namespace)
            }) {
                (route, local) = try ForwardPlan.route(service: service, ports: options.ports)
            } else if !options.target.contains("/"),
                let pod = try await optional({ try await client.get(Pod.self, name: name, namespace: namespace) })
            {
                (route, local) = try ForwardPlan.route(pod: pod, ports: options.ports)
            } else {
                throw PlanError.notFound("there is no service \(name) in namespace \(namespace)")
            }
        case .pod(let name):
            guard let pod = try await optional({ try await client.get(Pod.self, name: name, namespace: namespace) })
            else { throw PlanError.notFound("there is no pod \(name) in namespace \(namespace)") }
            (route, local) = try ForwardPlan.route(pod: pod, ports: options.ports)
        case .deployment:
            throw PlanError.badFlag("target", "forward takes svc/NAME, pod/NAME or NAME")
        }

        let forwarder = Forwarder(
            client: client, namespace: namespace, route: route, waitForPod: options.waitForPod, logger: logger,
            print: print)
        let first = try await forwarder.resolve(avoiding: nil, deadline: .now + .seconds(10))
        let following = Task { await forwarder.follow() }
        defer { following.cancel() }
        let server: Channel
        do {
            server = try await ServerBootstrap(group: group)
                .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
                .childChannelOption(.tcpOption(.tcp_nodelay), value: 1)
                .childChannelOption(.allowRemoteHalfClosure, value: true)
                .childChannelOption(.autoRead, value: false)
                .childChannelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHandler(OnActive { forwarder.accepted($0) })
                    }
                }
                .bind(host: options.address, port: local).get()
        } catch {
            throw ConnectError.other(
                "cannot listen on \(options.address):\(local) (\(error)); choose another local port (LOCAL:\(route))")
        }
        print(
            """
            ktctl: forwarding \(options.address):\(local) → \(route) in namespace \(namespace)
              now        pod \(first.pod):\(first.port)
              stop       Ctrl-C
            """)
        let board = statusBoard(
            options, access: access, route: route, local: local, forwarder: forwarder)
        defer { board?.stop() }
        let trap = SignalTrap()
        trap.install()
        let stopped = group.next().makePromise(of: Int32.self)
        trap.handle(first: { stopped.succeed($0) }, second: { _ in _exit(130) })
        let number = try await stopped.futureResult.get()
        print("ktctl: \(SignalTrap.name(number)): stopping")
        try? await server.close()
        let carried = forwarder.counts
        print("ktctl: the forward has ended (\(carried.connections) connections, \(carried.failed) failed)")
    }

    /// What `ktctl status` shows of the forward: the route, the pod of the moment, the connections carried; nil when
    /// the state directory cannot be made (the forward works without it).
    static func statusBoard(
        _ options: ForwardOptions, access: ClusterAccess, route: ForwardRoute, local: Int, forwarder: Forwarder
    ) -> StatusBoard? {
        let state = StateDirectory(options.stateDirectory)
        guard (try? state.prepare()) != nil else { return nil }
        let process = ProcessIdentity.current
        var status = SessionStatus(
            command: "forward", process: process, session: "", user: SessionIdentity.currentUser,
            host: ProcessInfo.processInfo.hostName, started: Date())
        status.phase = "ready"
        status.mode = "forward"
        status.cluster = .init(
            server: access.server.absoluteString, context: access.contextName, namespace: access.namespace)
        let name: String
        switch route {
        case .pod(let pod, _): name = "pod/\(pod)"
        case .service(let service, _, _, _): name = service
        }
        status.services = [
            SessionStatus.ServiceUse(
                name: name, namespace: access.namespace, state: "forwarded",
                detail: "\(options.address):\(local) → \(route)")
        ]
        let board = StatusBoard(path: state.statusFile(command: "forward", pid: process.pid), status: status)
        board.sample { status in
            // The meter sees the connections that reached a pod; forward's own count has every one accepted.
            let counts = forwarder.counts
            var traffic = SessionStatus.Traffic(forwarder.meter.snapshot)
            traffic.flowsOpened = counts.connections
            traffic.flowsRefused = counts.failed
            status.traffic = traffic
            if let now = forwarder.currentPod, !status.services.isEmpty {
                status.services[0].ports = ["now pod \(now.pod):\(now.port)"]
            }
        }
        board.start()
        return board
    }

    /// nil for 404, the error otherwise.
    static func optional<T: Sendable>(_ body: () async throws -> T) async throws -> T? {
        do {
            return try await body()
        } catch let error as KubeAPIError where error.reason == .notFound {
            return nil
        }
    }
}

/// Carries local connections: each gets a port-forward stream to the route's pod of the moment.
final class Forwarder: Sendable {
    struct State {
        var current: (pod: String, port: Int)?
        /// The pod last said to be used.
        var announced: String?
        var connections = 0
        var failed = 0
    }

    let client: KubeClient
    let namespace: String
    let route: ForwardRoute
    let waitForPod: Duration
    let logger: Logger
    let print: @Sendable (String) -> Void
    /// Connections carried and their bytes (`ktctl status`).
    let meter = TrafficMeter()
    private let state = NIOLockedValueBox(State())

    init(
        client: KubeClient, namespace: String, route: ForwardRoute, waitForPod: Duration, logger: Logger,
        print: @escaping @Sendable (String) -> Void
    ) {
        self.client = client
        self.namespace = namespace
        self.route = route
        self.waitForPod = waitForPod
        self.logger = logger
        self.print = print
    }

    var counts: (connections: Int, failed: Int) { state.withLockedValue { ($0.connections, $0.failed) } }

    /// The pod connections go to now (a Service's ready pod of the moment).
    var currentPod: (pod: String, port: Int)? {
        if case .pod(let name, let port) = route { return (name, port) }
        return state.withLockedValue { $0.current }
    }

    /// The pod (and port) to use now; for a Service, the current one unless it just failed, else a ready one from
    /// the Endpoints, waited for until `deadline`.
    func resolve(avoiding failed: String?, deadline: ContinuousClock.Instant) async throws -> (pod: String, port: Int) {
        switch route {
        case .pod(let name, let port):
            return (name, port)
        case .service(let name, _, let portName, let targetPort):
            if let current = state.withLockedValue({ $0.current }), current.pod != failed { return current }
            var waited = false
            while true {
                let endpoints = try? await client.get(Endpoints.self, name: name, namespace: namespace)
                if let endpoints,
                    let picked = ForwardPlan.pick(
                        endpoints, portName: portName, targetPort: targetPort, avoiding: failed),
                    picked.pod != failed || ContinuousClock.now >= deadline - .seconds(1)
                {
                    let previous = state.withLockedValue { state -> String? in
                        defer {
                            state.current = picked
                            state.announced = picked.pod
                        }
                        return state.announced
                    }
                    if let previous, previous != picked.pod {
                        print("ktctl: forward: now pod \(picked.pod):\(picked.port) (was \(previous))")
                    }
                    return picked
                }
                guard ContinuousClock.now < deadline else {
                    throw ConnectError.other("service \(name) has no ready pod")
                }
                if !waited {
                    waited = true
                    print("ktctl: forward: waiting for a ready pod of service \(name)")
                }
                try await Task.sleep(for: .milliseconds(250))
            }
        }
    }

    /// For a Service: watches its Endpoints, and when the pod in use leaves their ready addresses (deleted,
    /// restarting, unready), new connections go to another ready pod at once instead of finding out by failing.
    func follow() async {
        guard case .service(let name, _, let portName, let targetPort) = route else { return }
        let updates = client.watchContinuously(
            Endpoints.self, namespace: namespace, options: ListOptions(fieldSelector: "metadata.name=\(name)"))
        do {
            for try await update in updates {
                let endpoints: Endpoints?
                switch update {
                case .listed(let items): endpoints = items.first
                case .event(.deleted): endpoints = nil
                case .event(let event): endpoints = event.object
                }
                let ready = Set(
                    (endpoints?.subsets ?? []).flatMap { $0.addresses ?? [] }.compactMap { $0.targetRef?.name })
                let gone = state.withLockedValue { state -> String? in
                    guard let current = state.current, !ready.contains(current.pod) else { return nil }
                    state.current = nil
                    return current.pod
                }
                if let gone, let endpoints,
                    let next = ForwardPlan.pick(endpoints, portName: portName, targetPort: targetPort, avoiding: gone),
                    next.pod != gone
                {
                    let previous = state.withLockedValue { state -> String? in
                        defer {
                            state.current = next
                            state.announced = next.pod
                        }
                        return state.announced
                    }
                    print("ktctl: forward: now pod \(next.pod):\(next.port) (was \(previous ?? gone))")
                }
            }
        } catch {
            logger.debug("forward: the watch of \(name)'s endpoints ended: \(error); connections find out by failing")
        }
    }

    /// A local connection: a stream to the pod, tried again on another (or the same, restarted) pod while the route
    /// has none, until `waitForPod`; closed if none comes.
    func accepted(_ local: Channel) {
        state.withLockedValue { $0.connections += 1 }
        Task {
            let deadline = ContinuousClock.now + waitForPod
            var failed: String?
            var used: String?
            var lastError: (any Error)?
            while ContinuousClock.now < deadline, local.isActive {
                do {
                    let target = try await resolve(avoiding: failed, deadline: deadline)
                    used = target.pod
                    // A pod on its way out (its deletion not yet in the Endpoints watched) would take the
                    // connection and drop it: another is waited for instead.
                    let pod = try await client.get(Pod.self, name: target.pod, namespace: namespace)
                    if pod.raw["metadata"]?["deletionTimestamp"] != nil || pod.status?.isReady != true {
                        throw ConnectError.other("pod \(target.pod) is not ready or is terminating")
                    }
                    let forwarder = PortForwarder(
                        client: client, pod: target.pod, namespace: namespace, port: UInt16(target.port))
                    let remote = try await forwarder.connect(on: local.eventLoop)
                    try await local.eventLoop.submit { [meter] in try meter.attach(to: local, side: .local) }.get()
                    try await GlueHandler.join(local, remote).get()
                    return
                } catch is CancellationError {
                    break
                } catch {
                    lastError = error
                    logger.debug("forward: \(error)")
                    if case .service = route, let used {
                        failed = used
                        state.withLockedValue { state in
                            if state.current?.pod == used { state.current = nil }
                        }
                    } else {
                        try? await Task.sleep(for: .milliseconds(500))
                    }
                    try? await Task.sleep(for: .milliseconds(100))
                }
            }
            state.withLockedValue { $0.failed += 1 }
            print("ktctl: forward: a connection to \(route) failed: \(lastError.map { "\($0)" } ?? "no pod"); closed")
            try? await local.close()
        }
    }
}

/// Hands a channel over once it is active, and leaves its pipeline.
final class OnActive: ChannelInboundHandler, RemovableChannelHandler, Sendable {
    typealias InboundIn = NIOAny
    let body: @Sendable (Channel) -> Void

    init(_ body: @escaping @Sendable (Channel) -> Void) { self.body = body }

    func channelActive(context: ChannelHandlerContext) {
        context.fireChannelActive()
        body(context.channel)
        context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
    }
}
