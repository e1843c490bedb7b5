import Foundation
import KubeKit
import Testing

@testable import RouterKit

@Suite struct RouteTableTests {
    func route(_ header: String, _ value: String, _ host: String, owner: String = "o") -> Route {
        Route(header: header, value: value, upstream: Upstream(name: host, host: host), owner: owner)
    }

    @Test func headerNamesMatchWithoutCaseAndValuesExactly() {
        let table = RouteTable([route("VERSION", "a", "10.0.0.1"), route("x-dev", "bob", "10.0.0.2")])
        let headers = ["version": ["a"], "x-dev": ["alice"]]
        #expect(table.route { headers[$0] ?? [] }?.upstream.host == "10.0.0.1")
        #expect(table.route { ["x-dev": ["bob"]][$0] ?? [] }?.upstream.host == "10.0.0.2")
        #expect(table.route { ["version": ["A"]][$0] ?? [] } == nil)
        #expect(table.route { ["version": [" a\t"]][$0] ?? [] }?.upstream.host == "10.0.0.1")
        #expect(table.route { _ in [] } == nil)
        #expect(table.headerNames == ["version", "x-dev"])
    }

    @Test func everyValueOfARepeatedHeaderIsTried() {
        let table = RouteTable([route("version", "b", "10.0.0.2")])
        #expect(table.route { $0 == "version" ? ["a", "b"] : [] }?.upstream.host == "10.0.0.2")
    }

    @Test func orderIsStableWhateverTheInput() {
        let first = RouteTable([route("v", "b", "2", owner: "y"), route("v", "a", "1", owner: "x")])
        let second = RouteTable([route("v", "a", "1", owner: "x"), route("v", "b", "2", owner: "y")])
        #expect(first == second)
        #expect(first.routes.map(\.value) == ["a", "b"])
    }

    func lease(_ name: String, service: String, route: MeshRoute?, renewed: String, duration: Int = 30) -> Lease {
        var metadata = ObjectMeta(name: name, namespace: "default")
        metadata.labels = [MeshRoute.serviceLabel: service]
        if let route { metadata.annotations = [MeshRoute.annotation: route.encoded] }
        return Lease(metadata: metadata, spec: Lease.Spec(leaseDurationSeconds: duration, renewTime: renewed))
    }

    @Test func leasesMakeTheTableAndStaleOnesAreLeftOut() throws {
        let now = try #require(MicroTime.parse("2026-12-05T10:00:00.000000Z"))
        let leases = [
            lease(
                "kt-mesh-a", service: "tomcat",
                route: MeshRoute(header: "VERSION", value: "a", name: "p-a", host: "10.244.0.5"),
                renewed: "2026-12-05T09:59:50.000000Z"),
            lease(
                "kt-mesh-b", service: "tomcat",
                route: MeshRoute(header: "VERSION", value: "b", name: "p-b", host: "10.244.0.6"),
                renewed: "2026-12-05T09:59:00.000000Z"),
            lease(
                "kt-mesh-c", service: "other",
                route: MeshRoute(header: "VERSION", value: "c", name: "p-c", host: "10.244.0.7"),
                renewed: "2026-12-05T09:59:59.000000Z"),
            lease("kt-mesh-d", service: "tomcat", route: nil, renewed: "2026-12-05T09:59:59.000000Z"),
        ]
        let (table, skipped) = MeshRoute.table(service: "tomcat", leases: leases, serverNow: now)
        #expect(table.routes.map(\.owner) == ["kt-mesh-a"])
        #expect(table.routes.first?.upstream == Upstream(name: "p-a", host: "10.244.0.5"))
        #expect(skipped["kt-mesh-b"]?.contains("stale") == true)
        #expect(skipped["kt-mesh-d"] == nil)
    }

    @Test func flagsParseOrSayWhatIsWrong() throws {
        #expect(try RouterFlags.ports("8080,9090:80").map(\.defaultPort) == [8080, 80])
        #expect(throws: RouterFlagError.self) { try RouterFlags.ports("8080:x") }
        #expect(throws: RouterFlagError.self) { try RouterFlags.ports("") }
        #expect(try RouterFlags.upstream("tomcat-kt-stuntman=10.96.0.9").host == "10.96.0.9")
        #expect(try RouterFlags.upstream("tomcat-kt-stuntman").host == "tomcat-kt-stuntman")
        #expect(try RouterFlags.route("VERSION:v2=127.0.0.1").header == "version")
        #expect(throws: RouterFlagError.self) { try RouterFlags.route("bad header:v=h") }
        #expect(throws: RouterFlagError.self) { try RouterFlags.route("nocolon=h") }
    }

    @Test func h2cHeadersFrameIsAValidFrame() {
        var buffer: [UInt8] = []
        H2CUpgrade.appendInteger(10, prefixBits: 7, to: &buffer)
        #expect(buffer == [10])
        buffer = []
        H2CUpgrade.appendInteger(1337, prefixBits: 5, to: &buffer)
        #expect(buffer == [31, 154, 10])  // RFC 7541 C.1.2
    }
}
