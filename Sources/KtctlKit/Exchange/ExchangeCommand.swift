import Foundation
import KtEngine
import KtTunnel
import KubeKit
import Logging
import NIOCore
import NIOPosix

/// `ktctl exchange`'s flags.
public struct ExchangeOptions: Sendable {
    public enum Mode: String, Sendable, CaseIterable {
        /// The Service selects a shadow pod; the workload is not touched.
        case selector
        /// The shadow carries the workload's labels and the workload scales to 0.
        case scale
    }

    public var cluster: ClusterOptions
    public var stateDirectory: String
    public var target: WorkloadTarget
    public var expose: [ExposedPort]
    public var mode: Mode = .selector
    /// Scale mode: how long to wait for the workload to be ready again on the way out.
    public var recoverWaitTime: Duration = .seconds(120)
    /// Go on when nothing listens on a local port yet.
    public var skipPortChecking = false
    public var leaseDuration = SessionLease.defaultDuration

    public init(cluster: ClusterOptions, stateDirectory: String, target: WorkloadTarget, expose: [ExposedPort]) {
        self.cluster = cluster
        self.stateDirectory = stateDirectory
        self.target = target
        self.expose = expose
    }
}

/// `ktctl exchange`: a Service's traffic to processes on this machine until Ctrl-C.
///
/// The plan (the Service, its ports, the workload, the lock, the local ports) is made before anything changes.
/// Then, each change journaled first: Lease → shadow pod → tunnel → the shadow listens on the target ports (reverse
/// forwards to 127.0.0.1) → the pod is Ready → only then the Service moves (selector mode: it selects the shadow,
/// the original selector recorded on it; scale mode: the workload scales to 0 while the shadow carries its labels).
/// Undone in reverse: the Service moves back (and its Endpoints follow) before the shadow stops answering, so no
/// request is lost at either switch.
public enum ExchangeCommand {
    public static func run(_ options: ExchangeOptions, logger: Logger, print: @escaping @Sendable (String) -> Void)
        async throws
    {
        var sessionOptions = Session.Options(
            command: "exchange", state: StateDirectory(options.stateDirectory), lockName: "exchange")
        sessionOptions.leaseDuration = options.leaseDuration
        // One exchange of a service per machine at a time; the cluster-wide lock is the Service's.
        sessionOptions.lockName = "exchange-\(options.cluster.namespace ?? "_")-\(options.target)"
            .replacingOccurrences(of: "/", with: "-")
        try await Session.run(sessionOptions, logger: logger, print: print) { session in
            try await exchange(options, session: session, logger: logger, print: print)
        }
        print("ktctl: the exchange has ended; the service is as it was and the shadow is removed")
    }

