import Foundation
import KubeKit
import Logging

/// `ktctl recover <svc>`: puts a Service back now, whoever left it changed: its original selector (from the
/// `kt-selector` annotation), its lock, and a workload a scale-mode exchange scaled down. The session that held it,
/// if its Lease is still there, is ended by deleting that Lease (its shadow and Secret go with it, and the session,
/// if it still runs somewhere, sees its Lease gone and stops instead of taking the Service again).
public enum RecoverCommand {
    public static func run(
        service name: String, cluster options: ClusterOptions, logger: Logger,
        print: @escaping @Sendable (String) -> Void
    ) async throws {
        let config = try Kubeconfig.load(explicitPath: options.kubeconfig)
        let access = try config.access(context: options.context, namespace: options.namespace)
        let client = try KubeClient(access: access, logger: logger)
        defer { Task { await client.shutdown() } }
        let namespace = access.namespace
        let service: Service
        do {
            service = try await client.get(Service.self, name: name, namespace: namespace)
        } catch let error as KubeAPIError where error.reason == .notFound {
            throw PlanError.notFound("there is no service \(name) in namespace \(namespace)")
        }
        let lines = try await restore(service, client: client, namespace: namespace, onlyIfStale: false)
        if lines.isEmpty {
            print("ktctl recover: service \(name) in \(namespace) is neither exchanged nor meshed; nothing to do")
        }
        for line in lines { print("ktctl recover: \(line)") }
    }

    /// Restores `service` and the workload scaled for it; with `onlyIfStale`, only when the holder's Lease is gone
    /// or stale (`ktctl clean`). Returns what was done; throws when something could not be.
    public static func restore(_ service: Service, client: KubeClient, namespace: String, onlyIfStale: Bool)
        async throws -> [String]
    {
        var lines: [String] = []
        var leases: Set<String> = []
        if MeshState.isMeshed(service) {
            // An auto mesh: put back when no member is live (clean), or now (recover), ending its members.
            let members = try await MeshState.members(of: service.name, namespace: namespace, client: client)
            if onlyIfStale, !members.isEmpty { return [] }
            switch await MeshState.tearDown(
                service.name, namespace: namespace, client: client, settle: UndoRunner.proxySettle)
            {
            case .done(let text), .leftAlone(let text): lines.append(text)
            case .failed(let text): throw PlanError.notFound(text)
            }
            for member in members { leases.insert(member.name) }
        }
        let holder = try await ServiceLock.holder(of: service, client: client)
        if !MeshState.isMeshed(service),
            service.metadata.annotations?[ServiceLock.lease] != nil
                || service.metadata.annotations?[ServiceLock.originalSelector] != nil
        {
            if onlyIfStale, holder != nil { return [] }
            switch await ServiceLock.restore(
                namespace: namespace, name: service.name, lease: nil, client: client, force: true)
            {
            case .done(let text):
                lines.append(text)
                await letGo(service.name, namespace: namespace, client: client)
            case .leftAlone(let text): lines.append(text)
            case .failed(let text): throw PlanError.notFound(text)
            }
            if let lease = service.metadata.annotations?[ServiceLock.lease] { leases.insert(lease) }
        }
        // Workloads a scale-mode exchange scaled down: the ones this Service selects that carry the record.
        let selector = service.spec?.selector ?? [:]
        for deployment in try await client.list(Deployment.self, namespace: namespace).items {
            guard let text = deployment.metadata.annotations?[ScaleLock.replicas], let replicas = Int(text) else {
                continue
            }
            let labels = deployment.spec?.template.metadata?.labels ?? [:]
            guard !selector.isEmpty, selector.allSatisfy({ labels[$0.key] == $0.value }) else { continue }
            let lease = deployment.metadata.annotations?[ServiceLock.lease]
            if onlyIfStale, let lease, try await isLive(lease, namespace: namespace, client: client) { continue }
            let reference = ObjectRef(Deployment.resource, namespace: namespace, name: deployment.name)
            switch await UndoRunner.scaleBack(reference, to: replicas, wait: .seconds(0), client: client) {
            case .done(let text), .leftAlone(let text): lines.append(text)
            case .failed(let text): throw PlanError.notFound(text)
            }
            if let lease { leases.insert(lease) }
        }
        for lease in leases.sorted() {
            var options = DeleteOptions()
            options.propagationPolicy = .background
            if (try? await client.delete(Lease.self, name: lease, namespace: namespace, options: options)) == true {
                lines.append(
                    "ended the session of lease/\(lease) (its shadow and Secret go with it; a ktctl still running "
                        + "it stops)")
            }
        }
        return lines
    }

    /// After a Service was put back: waits (at most 10 s) until its Endpoints name no exchange shadow (pods named
    /// `<svc>-kt-exchange-…`), then for the proxies to follow, before the shadow may go (see ``UndoRunner/settle``).
    public static func letGo(_ service: String, namespace: String, client: KubeClient) async {
        let deadline = ContinuousClock.now + .seconds(10)
        while ContinuousClock.now < deadline {
            guard let endpoints = try? await client.get(Endpoints.self, name: service, namespace: namespace) else {
                break
            }
            let names = (endpoints.subsets ?? []).flatMap { ($0.addresses ?? []) + ($0.notReadyAddresses ?? []) }
                .compactMap { $0.targetRef?.name }
            if !names.contains(where: { $0.contains("-kt-exchange-") }) { break }
            try? await Task.sleep(for: .milliseconds(100))
        }
        try? await Task.sleep(for: UndoRunner.proxySettle)
    }

    static func isLive(_ lease: String, namespace: String, client: KubeClient) async throws -> Bool {
        guard let found = try? await client.get(Lease.self, name: lease, namespace: namespace) else { return false }
        let now = try await SessionLease.serverNow(client)
        return !SessionLease.verdict(found, serverNow: now, threshold: 0).isStale
    }
}
