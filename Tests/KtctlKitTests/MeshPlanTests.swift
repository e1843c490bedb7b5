import Foundation
import KubeKit
import RouterKit
import Testing

@testable import KtctlKit

/// The pure parts of mesh: the version mark read (kt-connect's three forms) or refused with why, and the router pod
/// as an object.
struct MeshPlanTests {
    @Test func versionMarksAreReadAsKtConnectWroteThem() throws {
        #expect(try VersionMark.parse("v2") == VersionMark(key: "VERSION", value: "v2"))
        #expect(try VersionMark.parse("x-dev:bob") == VersionMark(key: "x-dev", value: "bob"))
        let keyOnly = try VersionMark.parse("x-dev:")
        #expect(keyOnly.key == "x-dev" && keyOnly.value.count == 5)
        let none = try VersionMark.parse(nil)
        #expect(none.key == "VERSION" && none.value.count == 5 && none.value.allSatisfy(\.isLowercase))
        #expect(try VersionMark.parse("Version:abc").labelKey == "version")
    }

    @Test func badMarksSayWhatIsWrong() {
        for bad in ["x dev:a", "1x:a", ":a", "v:UPPER", "v:a_b", "v:" + String(repeating: "a", count: 31), "v:-a"] {
            #expect(throws: PlanError.self, "\(bad)") { try VersionMark.parse(bad) }
        }
        do {
            _ = try VersionMark.parse("v:a b")
        } catch {
            #expect("\(error)".contains("nothing was changed"))
        }
    }

    func mapping(_ port: Int, target: Int, name: String? = nil) -> PortMapping {
        PortMapping(
            servicePort: port, name: nil, targetPort: target, targetName: name, local: port, protocol: "TCP")
    }

    @Test func theRouterPodListensOnTheTargetPortsUnderItsOwnAccount() throws {
        let pod = try MeshPlan.routerPod(
            service: "tomcat", namespace: "dev", target: "abcdefghijklmnopqrst",
            mappings: [
                mapping(80, target: 8080, name: "http"), mapping(81, target: 8080), mapping(9000, target: 18021),
            ],
            image: "kt-router:dev", stuntmanAddress: "10.96.0.9", cluster: ClusterOptions())
        #expect(pod.name == "tomcat-kt-router")
        #expect(pod.metadata.labels?["kt-role"] == "router")
        #expect(pod.metadata.labels?["kt-target"] == "abcdefghijklmnopqrst")
        #expect(pod.metadata.labels?[MeshRoute.serviceLabel] == "tomcat")
        #expect(pod.spec?.serviceAccountName == "kt-router")
        let container = try #require(pod.spec?.containers.first)
        let args = container.args ?? []
        #expect(args.contains("8080:80,18021:9000"), "\(args)")
        #expect(args.contains("tomcat-kt-stuntman=10.96.0.9"), "\(args)")
        // The health port moves out of the Service's way.
        #expect(args.contains("18022"), "\(args)")
        let ports = container.ports ?? []
        #expect(ports.map(\.containerPort) == [8080, 18021, 18022])
        #expect(ports.first?.name == "http")
        #expect(pod.spec?.securityContext?.runAsUser == 65532)
    }

    @Test func portsBelow1024AreBoundWithTheNamespacedSysctl() throws {
        let pod = try MeshPlan.routerPod(
            service: "web", namespace: "dev", target: "t", mappings: [mapping(80, target: 80)], image: "i",
            stuntmanAddress: nil, cluster: ClusterOptions())
        let sysctls = pod.raw["spec"]?["securityContext"]?["sysctls"]?.arrayValue ?? []
        #expect(sysctls.first?["name"]?.stringValue == "net.ipv4.ip_unprivileged_port_start", "\(sysctls)")
        #expect(pod.spec?.containers.first?.args?.contains("web-kt-stuntman") == true)
    }
}
