import Foundation
import KtEngine
import KtTunnel
import KubeKit
import Logging
import NIOCore
import NIOPosix
import RouterKit

/// `ktctl mesh`'s flags.
public struct MeshOptions: Sendable {
    public enum Mode: String, Sendable, CaseIterable {
        /// A router takes the Service; requests with this developer's header come here, the rest to the original
        /// pods.
        case auto
        /// Only a shadow with the Service's selector and the version label (for Istio or another mesh to route).
        case manual
    }

    public var cluster: ClusterOptions
    public var stateDirectory: String
    public var target: WorkloadTarget
    public var expose: [ExposedPort]
    public var mode: Mode = .auto
    public var mark: VersionMark
    public var routerImage = MeshOptions.defaultRouterImage
    public var skipPortChecking = false
    public var leaseDuration = SessionLease.defaultDuration

    public static let defaultRouterImage = "kt-router:0.1.0"

    public init(
        cluster: ClusterOptions, stateDirectory: String, target: WorkloadTarget, expose: [ExposedPort],
        mark: VersionMark
    ) {
        self.cluster = cluster
        self.stateDirectory = stateDirectory
        self.target = target
        self.expose = expose
        self.mark = mark
    }
}

/// `--version-mark`: `value`, `key:` or `key:value` (kt-connect's forms); the header (auto mode) or label (manual) a
/// developer's requests carry. Without a value, five random letters.
public struct VersionMark: Sendable, Hashable, CustomStringConvertible {
    public var key: String
    public var value: String

    public static let defaultKey = "VERSION"

    public init(key: String = VersionMark.defaultKey, value: String) {
        self.key = key
        self.value = value
    }

    public var description: String { "\(key): \(value)" }

