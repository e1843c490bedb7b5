import KtWire

/// A network interface's index, as the kernel numbers them.
public struct InterfaceIndex: RawRepresentable, Hashable, Sendable, Comparable, CustomStringConvertible {
    public var rawValue: Int32
    public init(rawValue: Int32) { self.rawValue = rawValue }
    public init(_ rawValue: Int32) { self.rawValue = rawValue }
    public static func < (lhs: InterfaceIndex, rhs: InterfaceIndex) -> Bool { lhs.rawValue < rhs.rawValue }
    public var description: String { String(rawValue) }
}

/// A routing table number (`ip route show table N`).
public struct RouteTable: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public var rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }
    public static let `default` = RouteTable(rawValue: 253)
    public static let main = RouteTable(rawValue: 254)
    public static let local = RouteTable(rawValue: 255)
    public var description: String {
        switch self {
        case .default: return "default"
        case .main: return "main"
        case .local: return "local"
        default: return String(rawValue)
        }
    }
}

/// Who installed a route (`proto` in `ip route`).
public struct RouteProtocol: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public var rawValue: UInt8
    public init(rawValue: UInt8) { self.rawValue = rawValue }
    public static let unspecified = RouteProtocol(rawValue: 0)
    public static let redirect = RouteProtocol(rawValue: 1)
    public static let kernel = RouteProtocol(rawValue: 2)
    public static let boot = RouteProtocol(rawValue: 3)
    public static let `static` = RouteProtocol(rawValue: 4)
    public static let dhcp = RouteProtocol(rawValue: 16)
    public static let ra = RouteProtocol(rawValue: 9)
    /// Every route ktctl installs carries this tag (107, 'k'), so a later run finds the routes of a session that
    /// crashed. See CNL_RTPROT_KTCTL for why this number.
    public static let ktctl = RouteProtocol(rawValue: 0x6B)

    private static let names: [UInt8: String] = [
        0: "unspec", 1: "redirect", 2: "kernel", 3: "boot", 4: "static", 8: "gated", 9: "ra", 10: "mrt", 11: "zebra",
        12: "bird", 13: "dnrouted", 14: "xorp", 15: "ntk", 16: "dhcp", 17: "mrouted", 18: "keepalived", 42: "babel",
        99: "openr", 107: "ktctl", 186: "bgp", 187: "isis", 188: "ospf", 189: "rip", 192: "eigrp",
    ]
    public var description: String { Self.names[rawValue] ?? String(rawValue) }
}

/// The kind of route (`RTN_*`): where matching packets go.
public enum RouteType: UInt8, Hashable, Sendable, CustomStringConvertible, CaseIterable {
    case unspecified = 0
    case unicast = 1
    case local = 2
    case broadcast = 3
    case anycast = 4
    case multicast = 5
    case blackhole = 6
    case unreachable = 7
    case prohibit = 8
    /// Stop looking in this table: the next policy rule decides. How an excluded range inside a routed one is
    /// kept out of the tunnel when it lives in its own table.
    case `throw` = 9

    public var description: String {
        switch self {
        case .unspecified: return "unspec"
        case .unicast: return "unicast"
        case .local: return "local"
        case .broadcast: return "broadcast"
        case .anycast: return "anycast"
        case .multicast: return "multicast"
        case .blackhole: return "blackhole"
        case .unreachable: return "unreachable"
        case .prohibit: return "prohibit"
        case .throw: return "throw"
        }
    }
}

/// How far a route's destination is (`RT_SCOPE_*`).
public struct RouteScope: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public var rawValue: UInt8
    public init(rawValue: UInt8) { self.rawValue = rawValue }
    public static let universe = RouteScope(rawValue: 0)
    public static let site = RouteScope(rawValue: 200)
    public static let link = RouteScope(rawValue: 253)
    public static let host = RouteScope(rawValue: 254)
    /// When adding: choose as `ip route add` does. When deleting: any scope.
    public static let automatic = RouteScope(rawValue: 255)
    public var description: String {
        switch self {
        case .universe: return "global"
        case .site: return "site"
        case .link: return "link"
        case .host: return "host"
        default: return String(rawValue)
        }
    }
}

/// One route of the kernel's routing tables.
public struct Route: Hashable, Sendable {
    public var destination: AnyIPPrefix
    public var gateway: IPAddress?
    public var preferredSource: IPAddress?
    public var outputInterface: InterfaceIndex?
    /// Filled in by listings, for people: the name of `outputInterface`.
    public var interfaceName: String?
    public var metric: UInt32
    public var table: RouteTable
    public var `protocol`: RouteProtocol
    public var scope: RouteScope
    public var type: RouteType

    public init(
        destination: AnyIPPrefix, gateway: IPAddress? = nil, preferredSource: IPAddress? = nil,
        outputInterface: InterfaceIndex? = nil, interfaceName: String? = nil, metric: UInt32 = 0,
        table: RouteTable = .main, protocol: RouteProtocol = .ktctl, scope: RouteScope = .automatic,
        type: RouteType = .unicast
    ) {
        self.destination = destination
        self.gateway = gateway
        self.preferredSource = preferredSource
        self.outputInterface = outputInterface
        self.interfaceName = interfaceName
        self.metric = metric
        self.table = table
        self.protocol = `protocol`
        self.scope = scope
        self.type = type
    }

    /// True for `0.0.0.0/0` and `::/0`.
    public var isDefault: Bool {
        switch destination {
        case .v4(let prefix): return prefix.length == 0
        case .v6(let prefix): return prefix.length == 0
        }
    }

    /// True if ktctl installed it.
    public var isOwnedByKtctl: Bool { self.protocol == .ktctl }

    /// The route in `ip route show table all` form: `10.96.0.0/12 dev kt0 proto ktctl scope link`, with
    /// `table` shown unless it is main and the type shown unless it is unicast.
    public var ipRouteDescription: String {
        var words: [String] = []
        if type != .unicast { words.append(type.description) }
        words.append(isDefault ? "default" : Self.shortText(destination))
        if let gateway { words += ["via", gateway.description] }
        if let name = interfaceName ?? outputInterface.map({ "if\($0)" }) { words += ["dev", name] }
        if table != .main { words += ["table", table.description] }
        if self.protocol != .boot { words += ["proto", self.protocol.description] }
        if scope != .universe, scope != .automatic { words += ["scope", scope.description] }
        if let preferredSource { words += ["src", preferredSource.description] }
        if metric != 0 { words += ["metric", String(metric)] }
        return words.joined(separator: " ")
    }

    /// A prefix as `ip` prints it: a single address without its `/32` or `/128`.
    static func shortText(_ prefix: AnyIPPrefix) -> String {
        switch prefix {
        case .v4(let p): return p.length == 32 ? p.network.description : p.description
        case .v6(let p): return p.length == 128 ? p.network.description : p.description
        }
    }
}
