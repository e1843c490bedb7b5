import KtWire
import Testing

@testable import KtTun

@Suite struct RouteConflictTests {
    private func prefix(_ text: String) throws -> AnyIPPrefix { try AnyIPPrefix.parse(text) }

    /// A laptop's table: default via Wi-Fi, the LAN, a corporate VPN for 10/8, and its own addresses.
    private func laptop() throws -> [Route] {
        [
            Route(
                destination: try prefix("0.0.0.0/0"), gateway: IPAddress("192.168.1.1"), interfaceName: "wlan0",
                metric: 600, protocol: .dhcp),
            Route(destination: try prefix("192.168.1.0/24"), interfaceName: "wlan0", protocol: .kernel, scope: .link),
            Route(
                destination: try prefix("10.0.0.0/8"), gateway: IPAddress("172.16.0.1"), interfaceName: "vpn0",
                protocol: .static),
            Route(destination: try prefix("10.96.3.0/24"), interfaceName: "docker0", protocol: .kernel, scope: .link),
            Route(
                destination: try prefix("192.168.1.23"), preferredSource: IPAddress("192.168.1.23"),
                interfaceName: "wlan0",
                table: .local, protocol: .kernel, scope: .host, type: .local),
            Route(
                destination: try prefix("192.168.1.255"), interfaceName: "wlan0", table: .local, protocol: .kernel,
                scope: .link, type: .broadcast),
            Route(
                destination: try prefix("::/0"), gateway: IPAddress("fe80::1"), interfaceName: "wlan0", metric: 1024,
                protocol: .ra),
        ]
    }

    @Test func findsWhatAClusterRangeWouldCollideWith() throws {
        let conflicts = RouteConflicts.find(for: [try prefix("10.96.0.0/12")], in: try laptop())
        #expect(conflicts.map(\.kind) == [.shadowed, .moreSpecific])
        #expect(conflicts[0].existing.interfaceName == "vpn0")
        #expect(
            conflicts[0].explanation
                == "'10.0.0.0/8 via 172.16.0.1 dev vpn0 proto static' contains 10.96.0.0/12: traffic to 10.96.0.0/12 that now uses dev vpn0 would go to the cluster instead"
        )
        #expect(
            conflicts[1].explanation
                == "'10.96.3.0/24 dev docker0 proto kernel scope link' is more specific than 10.96.0.0/12: traffic to 10.96.3.0/24 would keep going to dev docker0, not to the cluster"
        )
    }

    @Test func defaultRoutesAndBroadcastsAreNotConflicts() throws {
        #expect(
            RouteConflicts.find(for: [try prefix("172.20.0.0/16"), try prefix("fd00::/8")], in: try laptop()).isEmpty)
    }

    @Test func localAddressesAndSamePrefixes() throws {
        let conflicts = RouteConflicts.find(
            for: [try prefix("192.168.0.0/16"), try prefix("10.0.0.0/8")], in: try laptop())
        #expect(conflicts.map(\.kind) == [.moreSpecific, .localAddress, .samePrefix, .moreSpecific])
        #expect(
            conflicts[1].explanation
                == "192.168.1.23 is an address of this machine (dev wlan0) and lies inside 192.168.0.0/16")
    }

    @Test func ktctlRoutesSayWhoInstalledThem() throws {
        let leftover = Route(destination: try prefix("10.96.0.0/12"), interfaceName: "kt0", scope: .link)
        let conflicts = RouteConflicts.find(for: [try prefix("10.96.0.0/12")], in: [leftover])
        #expect(conflicts.first?.kind == .samePrefix)
        #expect(conflicts.first?.explanation.contains("installed by ktctl") == true)
    }

    @Test func ipRouteDescriptions() throws {
        let routes = try laptop()
        #expect(routes[0].ipRouteDescription == "default via 192.168.1.1 dev wlan0 proto dhcp metric 600")
        #expect(
            routes[4].ipRouteDescription
                == "local 192.168.1.23 dev wlan0 table local proto kernel scope host src 192.168.1.23")
        let thrown = Route(destination: try prefix("10.96.0.1/32"), table: RouteTable(rawValue: 107), type: .throw)
        #expect(thrown.ipRouteDescription == "throw 10.96.0.1 table 107 proto ktctl")
    }
}
