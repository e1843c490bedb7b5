import CNetlink
import Glibc
import KtWire
import NIOConcurrencyHelpers

/// A network interface.
public struct Link: Hashable, Sendable {
    public var index: InterfaceIndex
    public var name: String
    public var mtu: UInt32
    public var isUp: Bool
    public var isLoopback: Bool
    /// RFC 2863 operational state (`CNL_OPER_*`); a TUN that is up reports unknown (0).
    public var operationalState: UInt8
    /// The rtnetlink kind: `tun`, `veth`, `bridge`, …; empty for lo and most physical devices.
    public var kind: String
}

/// An address on an interface.
public struct InterfaceAddress: Hashable, Sendable {
    public var interface: InterfaceIndex
    public var address: IPAddress
    public var prefixLength: Int
    /// Skip IPv6 duplicate address detection so the address is usable at once.
    public var noDAD: Bool
    /// Do not add the prefix route the kernel otherwise derives.
    public var noPrefixRoute: Bool

    public init(
        interface: InterfaceIndex, address: IPAddress, prefixLength: Int, noDAD: Bool = true,
        noPrefixRoute: Bool = false
    ) {
        self.interface = interface
        self.address = address
        self.prefixLength = prefixLength
        self.noDAD = noDAD
        self.noPrefixRoute = noPrefixRoute
    }
}

/// The address families a listing can be limited to.
public enum AddressFamily: Int32, Sendable {
    case any = 0
    case ipv4 = 2
    case ipv6 = 10
}

/// Links, addresses and routes of one network namespace, through CNetlink's netlink socket.
///
/// The socket belongs to the namespace of the thread that made this object, for its whole life. Calls are
/// serialised by a lock, so one object may be shared between threads.
public final class Netlink: @unchecked Sendable {
    private let context: OpaquePointer
    private let lock = NIOLock()

    /// Opens a netlink socket in the current thread's network namespace.
    public init() throws(NetlinkError) {
        var context: OpaquePointer?
        let result = cnl_context_create(&context)
        guard result == 0, let context else { throw NetlinkError(operation: "open netlink socket", code: -result) }
        self.context = context
    }

    deinit { cnl_context_destroy(context) }

    /// Whether this thread has CAP_NET_ADMIN: checked before anything is changed, so the error says what to do
    /// instead of failing halfway.
    public static var haveNetAdmin: Bool { cnl_have_net_admin() == 1 }

    /// Runs a CNetlink call under the lock and turns its negative errno into a ``NetlinkError``.
    private func call(_ operation: @autoclosure () -> String, _ body: (OpaquePointer) -> Int32) throws(NetlinkError) {
        let (result, message): (Int32, String) = lock.withLock {
            let result = body(context)
            return (result, result == 0 ? "" : String(cString: cnl_context_last_message(context)))
        }
        guard result == 0 else { throw NetlinkError(operation: operation(), code: -result, kernelMessage: message) }
    }

    // MARK: - Links

    public func links() throws(NetlinkError) -> [Link] {
        var list: UnsafeMutablePointer<cnl_link>?
        var count = 0
        try call("list links") { cnl_link_list($0, &list, &count) }
        defer { cnl_free(list) }
        guard let list else { return [] }
        return (0..<count).map { Link(list[$0]) }
    }

    public func link(named name: String) throws(NetlinkError) -> Link {
        var link = cnl_link()
        try call("find interface \(name)") { cnl_link_get_by_name($0, name, &link) }
        return Link(link)
    }

    public func link(index: InterfaceIndex) throws(NetlinkError) -> Link {
        var link = cnl_link()
        try call("find interface \(index)") { cnl_link_get_by_index($0, index.rawValue, &link) }
        return Link(link)
    }

    public func setMTU(_ mtu: UInt32, of index: InterfaceIndex) throws(NetlinkError) {
        try call("set MTU \(mtu) on interface \(index)") { cnl_link_set_mtu($0, index.rawValue, mtu) }
    }

    public func setUp(_ up: Bool, _ index: InterfaceIndex) throws(NetlinkError) {
        try call("set interface \(index) \(up ? "up" : "down")") { cnl_link_set_up($0, index.rawValue, up) }
    }