    static func exchange(
        _ options: ExchangeOptions, session: Session, logger: Logger, print: @escaping @Sendable (String) -> Void
    ) async throws {
        let cluster = try await session.connect(options.cluster)
        let client = cluster.client
        let namespace = cluster.namespace

        try await Permissions.require(
            Permissions.session + (options.mode == .selector ? Permissions.exchange : Permissions.scale),
            command: "exchange", client: client, namespace: namespace)

        // The plan.
        let services = try await client.list(Service.self, namespace: namespace).items
        let deployments = try await client.list(Deployment.self, namespace: namespace).items
        let resolved = try ExchangePlan.service(for: options.target, services: services, deployments: deployments)
        // `deploy/NAME` of a meshed Service's workload finds its stuntman (the Service itself selects the router).
        let named = MeshCommand.originalOfStuntman(resolved, services: services) ?? resolved
        // A meshed Service selects its router; its stuntman selects the workload's pods, and a scale-mode shadow
        // joins those (requests without a mesh header then reach this machine).
        let service =
            options.mode == .scale && MeshState.isMeshed(named)
            ? services.first(where: { $0.name == MeshState.stuntmanName(named.name) }) ?? named : named
        let selected = try await client.list(
            Pod.self, namespace: namespace,
            options: ListOptions(labelSelector: LabelSelector(matchLabels: service.spec?.selector ?? [:]).queryText)
        ).items
        let ports = try ExchangePlan.ports(options.expose, of: service, pods: selected)
        let workload =
            options.mode == .scale ? try ExchangePlan.workload(of: service, deployments: deployments) : nil
        if options.mode == .selector, ServiceLock.heldByKtConnect(service) {
            throw ConnectError.other(ServiceLock.ktConnectRefusal(service))
        }
        if options.mode == .selector, MeshState.isMeshed(service) {
            throw ConnectError.other(try await meshRefusal(service, client: client, namespace: namespace))
        }
        if options.mode == .selector, let holder = try await ServiceLock.holder(of: service, client: client) {
            throw ConnectError.other(
                "service \(service.name) is exchanged by \(holder) (its selector is theirs until they stop); nothing "
                    + "was changed. If that session is gone, `ktctl recover \(service.name)` restores the service")
        }
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        session.onStop("stop the event loops") { try? await group.shutdownGracefully() }
        if !options.skipPortChecking {
            try await ListeningShadow.checkLocalPorts(
                ports, what: { " for service \(service.name)'s port \($0.servicePort)" }, on: group.next())
        }
        // The cluster side: the shadow, its tunnel and its listeners, all before the Service moves.
        try await session.startLease(target: SessionTarget(service: named.name, mode: options.mode.rawValue))
        let target = randomTarget()
        var labels = ["kt-role": "shadow-exchange", "kt-target": target]
        if let workload { labels.merge(workload.spec?.template.metadata?.labels ?? [:]) { ours, _ in ours } }
        let spec = ShadowSpec(
            role: .exchange, podName: "\(workload?.name ?? service.name)-kt-exchange-\(session.identity.id)",
            labels: labels,
            annotations: [
                "kt-config": workload.map { "app=\($0.name),replicas=\($0.spec?.replicas ?? 1)" }
                    ?? "service=\(service.name)"
            ],
            ports: ExchangePlan.containerPorts(ports))
        var beforeDrain: (@Sendable () async -> Void)?
        if let workload {
            // Scale mode's way out: once the workload is back (the undo of the scale, below), the shadow loses the
            // workload's labels and the Service's Endpoints drop it; only then the drain starts to count.
            let carried = Array((workload.spec?.template.metadata?.labels ?? [:]).keys.filter { labels[$0] != nil })
            let podName = spec.podName
            beforeDrain = {
                var removal: [String: JSONValue] = [:]
                for key in carried where !["kt-role", "kt-target"].contains(key) { removal[key] = .null }
                _ = try? await client.patch(
                    Pod.self, name: podName, namespace: namespace,
                    .merge(.object(["metadata": .object(["labels": .object(removal)])])))
                await UndoRunner.waitForEndpoints(
                    of: service.name, namespace: namespace, without: podName, client: client, timeout: .seconds(10))
            }
        }
        session.status.update { $0.mode = options.mode.rawValue }
        let shadow = try await ListeningShadow.start(
            spec, ports: ports,
            use: .init(
                name: named.name, namespace: namespace, state: "exchanged",
                detail: "\(options.mode.rawValue) mode"
                    + (workload.map { ", deployment \($0.name) scaled to 0" } ?? "")
                    + (service.name == named.name ? "" : ", through its mesh's stuntman \(service.name)")),
            session: session, options: options.cluster, group: group, quiet: .seconds(1),
            drainTimeout: .seconds(5), logger: logger, print: print, beforeDrain: beforeDrain)

        // The switch.
        let switched: String
        if let workload {
            let replicas = workload.spec?.replicas ?? 1
            let reference = ObjectRef(Deployment.resource, namespace: namespace, name: workload.name)
            try session.record(
                "scale \(reference) from \(replicas) to 0",
                undo: .scaleBack(
                    reference, replicas: replicas, waitSeconds: Int(options.recoverWaitTime.components.seconds)))
            try await ScaleLock.take(
                workload.name, namespace: namespace, replicas: replicas, lease: cluster.lease?.name ?? "",
                holder: "\(session.identity.holder) (exchange)", client: client)
            switched = "deployment \(workload.name) scaled from \(replicas) to 0; the shadow carries its labels"
        } else {
            try await take(service, selecting: ["kt-target": target], shadow: spec.podName, session: session)
            switched = "the service selects the shadow (its own selector is kept in the kt-selector annotation)"
        }
        if !(await UndoRunner.waitForEndpoints(
            of: service.name, namespace: namespace, with: spec.podName, client: client, timeout: .seconds(15)))
        {
            print("ktctl: service \(service.name)'s endpoints do not list the shadow yet; it may not answer at once")
        }
        print(
            """
            ktctl: exchanging service \(named.name) in namespace \(namespace) (\(options.mode.rawValue) mode\(service.name == named.name ? "" : "; it is meshed: unrouted requests, through \(service.name)"))
              session    \(session.identity.id) (lease \(cluster.lease?.name ?? "?"))
              shadow     pod \(spec.podName) (\(shadow.podIP ?? "?"))
              traffic    \(ports.map { "\(service.name):\($0)" }.joined(separator: ", "))
              switched   \(switched)
              stop       Ctrl-C (the service moves back first, then the shadow goes)
            """)
        if options.mode == .selector {
            try await keep(service.name, selecting: ["kt-target": target], session: session, print: print)
        } else {
            try await session.waitUntilStopped()
        }
    }

    /// Why a selector-mode exchange cannot take a meshed Service: who meshes it, and what works instead.
    static func meshRefusal(_ service: Service, client: KubeClient, namespace: String) async throws -> String {
        let members = try await MeshState.members(of: service.name, namespace: namespace, client: client)
        return "service \(service.name) is meshed"
            + (members.isEmpty ? " (by no live session)" : " by \(MeshState.describe(members))")
            + " (its router holds the selector), so a selector-mode exchange cannot take it; nothing was changed. "
            + "`ktctl exchange deployment/<its workload> --mode scale` works with the mesh"
            + (members.isEmpty ? "; `ktctl recover \(service.name)` restores the service" : "")
    }