    public static func parse(_ text: String?) throws -> VersionMark {
        let random = ExchangeCommand.randomTarget().prefix(5)
        guard let text, !text.isEmpty else { return VersionMark(value: String(random)) }
        let parts = text.split(separator: ":", maxSplits: 1, omittingEmptySubsequences: false).map(String.init)
        let key = parts.count == 2 ? parts[0] : defaultKey
        let value = parts.count == 2 ? (parts[1].isEmpty ? String(random) : parts[1]) : parts[0]
        guard RouterFlags.isToken(key), key.count <= 63,
            key.range(of: #"^[A-Za-z][A-Za-z0-9_-]*$"#, options: .regularExpression) != nil
        else {
            throw PlanError.badFlag(
                "--version-mark", "'\(key)' is not a header name (letters, digits, '-' and '_', a letter first)")
        }
        guard value.count <= 30,
            value.range(of: #"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"#, options: .regularExpression) != nil
        else {
            throw PlanError.badFlag(
                "--version-mark",
                "'\(value)' cannot be a mark: it names the shadow pod, so lower-case letters, digits and '-' (at most "
                    + "30)")
        }
        return VersionMark(key: key, value: value)
    }

    /// The label manual mode puts on the shadow: the key in lower case (label keys are case-sensitive, headers not).
    public var labelKey: String { key.lowercased() }
}

/// `ktctl mesh`: this developer's share of a Service's traffic, chosen by a header, until Ctrl-C; everyone else's
/// requests go on to the original pods.
///
/// Auto mode, each step through the session: Lease (labelled as a member of the Service's mesh, under the mesh
/// lock) → the shadow `<svc>-kt-mesh-<mark>` listening on the target ports → the first member makes the stuntman
/// Service and the router pod (its own account reads the members' Leases; no exec) and, once the router is Ready,
/// points the Service at it → the route (header, value, the shadow's address) written on the Lease, which the router
/// watches. The way out is the way in backwards: the route goes first (the router stops sending), the shadow drains,
/// and the last member out puts the Service back before the router and the stuntman go.
public enum MeshCommand {
    public static func run(_ options: MeshOptions, logger: Logger, print: @escaping @Sendable (String) -> Void)
        async throws
    {
        var sessionOptions = Session.Options(command: "mesh", state: StateDirectory(options.stateDirectory))
        sessionOptions.leaseDuration = options.leaseDuration
        sessionOptions.lockName = "mesh-\(options.cluster.namespace ?? "_")-\(options.target)-\(options.mark.value)"
            .replacingOccurrences(of: "/", with: "-")
        try await Session.run(sessionOptions, logger: logger, print: print) { session in
            try await mesh(options, session: session, logger: logger, print: print)
        }
        print("ktctl: the mesh has ended; your route and shadow are removed")
    }

    static func mesh(
        _ options: MeshOptions, session: Session, logger: Logger, print: @escaping @Sendable (String) -> Void
    ) async throws {
        let cluster = try await session.connect(options.cluster)
        let client = cluster.client
        let namespace = cluster.namespace
        try await Permissions.require(
            Permissions.session + (options.mode == .auto ? Permissions.mesh : Permissions.exchange), command: "mesh",
            client: client, namespace: namespace)

        // The plan.
        let services = try await client.list(Service.self, namespace: namespace).items
        let deployments = try await client.list(Deployment.self, namespace: namespace).items
        var service = try ExchangePlan.service(for: options.target, services: services, deployments: deployments)
        if let original = originalOfStuntman(service, services: services) { service = original }
        let originalSelector = ServiceLock.original(of: service)
        let selected = try await client.list(
            Pod.self, namespace: namespace,
            options: ListOptions(labelSelector: LabelSelector(matchLabels: originalSelector).queryText)
        ).items
        let ports = try ExchangePlan.ports(options.expose, of: service, pods: selected)
        let shadowName = MeshState.shadowName(service.name, mark: options.mark.value)
        if options.mode == .auto {
            if let udp = (service.spec?.ports ?? []).first(where: { ($0.protocol ?? "TCP") != "TCP" }) {
                throw ConnectError.other(
                    "service \(service.name) has a \(udp.protocol ?? "?") port (\(udp.port)), which a router cannot "
                        + "carry; use --mode manual, or `ktctl exchange`; nothing was changed")
            }
            if ServiceLock.heldByKtConnect(service) { throw ConnectError.other(ServiceLock.ktConnectRefusal(service)) }
            if let holder = try await ServiceLock.holder(of: service, client: client) {
                throw ConnectError.other(
                    "service \(service.name) is exchanged by \(holder) (its selector is theirs until they stop), so it "
                        + "cannot be meshed; nothing was changed. If that session is gone, `ktctl recover "
                        + "\(service.name)` restores the service")
            }
        }
        if let existing = try? await client.get(Pod.self, name: shadowName, namespace: namespace) {
            let who = existing.metadata.annotations?[SessionLabels.user].map {
                "\($0)@\(existing.metadata.annotations?[SessionLabels.host] ?? "?")"
            }
            throw ConnectError.other(
                "the mark \(options.mark.value) is taken on service \(service.name) (pod \(shadowName)"
                    + (who.map { " of \($0)" } ?? "") + "); choose another --version-mark; nothing was changed")
        }
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        session.onStop("stop the event loops") { try? await group.shutdownGracefully() }
        if !options.skipPortChecking {
            try await ListeningShadow.checkLocalPorts(
                ports, what: { " for service \(service.name)'s port \($0.servicePort)" }, on: group.next())
        }

        try await session.startLease(
            target: SessionTarget(
                service: service.name, mode: options.mode.rawValue,
                mark: options.mode == .auto
                    ? "\(options.mark.key): \(options.mark.value)" : "\(options.mark.labelKey)=\(options.mark.value)"))
        guard let lease = cluster.lease else { preconditionFailure("no lease after startLease") }
        switch options.mode {
        case .manual:
            var labels = originalSelector
            labels["kt-role"] = "shadow-mesh"
            labels[options.mark.labelKey] = options.mark.value
            let spec = ShadowSpec(
                role: .mesh, podName: shadowName, labels: labels,
                annotations: ["kt-config": "service=\(shadowName)"], ports: ExchangePlan.containerPorts(ports))
            session.status.update { $0.mode = "manual" }
            let shadow = try await ListeningShadow.start(
                spec, ports: ports,
                use: .init(
                    name: service.name, namespace: namespace, state: "meshed",
                    detail: "manual mode, label \(options.mark.labelKey)=\(options.mark.value)"),
                session: session, options: options.cluster, group: group, quiet: .seconds(1),
                drainTimeout: .seconds(5), logger: logger, print: print)
            print(
                """
                ktctl: meshing service \(service.name) in namespace \(namespace) (manual mode)
                  session    \(session.identity.id) (lease \(lease.name))
                  shadow     pod \(shadowName) (\(shadow.podIP ?? "?")), labels \(options.mark.labelKey)=\(options.mark.value) plus the service's selector
                  traffic    the service now balances between its pods and the shadow; route with your mesh on the label (an Istio DestinationRule subset on \(options.mark.labelKey): \(options.mark.value))
                  stop       Ctrl-C (the shadow is removed)
                """)
            try await session.waitUntilStopped()
        case .auto:
            try await auto(
                options, service: service, ports: ports, shadowName: shadowName, session: session, lease: lease,
                group: group, logger: logger, print: print)
        }
    }

    /// When `service` is a stuntman (what `deploy/NAME` finds while its Service is meshed), the meshed Service.
    static func originalOfStuntman(_ service: Service, services: [Service]) -> Service? {
        guard service.name.hasSuffix("-kt-stuntman"),
            service.metadata.labels?[SessionLabels.managedBy] == SessionLabels.manager
        else { return nil }
        let name = String(service.name.dropLast("-kt-stuntman".count))
        return services.first { $0.name == name }
    }

    static func auto(
        _ options: MeshOptions, service: Service, ports: [PortMapping], shadowName: String, session: Session,
        lease: SessionLease, group: EventLoopGroup, logger: Logger, print: @escaping @Sendable (String) -> Void
    ) async throws {
        guard let cluster = session.cluster else { return }
        let client = cluster.client
        let namespace = cluster.namespace
        // Membership first, journaled: the last one out (this session, a crash's recovery, `clean`) restores.
        try session.record(
            "join the mesh of service/\(service.name) in \(namespace)",
            undo: .leaveMesh(namespace: namespace, service: service.name, lease: lease.name))
        let spec = ShadowSpec(
            role: .mesh, podName: shadowName,
            labels: ["kt-role": "shadow-mesh", "kt-target": ExchangeCommand.randomTarget()],
            annotations: ["kt-config": "service=\(shadowName)"], ports: ExchangePlan.containerPorts(ports))
        session.status.update { $0.mode = "auto" }
        let shadow = try await ListeningShadow.start(
            spec, ports: ports,
            use: .init(
                name: service.name, namespace: namespace, state: "meshed",
                detail: "auto mode, header \(options.mark.key): \(options.mark.value)"),
            session: session, options: options.cluster, group: group, quiet: .seconds(1),
            drainTimeout: .seconds(5), logger: logger, print: print)
        guard let shadowIP = shadow.podIP else {
            throw ConnectError.other("the shadow pod \(shadowName) has no IP address yet; try again")
        }
        let joined = try await join(
            service.name, options: options, session: session, lease: lease.name, print: print)

        // The route, on the Lease; withdrawn first on the way out (before the shadow drains).
        let route = MeshRoute(header: options.mark.key, value: options.mark.value, name: shadowName, host: shadowIP)
        _ = try await client.patch(
            Lease.self, name: lease.name, namespace: namespace,
            .merge(["metadata": ["annotations": [.init(MeshRoute.annotation): .string(route.encoded)]]]))
        session.onStop("withdraw the route from the router") {
            _ = try? await client.patch(
                Lease.self, name: lease.name, namespace: namespace,
                .merge(["metadata": ["annotations": [.init(MeshRoute.annotation): .null]]]))
            // The router's watch follows in milliseconds; the drain then waits for what is still in flight.
            try? await Task.sleep(for: .milliseconds(300))
        }
        let confirmed = await waitForRoute(
            lease: lease.name, service: service.name, client: client, on: group.next(), timeout: .seconds(10))
        print(
            """
            ktctl: meshing service \(service.name) in namespace \(namespace) (auto mode)
              session    \(session.identity.id) (lease \(lease.name))
              shadow     pod \(shadowName) (\(shadowIP))
              router     pod \(MeshState.routerName(service.name)) (\(joined)); other requests go to service \(MeshState.stuntmanName(service.name)) (the original pods)
              traffic    \(ports.map { "\(service.name):\($0.servicePort) → 127.0.0.1:\($0.local)" }.joined(separator: ", "))
              header     send '\(options.mark.key): \(options.mark.value)' to reach this machine\(confirmed ? "" : " (the router has not confirmed the route yet)")
              stop       Ctrl-C (your route goes first; the last one out restores the service)
            """)
        // The router is shared and belongs to no session: should its pod go (deleted by hand, its node lost), any
        // member makes it again (under the mesh lock, so only one does), and it reads every live route back.
        let supervisor = Task {
            while !Task.isCancelled {
                try? await Task.sleep(for: .seconds(2))
                guard !Task.isCancelled else { return }
                do {
                    _ = try await client.get(Pod.self, name: MeshState.routerName(service.name), namespace: namespace)
                } catch let error as KubeAPIError where error.reason == .notFound {
                    print("ktctl: the router pod \(MeshState.routerName(service.name)) is gone; making it again")
                    do {
                        _ = try await join(
                            service.name, options: options, session: session, lease: lease.name, print: print)
                    } catch {
                        print("ktctl: could not make the router again (\(error)); trying again in 2 s")
                    }
                } catch {
                    continue
                }
            }
        }
        session.beforeUndo { supervisor.cancel() }
        let meshed = try await client.get(Service.self, name: service.name, namespace: namespace)
        try await ExchangeCommand.keep(
            service.name, selecting: meshed.spec?.selector ?? [:], owned: MeshState.isMeshed,
            what: "the router", session: session, print: print)
    }

    /// Joins the Service's mesh under the mesh lock: the Lease labelled a member; for the first member, the stuntman
    /// and the router made (anything a crashed mesh left first removed), the router Ready, and the Service pointed at
    /// it. Returns how the router was found.
    static func join(
        _ name: String, options: MeshOptions, session: Session, lease: String,
        print: @escaping @Sendable (String) -> Void
    ) async throws -> String {
        guard let cluster = session.cluster else { return "?" }
        let client = cluster.client
        let namespace = cluster.namespace
        let release = try await MeshState.lock(
            name, namespace: namespace, holder: "\(session.identity.holder) (joining)", client: client)
        do {
            let result = try await joinLocked(
                name, options: options, session: session, lease: lease, client: client, namespace: namespace,
                print: print)
            await release()
            return result
        } catch {
            await release()
            throw error
        }
    }

    static func joinLocked(
        _ name: String, options: MeshOptions, session: Session, lease: String, client: KubeClient, namespace: String,
        print: @escaping @Sendable (String) -> Void
    ) async throws -> String {
        _ = try await client.patch(
            Lease.self, name: lease, namespace: namespace,
            .merge(["metadata": ["labels": [.init(MeshRoute.serviceLabel): .string(name)]]]))
        let service = try await client.get(Service.self, name: name, namespace: namespace)
        if ServiceLock.heldByKtConnect(service) { throw ConnectError.other(ServiceLock.ktConnectRefusal(service)) }
        if let holder = try await ServiceLock.holder(of: service, client: client) {
            throw ConnectError.other("service \(name) was just taken by \(holder); nothing of it was changed")
        }
        let routerName = MeshState.routerName(name)
        if MeshState.isMeshed(service) {
            let router = try? await client.get(Pod.self, name: routerName, namespace: namespace)
            if router != nil, router?.metadata.deletionTimestamp == nil {
                return "shared with the mesh's other members"
            }
            // The router went (deleted by hand, a node lost): made again with the Service's selector (and the
            // stuntman, should it have gone too).
            let target = service.spec?.selector?["kt-target"] ?? ExchangeCommand.randomTarget()
            let stuntman: Service
            if let existing = try? await client.get(
                Service.self, name: MeshState.stuntmanName(name), namespace: namespace)
            {
                stuntman = existing
            } else {
                stuntman = try await makeStuntman(service, client: client, namespace: namespace)
            }
            if router != nil {
                // Still terminating: made again once it has gone.
                let deadline = ContinuousClock.now + .seconds(30)
                while (try? await client.get(Pod.self, name: routerName, namespace: namespace)) != nil {
                    guard ContinuousClock.now < deadline else {
                        throw ConnectError.other("the router pod \(routerName) has been terminating for 30 s")
                    }
                    try await Task.sleep(for: .milliseconds(200))
                }
            }
            try await makeRouter(
                service, target: target, options: options, client: client, namespace: namespace, print: print,
                stuntmanAddress: stuntman.spec?.clusterIP)
            return "made again: it was gone"
        }
        // The first member. Whatever a crashed mesh left (no member is live: we hold the lock) goes first.
        _ = await MeshState.tearDown(name, namespace: namespace, client: client, settle: .zero)
        let stuntman = try await makeStuntman(service, client: client, namespace: namespace)
        let target = ExchangeCommand.randomTarget()
        try await makeRouter(
            service, target: target, options: options, client: client, namespace: namespace, print: print,
            stuntmanAddress: stuntman.spec?.clusterIP)
        var current = service
        for _ in 0..<5 {
            let now = try await SessionLease.serverNow(client)
            var taken = current
            var annotations = taken.metadata.annotations ?? [:]
            annotations[ServiceLock.originalSelector] = ServiceLock.encode(ServiceLock.original(of: current))
            annotations[MeshState.annotation] = routerName
            annotations[ServiceLock.holder] = "ktctl mesh (router \(routerName))"
            annotations[ServiceLock.since] = RFC3339.format(now)
            taken.metadata.annotations = annotations
            taken.spec?.selector = ["kt-target": target]
            do {
                _ = try await client.update(taken)
                _ = await UndoRunner.waitForEndpoints(
                    of: name, namespace: namespace, with: routerName, client: client, timeout: .seconds(15))
                return "made for this mesh"
            } catch let error as KubeAPIError where error.reason == .conflict {
                current = try await client.get(Service.self, name: name, namespace: namespace)
                if ServiceLock.heldByKtConnect(current) || current.metadata.annotations?[ServiceLock.lease] != nil {
                    throw ConnectError.other(
                        "service \(name) was just taken by someone else; nothing of it was changed")
                }
            }
        }
        throw ConnectError.other("service \(name) kept changing while ktctl meshed it; try again")
    }

    /// `<svc>-kt-stuntman`: the Service's ports, selecting the original pods (the router's way to them).
    static func makeStuntman(_ service: Service, client: KubeClient, namespace: String) async throws -> Service {
        let stuntman = Service(
            metadata: ObjectMeta(
                name: MeshState.stuntmanName(service.name), namespace: namespace,
                labels: [
                    SessionLabels.managedBy: SessionLabels.manager, SessionLabels.role: "mesh-stuntman",
                    MeshRoute.serviceLabel: service.name, "control-by": "kt",
                ],
                annotations: ["kt-config": "service=\(service.name)"]),
            spec: Service.Spec(
                selector: ServiceLock.original(of: service),
                ports: (service.spec?.ports ?? []).map {
                    ServicePort(name: $0.name, port: $0.port, targetPort: $0.targetPort, protocol: $0.protocol)
                }))
        return try await client.create(stuntman, namespace: namespace)
    }

    /// `<svc>-kt-router` with the Service's target ports, under its own account, and waits until it is Ready (it
    /// opens its ports once it has read the routes).
    static func makeRouter(
        _ service: Service, target: String, options: MeshOptions, client: KubeClient, namespace: String,
        print: @escaping @Sendable (String) -> Void, stuntmanAddress: String? = nil
    ) async throws {
        let pods = try await client.list(
            Pod.self, namespace: namespace,
            options: ListOptions(
                labelSelector: LabelSelector(matchLabels: ServiceLock.original(of: service)).queryText)
        ).items
        let mappings = try (service.spec?.ports ?? []).map {
            try ExchangePlan.mapping(ExposedPort(local: $0.port), to: $0, of: service, pods: pods)
        }
        let pod = try MeshPlan.routerPod(
            service: service.name, namespace: namespace, target: target, mappings: mappings,
            image: options.routerImage, stuntmanAddress: stuntmanAddress, cluster: options.cluster)
        do {
            _ = try await client.create(pod, namespace: namespace)
        } catch let error as KubeAPIError where error.reason == .forbidden && "\(error)".contains("serviceaccount") {
            throw ConnectError.other(
                "the router needs its service account: ask a cluster admin to apply deploy/rbac/kt-router.yaml in "
                    + "namespace \(namespace) (kubectl apply -n \(namespace) -f deploy/rbac/kt-router.yaml): \(error)")
        }
        print("ktctl: waiting for the router pod \(pod.name) to be ready")
        let deadline = ContinuousClock.now + options.cluster.timeout
        var said = ContinuousClock.now
        while ContinuousClock.now < deadline {
            let current = try await client.get(Pod.self, name: pod.name, namespace: namespace)
            if current.status?.isReady == true { return }
            let waiting = (current.raw["status"]?["containerStatuses"]?.arrayValue ?? []).compactMap {
                $0["state"]?["waiting"]
            }.first
            if let reason = waiting?["reason"]?.stringValue, ImagePull.failureReasons.contains(reason) {
                throw ConnectError.other(
                    "the router pod \(pod.name) cannot pull its image \(options.routerImage) (\(reason): "
                        + "\(waiting?["message"]?.stringValue ?? "")). "
                        + ImagePull.advice(
                            image: options.routerImage, flag: "--router-image", product: "kt-router", command: "mesh"))
            }
            if ContinuousClock.now - said > .seconds(5) {
                said = ContinuousClock.now
                print("ktctl: the router pod is \(current.status?.phase ?? "Pending") (still waiting)")
            }
            try await Task.sleep(for: .milliseconds(200))
        }
        throw ConnectError.other(
            "the router pod \(pod.name) was not ready within \(options.cluster.timeout) (`kubectl describe pod "
                + "\(pod.name) -n \(namespace)` says why; it needs the kt-router service account of "
                + "deploy/rbac/kt-router.yaml and the image \(options.routerImage))")
    }

    /// Asks the router (its `/routes`, through a port-forward) until it lists this session's route.
    static func waitForRoute(
        lease: String, service: String, client: KubeClient, on eventLoop: any EventLoop, timeout: Duration
    ) async -> Bool {
        let deadline = ContinuousClock.now + timeout
        let router = try? await client.get(Pod.self, name: MeshState.routerName(service))
        let health =
            router?.spec?.containers.first?.ports?.first(where: { $0.name == "kt-health" })?.containerPort
            ?? MeshState.healthPort(avoiding: [])
        let forwarder = PortForwarder(client: client, pod: MeshState.routerName(service), port: UInt16(health))
        while ContinuousClock.now < deadline {
            if let text = try? await RouterProbe.get("/routes", through: forwarder, on: eventLoop),
                text.contains("(session \(lease))")
            {
                return true
            }
            try? await Task.sleep(for: .milliseconds(200))
        }
        return false
    }
}

/// The router pod as an object (no I/O: tested as a value).
public enum MeshPlan {
    public static func routerPod(
        service: String, namespace: String, target: String, mappings: [PortMapping], image: String,
        stuntmanAddress: String?, cluster: ClusterOptions
    ) throws -> Pod {
        var seen: Set<Int> = []
        let unique = mappings.filter { seen.insert($0.targetPort).inserted }
        let portFlag = unique.map { "\($0.targetPort):\($0.servicePort)" }.joined(separator: ",")
        let stuntman = MeshState.stuntmanName(service)
        var names: Set<String> = []
        var containerPorts: [JSONValue] = unique.map { mapping in
            var entry: JSONValue = ["containerPort": .int(Int64(mapping.targetPort)), "protocol": "TCP"]
            if let name = mapping.targetName, names.insert(name).inserted { entry["name"] = .string(name) }
            return entry
        }
        let health = MeshState.healthPort(avoiding: unique.map(\.targetPort))
        containerPorts.append(["containerPort": .int(Int64(health)), "name": "kt-health"])
        var securityContext: JSONValue = [
            "runAsNonRoot": true, "runAsUser": 65532, "runAsGroup": 65532,
            "seccompProfile": ["type": "RuntimeDefault"],
        ]
        if unique.contains(where: { $0.targetPort < 1024 }) {
            // The Service's ports below 1024, bound without a capability (a namespaced, safe sysctl).
            securityContext["sysctls"] = [["name": "net.ipv4.ip_unprivileged_port_start", "value": "0"]]
        }
        var spec: JSONValue = [
            "serviceAccountName": "kt-router",
            "restartPolicy": "Always",
            "terminationGracePeriodSeconds": 5,
            "securityContext": securityContext,
            "containers": [
                [
                    "name": "router", "image": .string(image), "imagePullPolicy": .string(cluster.imagePullPolicy),
                    "args": [
                        "--service", .string(service), "--namespace", .string(namespace), "--port", .string(portFlag),
                        "--default", .string(stuntmanAddress.map { "\(stuntman)=\($0)" } ?? stuntman),
                        "--health-port", .string(String(health)),
                    ],
                    "ports": .array(containerPorts),
                    "readinessProbe": [
                        "httpGet": ["path": "/healthz", "port": .int(Int64(health))],
                        "periodSeconds": 2,
                    ],
                    "resources": ["requests": ["cpu": "50m", "memory": "32Mi"]],
                    "securityContext": [
                        "allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true,
                        "capabilities": ["drop": ["ALL"]],
                    ],
                ]
            ],
        ]
        if !cluster.nodeSelector.isEmpty {
            spec["nodeSelector"] = .object(cluster.nodeSelector.mapValues { .string($0) })
        }
        if let secret = cluster.imagePullSecret { spec["imagePullSecrets"] = [["name": .string(secret)]] }
        var labels: [String: JSONValue] = cluster.labels.mapValues { .string($0) }
        for (key, value) in [
            SessionLabels.managedBy: SessionLabels.manager, SessionLabels.role: "mesh-router",
            MeshRoute.serviceLabel: service, "kt-role": "router", "kt-target": target, "control-by": "kt",
        ] {
            labels[key] = .string(value)
        }
        var annotations: [String: JSONValue] = cluster.annotations.mapValues { .string($0) }
        annotations["kt-config"] = .string("service=\(service)")
        let document: JSONValue = [
            "apiVersion": "v1", "kind": "Pod",
            "metadata": [
                "name": .string(MeshState.routerName(service)), "labels": .object(labels),
                "annotations": .object(annotations),
            ],
            "spec": spec,
        ]
        return try Pod.decoding(document)
    }
}

/// One plain HTTP/1.0 GET to the router's health port through a port-forward (answered within 2 s, or an error).
enum RouterProbe {
    struct Timeout: Error {}

    static func get(_ path: String, through forwarder: PortForwarder, on eventLoop: any EventLoop) async throws
        -> String
    {
        let promise = eventLoop.makePromise(of: String.self)
        let collector = ResponseCollector(promise: promise)
        let timeout = eventLoop.scheduleTask(in: .seconds(2)) { collector.finish(.failure(Timeout())) }
        let channel: any Channel
        do {
            channel = try await forwarder.connect(on: eventLoop) { channel in
                try channel.pipeline.syncOperations.addHandler(collector)
            }
        } catch {
            timeout.cancel()
            eventLoop.execute { collector.finish(.failure(error)) }
            throw error
        }
        defer { channel.close(promise: nil) }
        _ = channel.setOption(ChannelOptions.autoRead, value: true)
        channel.read()
        channel.writeAndFlush(ByteBuffer(string: "GET \(path) HTTP/1.0\r\nHost: router\r\n\r\n"), promise: nil)
        defer { timeout.cancel() }
        return try await promise.futureResult.get()
    }

    /// Collects the response until its Content-Length is complete (or the stream ends).
    final class ResponseCollector: ChannelInboundHandler, @unchecked Sendable {
        typealias InboundIn = ByteBuffer
        var buffer = ByteBuffer()
        let promise: EventLoopPromise<String>
        var done = false

        init(promise: EventLoopPromise<String>) {
            self.promise = promise
        }

        /// On the channel's event loop; only the first outcome counts.
        func finish(_ result: Result<String, Error>) {
            guard !done else { return }
            done = true
            promise.completeWith(result)
        }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            var incoming = unwrapInboundIn(data)
            buffer.writeBuffer(&incoming)
            let text = String(buffer: buffer)
            if let split = text.range(of: "\r\n\r\n") {
                let head = text[..<split.lowerBound].lowercased()
                let length = head.split(separator: "\r\n").first { $0.hasPrefix("content-length:") }
                    .flatMap { Int($0.dropFirst("content-length:".count).trimmingCharacters(in: .whitespaces)) }
                let body = String(text[split.upperBound...])
                if let length, body.utf8.count >= length {
                    finish(.success(body))
                    return
                }
            }
            context.read()
        }

        func channelInactive(context: ChannelHandlerContext) {
            finish(.success(String(buffer: buffer)))
        }
    }
}
