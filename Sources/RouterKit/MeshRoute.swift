import Foundation
import KubeKit

/// How a mesh session tells the router its route: on its own Lease, which the router lists and watches (so the route
/// lives exactly as long as the session does, and a restarted router finds every live one again).
///
/// - label `ktctl.io/mesh-service: <svc>`: the session meshes that Service (membership; the router's watch selects
///   on it, and the last member out restores the Service);
/// - annotation `ktctl.io/mesh-route`: this value as JSON, once the session's shadow is up.
public struct MeshRoute: Codable, Sendable, Hashable {
    public static let serviceLabel = "ktctl.io/mesh-service"
    public static let annotation = "ktctl.io/mesh-route"

    /// The header name as the user gave it (`VERSION`).
    public var header: String
    public var value: String
    /// The shadow pod's name and IP.
    public var name: String
    public var host: String

    public init(header: String, value: String, name: String, host: String) {
        self.header = header
        self.value = value
        self.name = name
        self.host = host
    }

    public var encoded: String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        return String(decoding: (try? encoder.encode(self)) ?? Data(), as: UTF8.self)
    }

    public static func decode(_ text: String) -> MeshRoute? {
        try? JSONDecoder().decode(MeshRoute.self, from: Data(text.utf8))
    }

    /// The routes of `service` among `leases`: those that carry a route and are live at `serverNow` (the API
    /// server's time); the others, and why they were left out, for the log.
    public static func table(
        service: String, leases: [Lease], serverNow: Date, defaultDuration: Int = 90
    ) -> (table: RouteTable, skipped: [String: String]) {
        var routes: [Route] = []
        var skipped: [String: String] = [:]
        for lease in leases where lease.metadata.labels?[serviceLabel] == service {
            guard let text = lease.metadata.annotations?[annotation] else { continue }
            guard let route = decode(text), !route.header.isEmpty, !route.host.isEmpty else {
                skipped[lease.name] = "its \(annotation) annotation is not a route"
                continue
            }
            if lease.isExpired(at: serverNow, defaultDuration: defaultDuration) {
                skipped[lease.name] =
                    "stale: not renewed for \(Int(serverNow.timeIntervalSince(lease.renewed))) s by the API server's "
                    + "clock"
                continue
            }
            routes.append(
                Route(
                    header: route.header, value: route.value, upstream: Upstream(name: route.name, host: route.host),
                    owner: lease.name))
        }
        return (RouteTable(routes), skipped)
    }
}