    public func deleteLink(_ index: InterfaceIndex) throws(NetlinkError) {
        try call("delete interface \(index)") { cnl_link_delete($0, index.rawValue) }
    }

    // MARK: - Addresses

    public func addresses(family: AddressFamily = .any, interface: InterfaceIndex? = nil) throws(NetlinkError)
        -> [InterfaceAddress]
    {
        var list: UnsafeMutablePointer<cnl_address>?
        var count = 0
        try call("list addresses") { cnl_addr_list($0, family.rawValue, interface?.rawValue ?? 0, &list, &count) }
        defer { cnl_free(list) }
        guard let list else { return [] }
        return (0..<count).compactMap { InterfaceAddress(list[$0]) }
    }

    public func addAddress(_ address: InterfaceAddress) throws(NetlinkError) {
        var raw = address.raw
        try call("add address \(address.address)/\(address.prefixLength) to interface \(address.interface)") {
            cnl_addr_add($0, &raw)
        }
    }

    public func deleteAddress(_ address: InterfaceAddress) throws(NetlinkError) {
        var raw = address.raw
        try call("delete address \(address.address)/\(address.prefixLength) from interface \(address.interface)") {
            cnl_addr_delete($0, &raw)
        }
    }

    // MARK: - Routes

    /// Every route of every table, with interface names filled in.
    public func routes(family: AddressFamily = .any) throws(NetlinkError) -> [Route] {
        var list: UnsafeMutablePointer<cnl_route>?
        var count = 0
        try call("list routes") { cnl_route_list($0, family.rawValue, &list, &count) }
        defer { cnl_free(list) }
        guard let list else { return [] }
        let names = Dictionary((try links()).map { ($0.index, $0.name) }, uniquingKeysWith: { first, _ in first })
        return (0..<count).compactMap { index in
            guard var route = Route(list[index]) else { return nil }
            route.interfaceName = route.outputInterface.flatMap { names[$0] }
            return route
        }
    }

    public func addRoute(_ route: Route) throws(NetlinkError) {
        var raw = route.raw
        try call("add route \(route.ipRouteDescription)") { cnl_route_add($0, &raw) }
    }

    public func replaceRoute(_ route: Route) throws(NetlinkError) {
        var raw = route.raw
        try call("replace route \(route.ipRouteDescription)") { cnl_route_replace($0, &raw) }
    }

    /// Deletes the first route matching `route`'s destination, table and its other set fields.
    public func deleteRoute(_ route: Route) throws(NetlinkError) {
        var raw = route.raw
        raw.scope = UInt8(CNL_RT_SCOPE_AUTO)
        try call("delete route \(route.ipRouteDescription)") { cnl_route_delete($0, &raw) }
    }

    /// How the kernel would send a packet to `address` (`ip route get`).
    public func routeGet(_ address: IPAddress) throws(NetlinkError) -> Route {
        var destination = cnl_ip(address: address, prefixLength: nil)
        var out = cnl_route()
        try call("look up the route to \(address)") { cnl_route_get($0, &destination, &out) }
        guard var route = Route(out) else {
            throw NetlinkError(operation: "look up the route to \(address)", code: EAFNOSUPPORT)
        }
        route.interfaceName = route.outputInterface.flatMap { try? link(index: $0).name }
        return route
    }
}

// MARK: - Conversions between CNetlink's structs and Swift values

extension cnl_ip {
    init(address: IPAddress, prefixLength: Int?) {
        self.init()
        switch address {
        case .v4(let v4):
            family = CNL_AF_INET
            prefix_len = UInt8(prefixLength ?? 32)
            withUnsafeMutableBytes(of: &bytes) { raw in raw.storeBytes(of: v4.bits.bigEndian, as: UInt32.self) }
        case .v6(let v6):
            family = CNL_AF_INET6
            prefix_len = UInt8(prefixLength ?? 128)
            withUnsafeMutableBytes(of: &bytes) { raw in
                raw.storeBytes(of: UInt64(truncatingIfNeeded: v6.bits >> 64).bigEndian, as: UInt64.self)
                raw.storeBytes(of: UInt64(truncatingIfNeeded: v6.bits).bigEndian, toByteOffset: 8, as: UInt64.self)
            }
        }
    }