    /// A fresh `kt-target` value (kt-connect's twenty lower-case letters).
    static func randomTarget() -> String {
        let letters = Array("abcdefghijklmnopqrstuvwxyz")
        var generator = SystemRandomNumberGenerator()
        return String((0..<20).map { _ in letters[Int(generator.next(upperBound: UInt(letters.count)))] })
    }

    /// Takes the Service for the session: journaled first, then its selector replaced and the lock and original
    /// recorded on it, with its resourceVersion (a concurrent taker makes one of the two fail and re-check).
    static func take(_ service: Service, selecting selector: [String: String], shadow: String, session: Session)
        async throws
    {
        guard let cluster = session.cluster, let lease = cluster.lease else { preconditionFailure("take before lease") }
        let client = cluster.client
        try session.record(
            "point service/\(service.name) in \(cluster.namespace) at the shadow",
            undo: .restoreSelector(
                namespace: cluster.namespace, service: service.name, lease: lease.name, shadowPod: shadow))
        var current = service
        for _ in 0..<5 {
            if ServiceLock.heldByKtConnect(current) {
                throw ConnectError.other(ServiceLock.ktConnectRefusal(current))
            }
            if MeshState.isMeshed(current) {
                throw ConnectError.other(try await meshRefusal(current, client: client, namespace: cluster.namespace))
            }
            if let holder = try await ServiceLock.holder(of: current, client: client), holder.lease != lease.name {
                throw ConnectError.other(
                    "service \(service.name) was just taken by \(holder); nothing of it was changed")
            }
            let now = try await SessionLease.serverNow(client)
            do {
                _ = try await client.update(
                    ServiceLock.taken(
                        current, selector: selector, lease: lease.name,
                        holder: "\(session.identity.user)@\(session.identity.host) session \(session.identity.id)",
                        at: now))
                return
            } catch let error as KubeAPIError where error.reason == .conflict {
                current = try await client.get(Service.self, name: service.name, namespace: cluster.namespace)
            }
        }
        throw ConnectError.other("service \(service.name) kept changing while ktctl took it; try again")
    }

    /// While the session lives, a watch of the Service: if something else rewrites its selector, ours goes back
    /// (said once each time); a lock taken away (`ktctl recover`) or a deleted Service ends the session. Should the
    /// watch fail for good, a read each second does the same.
    static func keep(
        _ name: String, selecting selector: [String: String], owned: (@Sendable (Service) -> Bool)? = nil,
        what: String = "the shadow", session: Session, print: @escaping @Sendable (String) -> Void
    ) async throws {
        session.ready()
        guard let cluster = session.cluster, let lease = cluster.lease else { return }
        let client = cluster.client
        let owned = owned ?? { $0.metadata.annotations?[ServiceLock.lease] == lease.name }
        /// false: the session is over.
        func check(_ service: Service?) async -> Bool {
            guard let service else {
                session.stop(.failure("service \(name) was deleted"))
                return false
            }
            guard owned(service) else {
                session.stop(.failure("service \(name) is no longer this session's (`ktctl recover` restored it?)"))
                return false
            }
            if service.spec?.selector != selector {
                var ours = service
                ours.spec?.selector = selector
                if (try? await client.update(ours)) != nil {
                    print("ktctl: something rewrote service \(name)'s selector; it selects \(what) again")
                }
            }
            return true
        }
        do {
            let updates = client.watchContinuously(
                Service.self, namespace: cluster.namespace, options: ListOptions(fieldSelector: "metadata.name=\(name)")
            )
            for try await update in updates {
                switch update {
                case .listed(let services):
                    guard await check(services.first) else { return }
                case .event(.deleted):
                    guard await check(nil) else { return }
                case .event(let event):
                    guard let service = event.object, await check(service) else { return }
                }
            }
        } catch is CancellationError {
            throw CancellationError()
        } catch {
            session.logger.debug("the watch of service \(name) failed (\(error)); reading it each second instead")
        }
        while true {
            try await Task.sleep(for: .seconds(1))
            do {
                let service = try await client.get(Service.self, name: name, namespace: cluster.namespace)
                guard await check(service) else { return }
            } catch let error as KubeAPIError where error.reason == .notFound {
                _ = await check(nil)
                return
            } catch is CancellationError {
                throw CancellationError()
            } catch {
                continue
            }
        }
    }
}

/// Scale mode's record on the workload: its replica count before, and the session that scaled it (so `recover` and
/// `clean` can scale it back whoever left it).
public enum ScaleLock {
    public static let replicas = "ktctl.io/replicas"

    static func take(
        _ name: String, namespace: String, replicas count: Int, lease: String, holder: String, client: KubeClient
    ) async throws {
        for _ in 0..<5 {
            var deployment = try await client.get(Deployment.self, name: name, namespace: namespace)
            var annotations = deployment.metadata.annotations ?? [:]
            annotations[replicas] = String(count)
            annotations[ServiceLock.lease] = lease
            annotations[ServiceLock.holder] = holder
            deployment.metadata.annotations = annotations
            do {
                _ = try await client.update(deployment)
                break
            } catch let error as KubeAPIError where error.reason == .conflict {
                continue
            }
        }
        _ = try await client.scale(Deployment.self, name: name, namespace: namespace, to: 0)
    }
}
