import Foundation
import KtTun
import KtWire

/// `ktctl route`: the routing tables as `ip route show table all` prints them, ktctl's own routes marked, and
/// with `--check`, what routing some prefixes would collide with.
///
/// The plan is pure (``RouteReport``): a list of routes and prefixes in, text or JSON and an exit status out. The
/// only I/O is reading the tables through ``Netlink``; nothing is ever changed.
public enum RouteInspection {
    public enum Format: String, Sendable, CaseIterable {
        case text
        case json
    }

    /// The exit status when a checked prefix collides with an existing route.
    public static let conflictExitStatus: Int32 = 2

    /// Reads the routing tables of this machine (this network namespace) and renders the report.
    public static func run(check: [AnyIPPrefix], format: Format) throws -> (output: String, status: Int32) {
        let routes = try Netlink().routes()
        let report = RouteReport(routes: routes, check: check)
        return (format == .json ? report.json() : report.text(), report.status)
    }
}

/// The pure half of `ktctl route`.
public struct RouteReport: Sendable {
    public var routes: [Route]
    public var check: [AnyIPPrefix]
    public var conflicts: [RouteConflict]

    public init(routes: [Route], check: [AnyIPPrefix]) {
        // IPv4 before IPv6, each in the kernel's dump order, as `ip route show table all` then `ip -6 ...`.
        self.routes =
            routes.filter { if case .v4 = $0.destination { true } else { false } }
            + routes.filter { if case .v6 = $0.destination { true } else { false } }
        self.check = check
        self.conflicts = RouteConflicts.find(for: check, in: routes)
    }

    /// 0, or ``RouteInspection/conflictExitStatus`` when `check` found a collision.
    public var status: Int32 { conflicts.isEmpty ? 0 : RouteInspection.conflictExitStatus }

    /// Without prefixes to check: every route, one per line, ktctl's marked. With them: what each would collide
    /// with, and what that would mean.
    public func text() -> String {
        guard !check.isEmpty else {
            return routes.map { route in
                route.isOwnedByKtctl ? route.ipRouteDescription + "    # ktctl" : route.ipRouteDescription
            }.joined(separator: "\n")
        }
        var lines: [String] = []
        for prefix in check {
            let found = conflicts.filter { $0.wanted == prefix }
            if found.isEmpty {
                lines.append("\(prefix): no conflict; no existing route overlaps it (default routes aside)")
            } else {
                lines.append("\(prefix): \(found.count) conflicting route\(found.count == 1 ? "" : "s")")
                lines += found.map { "  \($0.kind.rawValue): \($0.explanation)" }
            }
        }
        if !conflicts.isEmpty {
            lines.append(
                "Routing these prefixes into the tunnel would change where that traffic goes. Exclude the overlap "
                    + "(--exclude-ips), or pass --force-routes to `ktctl connect` if that is what you want.")
        }
        return lines.joined(separator: "\n")
    }

    /// The same as JSON, for scripts: `{"routes": [...]}` or `{"checks": [...], "conflict": bool}`.
    public func json() -> String {
        let value: Any
        if check.isEmpty {
            value = ["routes": routes.map(Self.object)]
        } else {
            value = [
                "conflict": !conflicts.isEmpty,
                "checks": check.map { prefix in
                    [
                        "prefix": prefix.description,
                        "conflicts": conflicts.filter { $0.wanted == prefix }.map { conflict in
                            [
                                "kind": conflict.kind.rawValue, "explanation": conflict.explanation,
                                "route": Self.object(conflict.existing),
                            ] as [String: Any]
                        },
                    ] as [String: Any]
                },
            ]
        }
        guard
            let data = try? JSONSerialization.data(
                withJSONObject: value, options: [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes])
        else {
            preconditionFailure("the route report holds only strings, numbers and booleans")
        }
        return String(decoding: data, as: UTF8.self)
    }

    /// One route with `ip -j route`'s key names, plus whether ktctl owns it.
    static func object(_ route: Route) -> [String: Any] {
        var object: [String: Any] = [
            "dst": route.isDefault ? "default" : route.destination.description,
            "type": route.type.description, "table": route.table.description, "protocol": route.protocol.description,
            "scope": route.scope.description, "metric": Int(route.metric), "ktctl": route.isOwnedByKtctl,
        ]
        if let gateway = route.gateway { object["gateway"] = gateway.description }
        if let device = route.interfaceName { object["dev"] = device }
        if let source = route.preferredSource { object["prefsrc"] = source.description }
        return object
    }
}
