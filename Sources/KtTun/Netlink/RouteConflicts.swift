import KtWire

/// What an existing route means for a prefix that is about to be routed into the tunnel.
public struct RouteConflict: Hashable, Sendable {
    public enum Kind: String, Hashable, Sendable, Codable {
        /// The existing route lies inside the wanted prefix; by longest-prefix match it keeps its addresses, so
        /// part of the cluster would not be reachable.
        case moreSpecific = "more-specific"
        /// The existing (non-default) route contains the wanted prefix; the new route would take part of its
        /// traffic, such as a VPN's or a LAN's.
        case shadowed
        /// Same destination: the metric decides, so one of the two is silently ignored.
        case samePrefix = "same-prefix"
        /// The machine has an address inside the wanted prefix.
        case localAddress = "local-address"
    }

    public var wanted: AnyIPPrefix
    public var existing: Route
    public var kind: Kind

    /// One sentence for people: what would happen.
    public var explanation: String {
        let route = existing.ipRouteDescription
        let device = existing.interfaceName.map { "dev \($0)" } ?? "its interface"
        let owner =
            existing.isOwnedByKtctl
            ? " (installed by ktctl: another session, or one that crashed; `ktctl clean` removes it)" : ""
        switch kind {
        case .moreSpecific:
            return "'\(route)'\(owner) is more specific than \(wanted): traffic to \(existing.destination) would keep "
                + "going to \(device), not to the cluster"
        case .shadowed:
            return "'\(route)'\(owner) contains \(wanted): traffic to \(wanted) that now uses \(device) would go to "
                + "the cluster instead"
        case .samePrefix:
            return "'\(route)'\(owner) has the same destination as \(wanted): only the one with the lower metric "
                + "is used"
        case .localAddress:
            let address = Route.shortText(existing.destination)
            let what = address.contains("/") ? "are addresses" : "is an address"
            return "\(address) \(what) of this machine (\(device)) and lies inside \(wanted)"
        }
    }
}

/// Finds the routes that a set of prefixes would collide with.
public enum RouteConflicts {
    /// Every route in `routes` that overlaps one of `wanted`, with what it would mean. Default routes are
    /// ignored (shadowing them is the point of routing a prefix), as are broadcast, multicast and anycast
    /// entries, which the kernel keeps for its own addresses.
    public static func find(for wanted: [AnyIPPrefix], in routes: [Route]) -> [RouteConflict] {
        var conflicts: [RouteConflict] = []
        for prefix in wanted {
            for route in routes where !route.isDefault && prefix.overlaps(route.destination) {
                switch route.type {
                case .broadcast, .multicast, .anycast, .unspecified:
                    continue
                case .local:
                    conflicts.append(RouteConflict(wanted: prefix, existing: route, kind: .localAddress))
                case .unicast, .blackhole, .unreachable, .prohibit, .throw:
                    let kind: RouteConflict.Kind
                    if route.destination == prefix {
                        kind = .samePrefix
                    } else if prefix.contains(route.destination) {
                        kind = .moreSpecific
                    } else {
                        kind = .shadowed
                    }
                    conflicts.append(RouteConflict(wanted: prefix, existing: route, kind: kind))
                }
            }
        }
        return conflicts
    }
}
