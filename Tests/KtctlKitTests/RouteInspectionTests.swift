import Foundation
import Glibc
import KtTun
import KtWire
import NamespaceTestSupport
import Testing

@testable import KtctlKit

@Suite struct RouteReportTests {
    private let routes: [Route] = [
        Route(destination: .v6(try! IPv6Prefix.parse("fd00:96::/108")), interfaceName: "kt0", metric: 1024),
        Route(
            destination: .v4(try! IPv4Prefix.parse("0.0.0.0/0")), gateway: IPAddress("192.168.1.1"),
            interfaceName: "eth0", protocol: .dhcp),
        Route(
            destination: .v4(try! IPv4Prefix.parse("10.0.0.0/8")), interfaceName: "vpn0", protocol: .static,
            scope: .link),
        Route(destination: .v4(try! IPv4Prefix.parse("10.96.0.0/12")), interfaceName: "kt0", scope: .link),
    ]

    @Test func listingPutsIPv4FirstAndMarksKtctlRoutes() {
        let report = RouteReport(routes: routes, check: [])
        #expect(
            report.text() == """
                default via 192.168.1.1 dev eth0 proto dhcp
                10.0.0.0/8 dev vpn0 proto static scope link
                10.96.0.0/12 dev kt0 proto ktctl scope link    # ktctl
                fd00:96::/108 dev kt0 proto ktctl metric 1024    # ktctl
                """)
        #expect(report.status == 0)
    }

    @Test func checkExplainsAndExitsTwo() throws {
        let report = RouteReport(
            routes: routes, check: [try AnyIPPrefix.parse("10.100.0.0/16"), try AnyIPPrefix.parse("172.16.0.0/12")])
        #expect(report.status == 2)
        let lines = report.text().split(separator: "\n").map(String.init)
        #expect(lines[0] == "10.100.0.0/16: 2 conflicting routes")
        #expect(lines[1].hasPrefix("  shadowed: '10.0.0.0/8 dev vpn0 proto static scope link' contains 10.100.0.0/16"))
        #expect(lines[2].hasPrefix("  shadowed: '10.96.0.0/12 dev kt0 proto ktctl scope link' (installed by ktctl"))
        #expect(lines[3] == "172.16.0.0/12: no conflict; no existing route overlaps it (default routes aside)")
        let clean = RouteReport(routes: routes, check: [try AnyIPPrefix.parse("172.16.0.0/12")])
        #expect(clean.status == 0)
    }

    @Test func jsonForScripts() throws {
        let listing =
            try JSONSerialization.jsonObject(with: Data(RouteReport(routes: routes, check: []).json().utf8))
            as? [String: Any]
        let entries = try #require(listing?["routes"] as? [[String: Any]])
        #expect(entries.count == 4)
        #expect(entries[0]["dst"] as? String == "default" && entries[0]["gateway"] as? String == "192.168.1.1")
        #expect(entries[2]["ktctl"] as? Bool == true && entries[2]["dev"] as? String == "kt0")
        let check = RouteReport(routes: routes, check: [try AnyIPPrefix.parse("10.96.0.0/12")]).json()
        let parsed = try JSONSerialization.jsonObject(with: Data(check.utf8)) as? [String: Any]
        #expect(parsed?["conflict"] as? Bool == true)
        let checks = try #require(parsed?["checks"] as? [[String: Any]])
        let kinds = (checks.first?["conflicts"] as? [[String: Any]])?.compactMap { $0["kind"] as? String }
        #expect(kinds == ["shadowed", "same-prefix"])
    }
}

/// `ktctl route` run as a user would, in a namespace with routes the test made.
@Suite(.serialized, .enabled(if: TestNamespace.unavailableReason == nil, "needs root and iproute2"))
struct KtctlRouteCommandTests {
    static let ktctl = builtExecutable("ktctl")

    @Test func checkFindsTheOverlapTheTestInstalledAndExitsZeroWhenNone() throws {
        let ktctl = try #require(Self.ktctl, "build ktctl first (make build)")
        let namespace = try TestNamespace(prefix: "ktctl-route")
        defer { namespace.delete() }
        for command in [
            ["ip", "link", "add", "lan0", "type", "veth", "peer", "name", "lan1"],
            ["ip", "addr", "add", "10.0.0.5/8", "dev", "lan0"],
            ["ip", "link", "set", "lan0", "up"],
            ["ip", "link", "set", "lan1", "up"],
            ["ip", "route", "add", "10.96.0.0/12", "dev", "lan1", "proto", "107"],
        ] {
            try TestNamespace.check(namespace.run(command))
        }
        let listing = try namespace.run([ktctl, "route"])
        #expect(listing.status == 0)
        #expect(listing.output.contains("10.0.0.0/8 dev lan0 proto kernel scope link src 10.0.0.5\n"))
        #expect(listing.output.contains("10.96.0.0/12 dev lan1 proto ktctl scope link    # ktctl"))
        #expect(listing.output.contains("local 10.0.0.5 dev lan0 table local proto kernel scope host src 10.0.0.5"))

        let conflict = try namespace.run([ktctl, "route", "--check", "10.100.0.0/16"])
        #expect(conflict.status == 2)
        #expect(
            conflict.output.contains(
                "shadowed: '10.0.0.0/8 dev lan0 proto kernel scope link src 10.0.0.5' contains 10.100.0.0/16"))

        let none = try namespace.run([ktctl, "route", "--check", "172.16.0.0/12,fd00:10::/64"])
        #expect(none.status == 0, "\(none.output)")
        #expect(none.output.contains("172.16.0.0/12: no conflict"))

        let json = try namespace.run([ktctl, "route", "--check", "10.0.0.0/8", "-o", "json"])
        #expect(json.status == 2)
        let parsed = try JSONSerialization.jsonObject(with: Data(json.output.utf8)) as? [String: Any]
        #expect(parsed?["conflict"] as? Bool == true)

        let bad = try namespace.run([ktctl, "route", "--check", "10.1.2.3/8"])
        #expect(bad.status != 0 && bad.error.contains("did you mean 10.0.0.0/8?"))
    }
}
