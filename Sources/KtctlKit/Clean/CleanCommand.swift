import Foundation
import KubeKit
import Logging
import RouterKit

/// `ktctl clean`'s flags.
public struct CleanOptions: Sendable {
    public var cluster: ClusterOptions
    /// Where this machine's sessions keep their journals and pid files (`~/.kt`).
    public var stateDirectory: String
    /// A Lease not renewed for longer than this (or than its own duration, if that is longer) is stale. 0: each
    /// Lease's own duration.
    public var threshold: TimeInterval = 0
    public var dryRun = false
    /// Only this machine: journals and pid files of sessions that are gone; nothing in the cluster.
    public var localOnly = false
    /// Every namespace, not only the context's (or `-n`'s).
    public var allNamespaces = false

    public init(cluster: ClusterOptions, stateDirectory: String) {
        self.cluster = cluster
        self.stateDirectory = stateDirectory
    }
}

/// `ktctl clean`: what sessions that did not end cleanly (`kill -9`, a crash, a lost laptop) left behind, and
/// nothing else.
///
/// - On this machine: every journal whose process is verifiably gone is undone (resolv.conf restored if it still
///   holds what ktctl wrote, the session's cluster objects deleted), and stale pid files go. A live session's
///   journal is never touched, whatever its Lease looks like (a laptop that slept).
/// - In the cluster: a session is judged by its Lease alone, by the API server's clock (the `Date` of the answer
///   that listed it against `renewTime`, which sessions write in the server's clock too): stale Leases are deleted
///   with the session's objects. Objects whose session has no Lease are removed once older than the threshold (by
///   their server-written `creationTimestamp`). Laptop clocks never enter into it.
///
/// Every removal (or, dry, what would go) is printed. Exits non-zero with the reasons when it could not finish.
public enum CleanCommand {
    public static func run(_ options: CleanOptions, logger: Logger, print: @escaping @Sendable (String) -> Void)
        async throws
    {
        let state = StateDirectory(options.stateDirectory)
        let (found, unreadable) = Recovery.journals(state)
        var problems = unreadable
        var said = false
        func say(_ line: String) {
            said = true
            print("ktctl clean: \(line)")
        }
        var live: Set<String> = []
        for session in found where session.liveness == .alive {
            live.insert(session.record.session)
            say(
                "the \(session.record.command) session \(session.record.session) (pid \(session.record.process.pid)) "
                    + "is running; left alone")
        }
        let dead = found.filter { $0.liveness != .alive }

        guard !options.localOnly else {
            for session in dead {
                guard case .gone(let why) = session.liveness else { continue }
                for line in await Recovery.recover(session, client: nil, server: nil, why: why, dryRun: options.dryRun)
                {
                    say(line)
                }
            }
            for line in Recovery.removeStalePidFiles(state, dryRun: options.dryRun) { say(line) }
            if !said { say("nothing to clean on this machine") }
            return
        }

        let config = try Kubeconfig.load(explicitPath: options.cluster.kubeconfig)
        let access = try config.access(context: options.cluster.context, namespace: options.cluster.namespace)
        let client = try KubeClient(access: access, logger: logger)
        defer { Task { await client.shutdown() } }
        let server = access.server.absoluteString
        for session in dead {
            guard case .gone(let why) = session.liveness else { continue }
            let lines = await Recovery.recover(
                session, client: client, server: server, why: why, dryRun: options.dryRun)
            for line in lines {
                say(line)
                if line.hasPrefix("could not") { problems.append(line) }
            }
        }
        for line in Recovery.removeStalePidFiles(state, dryRun: options.dryRun) { say(line) }

        // The cluster: every Lease of ktctl in scope, judged by the server's clock.
        var namespaces: [String?] = options.allNamespaces ? [nil] : [access.namespace]
        if !options.allNamespaces {
            for session in dead {
                if let namespace = session.record.cluster?.namespace, !namespaces.contains(namespace) {
                    namespaces.append(namespace)
                }
            }
        }
        let verb = options.dryRun ? "would remove" : "removed"
        let managed = ListOptions(labelSelector: "\(SessionLabels.managedBy)=\(SessionLabels.manager)")
        for namespace in namespaces {
            let scope = namespace.map { "namespace \($0)" } ?? "every namespace"
            let leases: [Lease]
            let pods: [Pod]
            let secrets: [Secret]
            do {
                leases = try await client.list(
                    Lease.self, namespace: namespace, allNamespaces: namespace == nil, options: managed
                ).items
                pods = try await client.list(
                    Pod.self, namespace: namespace, allNamespaces: namespace == nil, options: managed
                ).items
                secrets = try await client.list(
                    Secret.self, namespace: namespace, allNamespaces: namespace == nil, options: managed
                ).items
            } catch {
                problems.append("cannot list ktctl's objects in \(scope): \(error)")
                continue
            }
            // A preview's Service (listing Services is not needed for a connect's clean, so not required).
            let ownedServices =
                (try? await client.list(
                    Service.self, namespace: namespace, allNamespaces: namespace == nil, options: managed
                ).items) ?? []
            let serverNow = try await SessionLease.serverNow(client)
            // Services and workloads an exchange holds for a session whose Lease is stale or gone go back first,
            // before that session's shadow is removed (the Service must not point at nothing).
            let staleLeases = Set(
                leases.filter { lease in
                    !live.contains(lease.metadata.labels?[SessionLabels.session] ?? "")
                        && SessionLease.verdict(lease, serverNow: serverNow, threshold: options.threshold).isStale
                }.map { "\($0.namespace ?? "")/\($0.name)" })
            let knownLeases = Set(leases.map { "\($0.namespace ?? "")/\($0.name)" })
            for line in await restoreHeld(
                namespace: namespace, stale: staleLeases, known: knownLeases, client: client, dryRun: options.dryRun)
            {
                say(line)
                if line.hasPrefix("could not") { problems.append(line) }
            }
            var leaseSessions: Set<String> = []
            for lease in leases {
                if let meshed = lease.metadata.labels?[MeshState.lockLabel] {
                    // A mesh lock: removed only once its holder has stopped renewing it.
                    guard SessionLease.verdict(lease, serverNow: serverNow, threshold: 0).isStale else { continue }
                    let object = ObjectRef(
                        Lease.resource, namespace: lease.namespace, name: lease.name, uid: lease.metadata.uid)
                    if let failure = await remove(object, client: client, dryRun: options.dryRun) {
                        problems.append(failure)
                    } else {
                        say("\(verb) \(object) (service \(meshed)'s mesh lock; its holder stopped renewing it)")
                    }
                    continue
                }
                let session = lease.metadata.labels?[SessionLabels.session] ?? ""
                let key = "\(lease.namespace ?? "")/\(session)"
                leaseSessions.insert(key)
                let owner = describeOwner(lease.metadata)
                if live.contains(session) { continue }
                let verdict = SessionLease.verdict(lease, serverNow: serverNow, threshold: options.threshold)
                guard verdict.isStale else {
                    say(
                        "left alone: session \(session)\(owner) in \(lease.namespace ?? "?") (its Lease was renewed "
                            + "\(Int(verdict.age.rounded())) s ago by the API server's clock; stale after "
                            + "\(Int(verdict.limit)) s)")
                    continue
                }
                let why =
                    "session \(session)\(owner): its Lease was not renewed for \(Int(verdict.age.rounded())) s by the "
                    + "API server's clock (stale after \(Int(verdict.limit)) s)"
                // The session's objects first (GC would take them, but not at once everywhere), then the Lease.
                let objects =
                    pods.filter {
                        $0.metadata.labels?[SessionLabels.session] == session && $0.namespace == lease.namespace
                    }
                    .map { ObjectRef(Pod.resource, namespace: $0.namespace, name: $0.name, uid: $0.metadata.uid) }
                    + secrets.filter {
                        $0.metadata.labels?[SessionLabels.session] == session && $0.namespace == lease.namespace
                    }.map { ObjectRef(Secret.resource, namespace: $0.namespace, name: $0.name, uid: $0.metadata.uid) }
                    + ownedServices.filter {
                        $0.metadata.labels?[SessionLabels.session] == session && $0.namespace == lease.namespace
                    }.map {
                        ObjectRef(Service.resource, namespace: $0.namespace, name: $0.name, uid: $0.metadata.uid)
                    }
                    + [ObjectRef(Lease.resource, namespace: lease.namespace, name: lease.name, uid: lease.metadata.uid)]
                for object in objects {
                    if let failure = await remove(object, client: client, dryRun: options.dryRun) {
                        problems.append(failure)
                        say("could not remove \(object): \(failure)")
                    } else {
                        say("\(verb) \(object) (\(why))")
                    }
                }
            }
            // Objects whose session has no Lease: made by a ktctl that predates Leases, or left when a Lease was
            // deleted by hand. Removed once older than the threshold, by the server-written creation time.
            let orphanAge = max(options.threshold, TimeInterval(SessionLease.defaultDuration))
            let orphans: [(ObjectRef, ObjectMeta)] =
                pods.filter { $0.metadata.labels?[SessionLabels.role] != "mesh-router" }.map {
                    (ObjectRef(Pod.resource, namespace: $0.namespace, name: $0.name, uid: $0.metadata.uid), $0.metadata)
                }
                + secrets.map {
                    (
                        ObjectRef(Secret.resource, namespace: $0.namespace, name: $0.name, uid: $0.metadata.uid),
                        $0.metadata
                    )
                }
            for (object, metadata) in orphans {
                let session = metadata.labels?[SessionLabels.session] ?? ""
                guard !live.contains(session), !leaseSessions.contains("\(object.namespace ?? "")/\(session)"),
                    let created = metadata.creationTimestamp.flatMap(RFC3339.parse)
                else { continue }
                let age = serverNow.timeIntervalSince(created)
                guard age > orphanAge else { continue }
                if let failure = await remove(object, client: client, dryRun: options.dryRun) {
                    problems.append(failure)
                    say("could not remove \(object): \(failure)")
                } else {
                    say(
                        "\(verb) \(object) (session \(session)\(describeOwner(metadata)) has no Lease; made "
                            + "\(Int(age)) s ago by the API server's clock)")
                }
            }
        }
        if !said {
            let scope =
                options.allNamespaces
                ? "any namespace" : "namespace \(namespaces.compactMap { $0 }.joined(separator: ", "))"
            say("nothing to clean on this machine or in \(scope)")
        }
        if !problems.isEmpty {
            throw CleanError(problems: problems)
        }
    }

