import Foundation
import KubeKit
import Logging

/// The routes from the Kubernetes API: the Leases of the sessions that mesh the Service (label
/// `ktctl.io/mesh-service`), listed and then watched, judged live by the API server's clock once a second. A route
/// whose Lease is deleted goes at once; one whose Lease is not renewed goes when it turns stale. Read with the
/// router's own account (`deploy/rbac/kt-router.yaml`: get, list and watch of Leases in its namespace, nothing else).
public final class LeaseRouteSource: Sendable {
    let client: KubeClient
    let namespace: String
    let service: String
    let routes: RouteStore
    let logger: Logger

    public init(client: KubeClient, namespace: String, service: String, routes: RouteStore, logger: Logger) {
        self.client = client
        self.namespace = namespace
        self.service = service
        self.routes = routes
        self.logger = logger
    }

    /// Runs until cancelled.
    public func run() async {
        let leases = LeaseSet()
        let judge = Task { [self] in
            while !Task.isCancelled {
                try? await Task.sleep(for: .seconds(1))
                if await leases.listed { await publish(leases) }
            }
        }
        defer { judge.cancel() }
        while !Task.isCancelled {
            do {
                let updates = client.watchContinuously(
                    Lease.self, namespace: namespace,
                    options: ListOptions(labelSelector: "\(MeshRoute.serviceLabel)=\(service)"))
                for try await update in updates {
                    switch update {
                    case .listed(let all): await leases.replace(all)
                    case .event(.deleted(let lease)): await leases.remove(lease)
                    case .event(let event):
                        if let lease = event.object { await leases.put(lease) }
                    }
                    await publish(leases)
                }
            } catch is CancellationError {
                return
            } catch {
                logger.warning("watching the sessions' Leases failed: \(error); trying again in 1 s")
                try? await Task.sleep(for: .seconds(1))
            }
        }
    }

    private func publish(_ leases: LeaseSet) async {
        guard let now = client.serverClock.now() else { return }
        let (table, skipped) = MeshRoute.table(service: service, leases: await leases.all, serverNow: now)
        let before = routes.table
        guard table != before || !routes.synced else { return }
        routes.replace(table)
        let added = Set(table.routes).subtracting(before.routes)
        let removed = Set(before.routes).subtracting(table.routes)
        for route in added.sorted(by: { $0.owner < $1.owner }) { logger.info("route added: \(route)") }
        for route in removed.sorted(by: { $0.owner < $1.owner }) {
            logger.info("route dropped: \(route)\(skipped[route.owner].map { " (\($0))" } ?? " (its session ended)")")
        }
    }
}

/// The Leases seen, by name.
actor LeaseSet {
    private var leases: [String: Lease] = [:]
    private(set) var listed = false

    var all: [Lease] { Array(leases.values) }

    func replace(_ all: [Lease]) {
        leases = Dictionary(all.map { ($0.name, $0) }, uniquingKeysWith: { $1 })
        listed = true
    }

    func put(_ lease: Lease) { leases[lease.name] = lease }
    func remove(_ lease: Lease) { leases[lease.name] = nil }
}
