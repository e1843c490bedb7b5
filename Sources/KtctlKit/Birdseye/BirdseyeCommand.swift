import Foundation
import KubeKit
import RouterKit

/// `ktctl birdseye`'s flags.
public struct BirdseyeOptions: Sendable {
    public enum Sort: String, Sendable, CaseIterable {
        /// Services someone is working on first, then by name (kt-connect's default).
        case status
        case name
    }

    public var cluster: ClusterOptions
    public var allNamespaces = false
    public var showConnectors = false
    public var hideNaturalServices = false
    public var sort = Sort.status
    public var json = false

    public init(cluster: ClusterOptions) {
        self.cluster = cluster
    }
}

/// Who is doing what in the cluster, from the sessions' Leases and the Services' annotations, every age judged by
/// the API server's clock (never this machine's): one line per Service — normal, exchanged, meshed (each member and
/// mark), previewed, held by kt-connect, or left behind by a session that is gone — and, with `--show-connectors`,
/// who is connected. A session counts only while its Lease is fresh, so a `kill -9`ed developer drops out of the view
/// once their Lease expires (90 s by default), as they drop out of a mesh's routes.
public enum BirdseyeCommand {
    // MARK: - The view (pure)

    /// One developer's hold on a Service.
    public struct Holder: Codable, Sendable, Hashable {
        public var user: String
        public var host: String
        public var session: String
        public var lease: String
        /// `selector`, `scale`, `auto`, `manual`, `preview`.
        public var mode: String
        /// A mesh's `VERSION: feo3x` (auto) or `version=feo3x` (manual).
        public var mark: String?
        /// When the session started, by the server's clock (RFC 3339).
        public var since: String
    }

    public struct ServiceView: Codable, Sendable, Hashable {
        public var namespace: String
        public var service: String
        /// `normal`, `exchanged`, `meshed`, `previewed`, `held by kt-connect`, `left by a session that is gone`.
        public var state: String
        public var holders: [Holder] = []
        /// What to do about it, when something is to be done (`ktctl recover tomcat`).
        public var advice: String?
    }

    public struct Connector: Codable, Sendable, Hashable {
        public var namespace: String
        public var user: String
        public var host: String
        public var session: String
        public var since: String
        /// Seconds since the Lease was last renewed, by the server's clock.
        public var renewedSecondsAgo: Int
    }

    public struct View: Codable, Sendable, Hashable {
        /// The API server's time the view was judged at (RFC 3339).
        public var serverTime: String
        public var services: [ServiceView]
        public var connectors: [Connector]?
    }

