import Foundation

/// Where a request goes: a developer's shadow pod (a route) or the original pods (the default).
public struct Upstream: Sendable, Hashable, CustomStringConvertible {
    /// For people: the shadow pod's name, or the stuntman Service's.
    public var name: String
    /// The address dialled: an IP, or a name resolved through the pod's DNS.
    public var host: String

    public init(name: String, host: String) {
        self.name = name
        self.host = host
    }

    public var description: String { name == host ? name : "\(name) (\(host))" }
}

/// One developer's route: requests whose header `header` (compared without regard to case, as HTTP names are) has
/// exactly the value `value` go to `upstream`, on the port they came in on.
public struct Route: Sendable, Hashable, CustomStringConvertible {
    /// Lower case.
    public var header: String
    public var value: String
    public var upstream: Upstream
    /// The session that owns it (its Lease's name): one route per session.
    public var owner: String

    public init(header: String, value: String, upstream: Upstream, owner: String) {
        self.header = header.lowercased()
        self.value = value
        self.upstream = upstream
        self.owner = owner
    }

    public var description: String { "\(header): \(value) → \(upstream) (session \(owner))" }
}

/// The router's routes, a pure value: built from the sessions' Leases, asked for each request (or HTTP/2 stream).
/// Several routes at once, each on its own header name or value; the first route whose header matches wins (routes
/// are kept in a stable order: by header, value, then owner, so two routers decide alike).
public struct RouteTable: Sendable, Hashable {
    public private(set) var routes: [Route]

    public init(_ routes: [Route] = []) {
        self.routes = routes.sorted { ($0.header, $0.value, $0.owner) < ($1.header, $1.value, $1.owner) }
    }

    /// The distinct header names routed on, lower case (what a request's headers are looked up by).
    public var headerNames: [String] {
        var seen: Set<String> = []
        return routes.map(\.header).filter { seen.insert($0).inserted }
    }

    /// The route for a request whose headers are `value(name)` (name lower case; every value of a repeated header is
    /// tried); nil: the default upstream.
    public func route(_ values: (String) -> [String]) -> Route? {
        guard !routes.isEmpty else { return nil }
        var cache: [String: [String]] = [:]
        for route in routes {
            let found = cache[route.header] ?? values(route.header)
            cache[route.header] = found
            if found.contains(where: { Self.trimmed($0) == route.value }) { return route }
        }
        return nil
    }

    /// A header value without the optional white space around it (RFC 9110 §5.5).
    static func trimmed(_ value: String) -> String {
        value.trimmingCharacters(in: CharacterSet(charactersIn: " \t"))
    }
}
