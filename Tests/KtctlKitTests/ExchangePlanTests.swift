import Foundation
import KubeKit
import Testing

@testable import KtctlKit

/// The pure parts of exchange, preview and forward: flags read, Services' ports matched and refused with what exists,
/// a Service's ready pod picked.
struct ExchangePlanTests {
    static func service(_ ports: [ServicePort], selector: [String: String] = ["app": "tomcat"]) -> Service {
        Service(metadata: ObjectMeta(name: "tomcat"), spec: Service.Spec(selector: selector, ports: ports))
    }

    @Test func exposeListsAreReadAndBadOnesSayWhy() throws {
        #expect(
            try ExposedPort.parseList("8080, 9090:80,7000:http")
                == [
                    ExposedPort(local: 8080), ExposedPort(local: 9090, remote: "80"),
                    ExposedPort(local: 7000, remote: "http"),
                ])
        for bad in ["", "0", "70000", "a:80", "80:", "80:90:100", "80:ht tp", "80:70000"] {
            #expect(throws: PlanError.self, "\(bad)") { try ExposedPort.parseList(bad) }
        }
    }

    @Test func targetsTakeKtConnectsForms() throws {
        #expect(try WorkloadTarget.parse("tomcat") == .service("tomcat"))
        #expect(try WorkloadTarget.parse("svc/tomcat") == .service("tomcat"))
        #expect(try WorkloadTarget.parse("service/tomcat") == .service("tomcat"))
        #expect(try WorkloadTarget.parse("deploy/tomcat") == .deployment("tomcat"))
        #expect(try WorkloadTarget.parse("deployment/tomcat") == .deployment("tomcat"))
        #expect(try WorkloadTarget.parse("pod/tomcat-1", allowPods: true) == .pod("tomcat-1"))
        // pod/ only where the command takes pods (a `where` on the last pattern alone once let `pod/` through).
        #expect(throws: PlanError.self) { try WorkloadTarget.parse("pod/tomcat-1") }
        #expect(throws: PlanError.self) { try WorkloadTarget.parse("po/tomcat-1") }
        #expect(throws: PlanError.self) { try WorkloadTarget.parse("svc/Tomcat") }
        #expect(throws: PlanError.self) { try WorkloadTarget.parse("job/x") }
    }

    @Test func portsMatchByNumberNameOrTargetAndEveryProtocolOfANumber() throws {
        let dns = Self.service([
            ServicePort(name: "dns-tcp", port: 53, targetPort: .int(5353), protocol: "TCP"),
            ServicePort(name: "dns", port: 53, targetPort: .int(5353), protocol: "UDP"),
            ServicePort(name: "http", port: 80, targetPort: .string("web")),
        ])
        var pod = Pod(metadata: ObjectMeta(name: "p"), spec: PodSpec(containers: [Container(name: "c", image: "x")]))
        pod.spec?.containers[0].ports = [ContainerPort(name: "web", containerPort: 8080)]
        let both = try ExchangePlan.ports([ExposedPort(local: 5300, remote: "53")], of: dns, pods: [pod])
        #expect(both.map(\.protocol) == ["TCP", "UDP"])
        #expect(both.allSatisfy { $0.targetPort == 5353 && $0.local == 5300 })
        let named = try ExchangePlan.ports([ExposedPort(local: 9000, remote: "http")], of: dns, pods: [pod])
        #expect(
            named == [
                PortMapping(
                    servicePort: 80, name: "http", targetPort: 8080, targetName: "web", local: 9000, protocol: "TCP")
            ])
        // kt-connect's form: the target port's number.
        let byTarget = try ExchangePlan.ports([ExposedPort(local: 1, remote: "5353")], of: dns, pods: [pod])
        #expect(byTarget.count == 2)
        // The container ports: each target port once per protocol, a name only once.
        #expect(
            ExchangePlan.containerPorts(both + named)
                == [
                    ShadowSpec.Port(port: 5353, protocol: "TCP"), ShadowSpec.Port(port: 5353, protocol: "UDP"),
                    ShadowSpec.Port(name: "web", port: 8080, protocol: "TCP"),
                ])
        do {
            _ = try ExchangePlan.ports([ExposedPort(local: 8081)], of: dns, pods: [pod])
            Issue.record("a port the Service does not have was taken")
        } catch let error as PlanError {
            #expect("\(error)".contains("dns-tcp 53/TCP, dns 53/UDP, http 80/TCP"), "\(error)")
        }
        // A named target port no selected pod declares.
        #expect(throws: PlanError.self) {
            try ExchangePlan.ports([ExposedPort(local: 1, remote: "http")], of: dns, pods: [])
        }
        // SCTP is not carried.
        let sctp = Self.service([ServicePort(port: 9, protocol: "SCTP")])
        #expect(throws: PlanError.self) { try ExchangePlan.ports([ExposedPort(local: 9)], of: sctp, pods: []) }
        // A bare local port names the only port there is.
        let single = Self.service([ServicePort(port: 8080)])
        #expect(try ExchangePlan.ports([ExposedPort(local: 9999)], of: single, pods: []).first?.servicePort == 8080)
    }

    @Test func previewPortsAndNames() throws {
        let ports = try PreviewPlan.ports([ExposedPort(local: 8080), ExposedPort(local: 9000, remote: "80")])
        #expect(ports.map(\.servicePort) == [8080, 80])
        #expect(ports.map(\.name) == ["kt-8080", "kt-80"])
        #expect(ports.map(\.local) == [8080, 9000])
        #expect(throws: PlanError.self) { try PreviewPlan.ports([ExposedPort(local: 1, remote: "http")]) }
        #expect(throws: PlanError.self) {
            try PreviewPlan.ports([ExposedPort(local: 1), ExposedPort(local: 2, remote: "1")])
        }
        try PreviewPlan.checkName("tomcat-v2")
        for bad in ["", "Tomcat", "9tomcat", "tomcat-", "tom.cat", String(repeating: "a", count: 64)] {
            #expect(throws: PlanError.self, "\(bad)") { try PreviewPlan.checkName(bad) }
        }
    }

    @Test func forwardFindsTheServicePortAndAReadyPod() throws {
        let two = Self.service([
            ServicePort(name: "http", port: 80, targetPort: .int(8080)), ServicePort(name: "admin", port: 81),
        ])
        #expect(throws: PlanError.self) { try ForwardPlan.route(service: two, ports: nil) }
        let (route, local) = try ForwardPlan.route(service: two, ports: "6060:http")
        #expect(route == .service(name: "tomcat", port: 80, portName: "http", targetPort: 8080))
        #expect(local == 6060)
        #expect(try ForwardPlan.route(service: two, ports: "81").local == 81)
        #expect(throws: PlanError.self) { try ForwardPlan.route(service: two, ports: "6060:82") }
        #expect(throws: PlanError.self) {
            try ForwardPlan.route(service: Self.service([ServicePort(port: 80)], selector: [:]), ports: nil)
        }

        func makeEndpoints(ready: [String]) throws -> Endpoints {
            let addresses = ready.map { #"{"ip":"10.0.0.1","targetRef":{"kind":"Pod","name":"\#($0)"}}"# }
            let json = #"""
                {"metadata":{"name":"tomcat"},"subsets":[{"addresses":[\#(addresses.joined(separator: ","))],
                "notReadyAddresses":[{"ip":"10.0.0.3","targetRef":{"kind":"Pod","name":"c"}}],
                "ports":[{"name":"http","port":8080},{"name":"admin","port":81}]}]}
                """#
            return try JSONDecoder().decode(Endpoints.self, from: Data(json.utf8))
        }
        var endpoints = try makeEndpoints(ready: ["b", "a"])
        #expect(ForwardPlan.pick(endpoints, portName: "http", targetPort: nil, avoiding: nil)! == ("a", 8080))
        #expect(ForwardPlan.pick(endpoints, portName: "http", targetPort: nil, avoiding: "a")! == ("b", 8080))
        #expect(ForwardPlan.pick(endpoints, portName: "admin", targetPort: nil, avoiding: "a")! == ("b", 81))
        endpoints = try makeEndpoints(ready: [])
        #expect(ForwardPlan.pick(endpoints, portName: "http", targetPort: nil, avoiding: nil) == nil)
    }
}

/// kt-connect's global flags before the subcommand.
struct GlobalFlagsTests {
    static let commands: Set<String> = ["connect", "exchange", "preview", "provide"]

    @Test func globalFlagsBeforeTheSubcommandMoveAfterIt() {
        #expect(
            GlobalFlags.reorder(
                ["-n", "dev", "-d", "exchange", "tomcat", "--expose", "8080"], subcommands: Self.commands)
                == ["exchange", "-n", "dev", "-d", "tomcat", "--expose", "8080"])
        #expect(
            GlobalFlags.reorder(["--namespace=dev", "--kubeconfig", "/k", "provide", "x"], subcommands: Self.commands)
                == ["provide", "--namespace=dev", "--kubeconfig", "/k", "x"])
        // Already after: unchanged.
        let after = ["exchange", "tomcat", "-n", "dev", "--expose", "8080"]
        #expect(GlobalFlags.reorder(after, subcommands: Self.commands) == after)
        // Something else before the subcommand: left for the parser to refuse.
        let unknown = ["--bogus", "exchange", "tomcat"]
        #expect(GlobalFlags.reorder(unknown, subcommands: Self.commands) == unknown)
        // A flag's value that happens to be a subcommand's name is a value.
        #expect(
            GlobalFlags.reorder(["-n", "connect", "connect"], subcommands: Self.commands)
                == ["connect", "-n", "connect"])
        #expect(GlobalFlags.reorder(["--help"], subcommands: Self.commands) == ["--help"])
        #expect(GlobalFlags.reorder(["-n"], subcommands: Self.commands) == ["-n"])
    }
}