    /// Puts back the Services and Deployments held (`ktctl.io/lease`) by a Lease in `stale`, or by one that does
    /// not exist any more; what was done, one line each.
    static func restoreHeld(
        namespace: String?, stale: Set<String>, known: Set<String>, client: KubeClient, dryRun: Bool
    ) async -> [String] {
        var lines: [String] = []
        let services =
            (try? await client.list(Service.self, namespace: namespace, allNamespaces: namespace == nil).items) ?? []
        let deployments =
            (try? await client.list(Deployment.self, namespace: namespace, allNamespaces: namespace == nil).items)
            ?? []
        func abandoned(_ metadata: ObjectMeta) -> String? {
            guard let lease = metadata.annotations?[ServiceLock.lease] else { return nil }
            let key = "\(metadata.namespace ?? "")/\(lease)"
            return stale.contains(key) || !known.contains(key) ? lease : nil
        }
        for service in services where MeshState.isMeshed(service) {
            guard let serviceNamespace = service.namespace,
                let members = try? await MeshState.members(
                    of: service.name, namespace: serviceNamespace, client: client),
                members.allSatisfy({ stale.contains("\(serviceNamespace)/\($0.name)") })
            else { continue }
            if dryRun {
                lines.append(
                    "would restore the selector of service/\(service.name) in \(serviceNamespace) and remove its "
                        + "router (no live session meshes it)")
                continue
            }
            switch await MeshState.tearDown(
                service.name, namespace: serviceNamespace, client: client, settle: UndoRunner.proxySettle)
            {
            case .done(let text), .leftAlone(let text): lines.append("\(text) (no live session meshes it)")
            case .failed(let text): lines.append("could not restore: \(text)")
            }
        }
        // Routers and stuntmen whose Service is not meshed (a mesh that crashed before it took its Service).
        let meshed = Set(services.filter(MeshState.isMeshed).map { "\($0.namespace ?? "")/\($0.name)" })
        let routers =
            (try? await client.list(
                Pod.self, namespace: namespace, allNamespaces: namespace == nil,
                options: ListOptions(labelSelector: "\(SessionLabels.role)=mesh-router")
            ).items) ?? []
        for router in routers {
            guard let routerNamespace = router.namespace,
                let meshedService = router.metadata.labels?[MeshRoute.serviceLabel],
                !meshed.contains("\(routerNamespace)/\(meshedService)"),
                let members = try? await MeshState.members(
                    of: meshedService, namespace: routerNamespace, client: client),
                members.isEmpty
            else { continue }
            if dryRun {
                lines.append("would remove pod/\(router.name) in \(routerNamespace) (its service is not meshed)")
                continue
            }
            switch await MeshState.tearDown(
                meshedService, namespace: routerNamespace, client: client, settle: .zero)
            {
            case .done(let text), .leftAlone(let text): lines.append("\(text) (its service was not meshed)")
            case .failed(let text): lines.append("could not remove: \(text)")
            }
        }
        for service in services where !MeshState.isMeshed(service) {
            guard let lease = abandoned(service.metadata), let serviceNamespace = service.namespace else { continue }
            let why =
                "its exchange's lease/\(lease) is \(known.contains("\(serviceNamespace)/\(lease)") ? "stale" : "gone")"
            if dryRun {
                lines.append("would restore the selector of service/\(service.name) in \(serviceNamespace) (\(why))")
                continue
            }
            switch await ServiceLock.restore(
                namespace: serviceNamespace, name: service.name, lease: lease, client: client)
            {
            case .done(let text):
                lines.append("\(text) (\(why))")
                await RecoverCommand.letGo(service.name, namespace: serviceNamespace, client: client)
            case .leftAlone(let text): lines.append(text)
            case .failed(let text): lines.append("could not restore: \(text)")
            }
        }
        for deployment in deployments {
            guard let lease = abandoned(deployment.metadata), let deploymentNamespace = deployment.namespace,
                let replicas = deployment.metadata.annotations?[ScaleLock.replicas].flatMap({ Int($0) })
            else { continue }
            let reference = ObjectRef(Deployment.resource, namespace: deploymentNamespace, name: deployment.name)
            if dryRun {
                lines.append("would scale \(reference) back to \(replicas) (its exchange's lease/\(lease) is stale)")
                continue
            }
            switch await UndoRunner.scaleBack(reference, to: replicas, wait: .seconds(0), client: client) {
            case .done(let text), .leftAlone(let text): lines.append(text)
            case .failed(let text): lines.append("could not scale back: \(text)")
            }
        }
        return lines
    }

    /// ` of alice@laptop` from the owner annotations.
    static func describeOwner(_ metadata: ObjectMeta) -> String {
        guard let user = metadata.annotations?[SessionLabels.user] else { return "" }
        return " of \(user)@\(metadata.annotations?[SessionLabels.host] ?? "?")"
    }

    /// Deletes one object (a pod without a grace period, preconditioned on its uid); nil when it went (or was
    /// already gone), else why not.
    static func remove(_ object: ObjectRef, client: KubeClient, dryRun: Bool) async -> String? {
        guard !dryRun else { return nil }
        switch await UndoRunner(client: client).run(.deleteObject(object)) {
        case .done, .leftAlone: return nil
        case .failed(let why): return why
        }
    }
}

/// Why `ktctl clean` could not finish.
public struct CleanError: Error, CustomStringConvertible, Sendable {
    public var problems: [String]
    public var description: String {
        "could not finish: " + problems.joined(separator: "; ")
    }
}