    /// Builds the view from what was listed: `leases` of every namespace looked at (and, for connectors, perhaps
    /// more), judged live at `serverNow`.
    public static func view(
        services: [Service], leases: [Lease], deployments: [Deployment], serverNow: Date, options: BirdseyeOptions
    ) -> View {
        let live = leases.filter { lease in
            lease.metadata.labels?[SessionLabels.managedBy] == SessionLabels.manager
                && lease.metadata.labels?[SessionLabels.session] != nil
                && !SessionLease.verdict(lease, serverNow: serverNow, threshold: 0).isStale
        }
        func holder(_ lease: Lease) -> Holder {
            let annotations = lease.metadata.annotations ?? [:]
            let route = annotations[MeshRoute.annotation].flatMap(MeshRoute.decode)
            return Holder(
                user: annotations[SessionLabels.user] ?? "?", host: annotations[SessionLabels.host] ?? "?",
                session: lease.metadata.labels?[SessionLabels.session] ?? "?", lease: lease.name,
                mode: annotations[SessionTarget.modeAnnotation] ?? "?",
                mark: route.map { "\($0.header): \($0.value)" } ?? annotations[SessionTarget.markAnnotation],
                since: lease.spec?.acquireTime.flatMap(MicroTime.parse).map(RFC3339.format)
                    ?? lease.metadata.creationTimestamp ?? "?")
        }
        var rows: [ServiceView] = []
        for service in services {
            let labels = service.metadata.labels ?? [:]
            let annotations = service.metadata.annotations ?? [:]
            let namespace = service.namespace ?? "?"
            // ktctl's own plumbing (a mesh's stuntman) is not a Service anyone works on; a preview's is.
            if labels[SessionLabels.managedBy] == SessionLabels.manager && labels[SessionLabels.role] != "preview" {
                continue
            }
            // The sessions on this Service: by their Lease's label, and also as the Service names them (its
            // exchange lock's Lease, its mesh members' `ktctl.io/mesh-service`), so that a session whose Lease lacks
            // the label (a ktctl before it) still shows as what it is.
            let mine = live.filter { lease in
                let leaseLabels = lease.metadata.labels ?? [:]
                return lease.metadata.namespace == namespace
                    && (leaseLabels[SessionTarget.serviceLabel] == service.name
                        || (annotations[ServiceLock.lease] == lease.name
                            && leaseLabels[SessionLabels.role] == "exchange")
                        || leaseLabels[MeshRoute.serviceLabel] == service.name)
            }
            func holders(_ role: String) -> [Holder] {
                mine.filter { $0.metadata.labels?[SessionLabels.role] == role }.map(holder).sorted {
                    ($0.since, $0.user, $0.session) < ($1.since, $1.user, $1.session)
                }
            }
            var row = ServiceView(namespace: namespace, service: service.name, state: "normal")
            let exchangers = holders("exchange")
            let meshers = holders("mesh")
            let previewers = holders("preview")
            if labels[SessionLabels.role] == "preview" {
                // A preview's Service lives exactly as long as its session's Lease (it is owned by it).
                row.state = previewers.isEmpty ? "left by a session that is gone" : "previewed"
                row.holders = previewers
                if previewers.isEmpty { row.advice = "ktctl clean removes it once its Lease is stale" }
            } else if !exchangers.isEmpty || !meshers.isEmpty {
                // A scale-mode exchange beside a mesh is both; the exchange comes first.
                row.state = [exchangers.isEmpty ? nil : "exchanged", meshers.isEmpty ? nil : "meshed"]
                    .compactMap { $0 }.joined(separator: " and ")
                row.holders = exchangers + meshers
            } else if ServiceLock.heldByKtConnect(service) {
                row.state = "held by kt-connect"
                row.advice =
                    "its kt-selector annotation says kt-connect changed it; `ktctl recover \(service.name)` "
                    + "puts it back if that session is gone"
            } else if annotations[ServiceLock.lease] != nil || annotations[MeshState.annotation] != nil {
                row.state = "left by a session that is gone"
                row.advice =
                    "`ktctl recover \(service.name)` puts it back now; `ktctl clean` does once its Lease is stale"
            } else if let scaled = scaledHolder(service, deployments: deployments) {
                // An older ktctl's scale-mode exchange: the Deployment's record names the lease.
                row.state =
                    live.contains { $0.name == scaled && $0.metadata.namespace == namespace }
                    ? "exchanged" : "left by a session that is gone"
                row.holders = live.filter { $0.name == scaled && $0.metadata.namespace == namespace }.map(holder)
            }
            rows.append(row)
        }
        if options.hideNaturalServices { rows.removeAll { $0.state == "normal" } }
        switch options.sort {
        case .name:
            rows.sort { ($0.namespace, $0.service) < ($1.namespace, $1.service) }
        case .status:
            rows.sort {
                ($0.state == "normal" ? 1 : 0, $0.namespace, $0.service) < (
                    $1.state == "normal" ? 1 : 0, $1.namespace, $1.service
                )
            }
        }
        var connectors: [Connector]?
        if options.showConnectors {
            connectors = live.filter { $0.metadata.labels?[SessionLabels.role] == "connect" }.map { lease in
                let found = holder(lease)
                return Connector(
                    namespace: lease.metadata.namespace ?? "?", user: found.user, host: found.host,
                    session: found.session, since: found.since,
                    renewedSecondsAgo: max(0, Int(serverNow.timeIntervalSince(lease.renewed))))
            }.sorted { ($0.namespace, $0.user, $0.session) < ($1.namespace, $1.user, $1.session) }
        }
        return View(serverTime: RFC3339.format(serverNow), services: rows, connectors: connectors)
    }

    /// The lease a scale-mode exchange recorded on a Deployment whose pods `service` selects, if any.
    static func scaledHolder(_ service: Service, deployments: [Deployment]) -> String? {
        let selector = ServiceLock.original(of: service)
        guard !selector.isEmpty else { return nil }
        for deployment in deployments where deployment.metadata.namespace == service.namespace {
            guard let lease = deployment.metadata.annotations?[ServiceLock.lease],
                deployment.metadata.annotations?[ScaleLock.replicas] != nil,
                let labels = deployment.spec?.template.metadata?.labels,
                selector.allSatisfy({ labels[$0.key] == $0.value })
            else { continue }
            return lease
        }
        return nil
    }

    // MARK: - Rendering

