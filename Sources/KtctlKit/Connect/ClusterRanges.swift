import KtWire

/// Which address ranges are the cluster's, and so go into the tunnel.
///
/// From the best source that answers: the ServiceCIDR API and the nodes' `spec.podCIDRs`; otherwise inferred from
/// the ClusterIPs and pod IPs seen (hostNetwork pods left out: theirs are node addresses), each family's addresses
/// covered by one prefix no longer than /16 (IPv4) or /64 (IPv6), so that addresses handed out later are
/// likely inside. Then `--include-ips` are added, and `--exclude-ips` and the API server's own address are cut out
/// exactly: a range with a hole becomes the set of prefixes around it.
public struct ClusterRanges: Sendable, Hashable {
    public var services: [AnyIPPrefix]
    public var pods: [AnyIPPrefix]
    /// Where each came from, for the summary ("ServiceCIDR API", "inferred from 12 ClusterIPs", ...).
    public var serviceSource: String
    public var podSource: String

    public init(services: [AnyIPPrefix], pods: [AnyIPPrefix], serviceSource: String, podSource: String) {
        self.services = services
        self.pods = pods
        self.serviceSource = serviceSource
        self.podSource = podSource
    }

    /// Ranges from what the API says. Empty inputs fall through to the next source.
    public static func decide(
        serviceCIDRs: [String], nodePodCIDRs: [String], clusterIPs: [String], podIPs: [String]
    ) -> ClusterRanges {
        let declaredServices = serviceCIDRs.compactMap { try? AnyIPPrefix.parse($0) }
        let declaredPods = nodePodCIDRs.compactMap { try? AnyIPPrefix.parse($0) }
        let services =
            declaredServices.isEmpty
            ? infer(clusterIPs.filter { $0 != "None" && !$0.isEmpty }) : merge(declaredServices)
        let pods = declaredPods.isEmpty ? infer(podIPs) : merge(declaredPods)
        return ClusterRanges(
            services: services, pods: pods,
            serviceSource: declaredServices.isEmpty
                ? "inferred from \(clusterIPs.count) ClusterIPs" : "ServiceCIDR API",
            podSource: declaredPods.isEmpty ? "inferred from \(podIPs.count) pod IPs" : "the nodes' podCIDRs")
    }

    /// The shortest inferred prefixes accepted: a covering prefix shorter than these (10.0.0.0/16 and 100.64.0.0/16
    /// give 0.0.0.0/1) would route a large part of the Internet through the cluster.
    public static let shortestInferredV4 = 8
    public static let shortestInferredV6 = 32

    /// Inferred ranges too wide to route, with why; empty when every range was declared or is narrow enough.
    public var tooWide: [String] {
        var reasons: [String] = []
        for (prefixes, source, declared) in [
            (services, serviceSource, !serviceSource.hasPrefix("inferred")),
            (pods, podSource, !podSource.hasPrefix("inferred")),
        ] where !declared {
            for prefix in prefixes {
                switch prefix {
                case .v4(let p) where p.length < Self.shortestInferredV4:
                    reasons.append("\(prefix) (\(source)) is wider than /\(Self.shortestInferredV4)")
                case .v6(let p) where p.length < Self.shortestInferredV6:
                    reasons.append("\(prefix) (\(source)) is wider than /\(Self.shortestInferredV6)")
                default: break
                }
            }
        }
        return reasons
    }

    /// The ranges without those too wide to route (when `--include-ips` names the ranges instead).
    public func droppingTooWide() -> ClusterRanges {
        func narrow(_ prefixes: [AnyIPPrefix], declared: Bool) -> [AnyIPPrefix] {
            declared
                ? prefixes
                : prefixes.filter {
                    switch $0 {
                    case .v4(let p): return p.length >= Self.shortestInferredV4
                    case .v6(let p): return p.length >= Self.shortestInferredV6
                    }
                }
        }
        var copy = self
        copy.services = narrow(services, declared: !serviceSource.hasPrefix("inferred"))
        copy.pods = narrow(pods, declared: !podSource.hasPrefix("inferred"))
        return copy
    }

    /// One covering prefix per family, at most /16 (IPv4) or /64 (IPv6) long.
    static func infer(_ addresses: [String]) -> [AnyIPPrefix] {
        let parsed = addresses.compactMap(IPAddress.init)
        var result: [AnyIPPrefix] = []
        let v4 = parsed.compactMap { if case .v4(let a) = $0 { a } else { nil } }
        let v6 = parsed.compactMap { if case .v6(let a) = $0 { a } else { nil } }
        if let covering = IPv4Prefix.covering(v4) {
            result.append(.v4(IPv4Prefix(containing: covering.network, length: min(covering.length, 16))))
        }
        if let covering = IPv6Prefix.covering(v6) {
            result.append(.v6(IPv6Prefix(containing: covering.network, length: min(covering.length, 64))))
        }
        return result
    }

    /// Drops prefixes inside others.
    static func merge(_ prefixes: [AnyIPPrefix]) -> [AnyIPPrefix] {
        var kept: [AnyIPPrefix] = []
        for prefix in prefixes where !prefixes.contains(where: { $0 != prefix && $0.contains(prefix) }) {
            if !kept.contains(prefix) { kept.append(prefix) }
        }
        return kept
    }

    /// The prefixes to route: ranges and includes, minus excludes (exactly, by splitting).
    public func routes(include: [AnyIPPrefix], exclude: [AnyIPPrefix]) -> [AnyIPPrefix] {
        let wanted = Self.merge(services + pods + include)
        var result: [AnyIPPrefix] = []
        for prefix in wanted {
            switch prefix {
            case .v4(let p):
                let holes = exclude.compactMap { if case .v4(let e) = $0 { e } else { nil } }
                result += p.subtracting(holes).map { .v4($0) }
            case .v6(let p):
                let holes = exclude.compactMap { if case .v6(let e) = $0 { e } else { nil } }
                result += p.subtracting(holes).map { .v6($0) }
            }
        }
        return result
    }
}