    init(prefix: AnyIPPrefix) {
        switch prefix {
        case .v4(let p): self.init(address: .v4(p.network), prefixLength: p.length)
        case .v6(let p): self.init(address: .v6(p.network), prefixLength: p.length)
        }
    }

    /// The address, or nil for family 0 (none).
    var address: IPAddress? {
        var copy = bytes
        return withUnsafeBytes(of: &copy) { raw -> IPAddress? in
            switch family {
            case CNL_AF_INET:
                return .v4(IPv4Address(bits: UInt32(bigEndian: raw.loadUnaligned(as: UInt32.self))))
            case CNL_AF_INET6:
                let high = UInt64(bigEndian: raw.loadUnaligned(as: UInt64.self))
                let low = UInt64(bigEndian: raw.loadUnaligned(fromByteOffset: 8, as: UInt64.self))
                return .v6(IPv6Address(bits: UInt128(high) << 64 | UInt128(low)))
            default:
                return nil
            }
        }
    }

    var prefix: AnyIPPrefix? {
        switch address {
        case .v4(let a): return .v4(IPv4Prefix(containing: a, length: min(Int(prefix_len), 32)))
        case .v6(let a): return .v6(IPv6Prefix(containing: a, length: min(Int(prefix_len), 128)))
        case nil: return nil
        }
    }
}

extension Link {
    init(_ raw: cnl_link) {
        var copy = raw
        index = InterfaceIndex(raw.index)
        name = withUnsafeBytes(of: &copy.name) { String(cString: $0.bindMemory(to: CChar.self).baseAddress!) }
        kind = withUnsafeBytes(of: &copy.kind) { String(cString: $0.bindMemory(to: CChar.self).baseAddress!) }
        mtu = raw.mtu
        isUp = raw.flags & CNL_IFF_UP != 0
        isLoopback = raw.flags & CNL_IFF_LOOPBACK != 0
        operationalState = raw.operstate
    }
}

extension InterfaceAddress {
    init?(_ raw: cnl_address) {
        guard let address = raw.local.address else { return nil }
        self.init(
            interface: InterfaceIndex(raw.ifindex), address: address, prefixLength: Int(raw.local.prefix_len),
            noDAD: raw.flags & CNL_IFA_F_NODAD != 0, noPrefixRoute: raw.flags & CNL_IFA_F_NOPREFIXROUTE != 0)
    }

    var raw: cnl_address {
        var raw = cnl_address()
        raw.ifindex = interface.rawValue
        raw.local = cnl_ip(address: address, prefixLength: prefixLength)
        raw.flags = (noDAD ? CNL_IFA_F_NODAD : 0) | (noPrefixRoute ? CNL_IFA_F_NOPREFIXROUTE : 0)
        return raw
    }
}

extension Route {
    init?(_ raw: cnl_route) {
        guard let destination = raw.dst.prefix else { return nil }
        self.init(
            destination: destination, gateway: raw.gateway.address, preferredSource: raw.prefsrc.address,
            outputInterface: raw.oif > 0 ? InterfaceIndex(raw.oif) : nil, metric: raw.metric,
            table: RouteTable(rawValue: raw.table == 0 ? RouteTable.main.rawValue : raw.table),
            protocol: RouteProtocol(rawValue: raw.protocol), scope: RouteScope(rawValue: raw.scope),
            type: RouteType(rawValue: raw.type) ?? .unspecified)
    }

    var raw: cnl_route {
        var raw = cnl_route()
        raw.dst = cnl_ip(prefix: destination)
        if let gateway { raw.gateway = cnl_ip(address: gateway, prefixLength: nil) }
        if let preferredSource { raw.prefsrc = cnl_ip(address: preferredSource, prefixLength: nil) }
        raw.oif = outputInterface?.rawValue ?? 0
        raw.metric = metric
        raw.table = table.rawValue
        raw.protocol = self.protocol.rawValue
        raw.scope = scope.rawValue
        raw.type = type.rawValue
        return raw
    }
}