    /// A table as kubectl prints one (the NAMESPACE column only across namespaces), then the connectors.
    public static func text(_ view: View, allNamespaces: Bool) -> String {
        var table: [[String]] = [(allNamespaces ? ["NAMESPACE"] : []) + ["SERVICE", "STATE"]]
        for row in view.services {
            var state = row.state
            if !row.holders.isEmpty {
                state += " by " + row.holders.map(describe).joined(separator: ", ")
            }
            if let advice = row.advice { state += " (\(advice))" }
            table.append((allNamespaces ? [row.namespace] : []) + [row.service, state])
        }
        var lines = columns(table)
        if view.services.isEmpty { lines = ["no services"] }
        if let connectors = view.connectors {
            lines.append("")
            if connectors.isEmpty {
                lines.append("nobody is connected")
            } else {
                var rows: [[String]] = [["CONNECTED", "NAMESPACE", "SESSION", "SINCE", "RENEWED"]]
                for connector in connectors {
                    rows.append([
                        "\(connector.user)@\(connector.host)", connector.namespace, connector.session, connector.since,
                        "\(connector.renewedSecondsAgo) s ago",
                    ])
                }
                lines += columns(rows)
            }
        }
        return lines.joined(separator: "\n")
    }

    /// `alice@laptop since 2026-12-05T10:00:00Z (selector mode)`, `bob@desk (VERSION: ci) since …`.
    static func describe(_ holder: Holder) -> String {
        var text = "\(holder.user)@\(holder.host)"
        if let mark = holder.mark { text += " (\(mark))" }
        text += " since \(holder.since)"
        if ["selector", "scale"].contains(holder.mode) { text += " (\(holder.mode) mode)" }
        if holder.mode == "manual" { text += " (manual mode)" }
        return text
    }

    static func columns(_ rows: [[String]]) -> [String] {
        guard let width = rows.first?.count else { return [] }
        let widths = (0..<width).map { column in rows.map { $0[column].count }.max() ?? 0 }
        return rows.map { row in
            row.enumerated().map { index, cell in
                index == width - 1 ? cell : cell.padding(toLength: widths[index] + 3, withPad: " ", startingAt: 0)
            }.joined()
        }
    }

    // MARK: - Running

    public static func run(_ options: BirdseyeOptions, print: @Sendable (String) -> Void) async throws {
        let config = try Kubeconfig.load(explicitPath: options.cluster.kubeconfig)
        let access = try config.access(context: options.cluster.context, namespace: options.cluster.namespace)
        let client = try KubeClient(access: access, logger: .init(label: "ktctl.birdseye"))
        defer { Task { await client.shutdown() } }
        let namespace = access.namespace
        let services: [Service]
        let deployments: [Deployment]
        var leases: [Lease]
        if options.allNamespaces {
            services = try await client.listAll(Service.self, allNamespaces: true).items
            deployments = (try? await client.listAll(Deployment.self, allNamespaces: true).items) ?? []
            leases = try await client.listAll(
                Lease.self, allNamespaces: true,
                options: ListOptions(labelSelector: "\(SessionLabels.managedBy)=\(SessionLabels.manager)")
            ).items
        } else {
            services = try await client.listAll(Service.self, namespace: namespace).items
            deployments = (try? await client.listAll(Deployment.self, namespace: namespace).items) ?? []
            leases = try await client.listAll(
                Lease.self, namespace: namespace,
                options: ListOptions(labelSelector: "\(SessionLabels.managedBy)=\(SessionLabels.manager)")
            ).items
            if options.showConnectors {
                // kt-connect showed connectors cluster-wide; that needs the cluster-wide list, else this namespace's.
                if let everywhere = try? await client.listAll(
                    Lease.self, allNamespaces: true,
                    options: ListOptions(
                        labelSelector:
                            "\(SessionLabels.managedBy)=\(SessionLabels.manager),\(SessionLabels.role)=connect"))
                {
                    leases.removeAll { $0.metadata.labels?[SessionLabels.role] == "connect" }
                    leases += everywhere.items
                }
            }
        }
        let serverNow = try await SessionLease.serverNow(client)
        let view = view(
            services: services, leases: leases, deployments: deployments, serverNow: serverNow, options: options)
        if options.json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys, .prettyPrinted, .withoutEscapingSlashes]
            print(String(decoding: try encoder.encode(view), as: UTF8.self))
        } else {
            print(text(view, allNamespaces: options.allNamespaces))
        }
    }
}
