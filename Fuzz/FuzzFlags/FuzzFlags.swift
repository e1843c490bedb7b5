import Foundation
import KtctlKit
import KubeKit
import RouterKit

/// What users and clusters hand ktctl's commands. The first byte picks the parser, the rest is its input:
/// 0 an `--expose` list (what parses prints back to a list that parses the same), 1 a target (`svc/NAME`,
/// `deploy/NAME`, `pod/NAME`, NAME; the same round trip), 2 forward's `local[:remote]`, 3 a preview's Service name,
/// 4 a `kt-selector` annotation as a cluster may hold it (any JSON, or not), 5 mesh's `--version-mark` (a mark that
/// parses names a valid pod suffix and header), 6 a `ktctl.io/mesh-route` annotation as a Lease may hold it (the
/// router builds its table from it), 7 kt-router's `--port`, `--default` and `--route`. No input may crash; errors are
/// fine.
func fuzzFlags(_ data: UnsafePointer<UInt8>?, _ count: Int) -> CInt {
    guard let data, count > 0 else { return 0 }
    let text = String(decoding: UnsafeBufferPointer(start: data + 1, count: count - 1), as: UTF8.self)
    switch data[0] % 8 {
    case 0:
        if let ports = try? ExposedPort.parseList(text) {
            let again = try? ExposedPort.parseList(ports.map(\.description).joined(separator: ","))
            precondition(again == ports, "expose list round trip")
        }
    case 1:
        if let target = try? WorkloadTarget.parse(text, allowPods: true) {
            precondition(
                (try? WorkloadTarget.parse(target.description, allowPods: true)) == target, "target round trip")
        }
    case 2:
        if let (local, _) = try? ForwardPlan.parsePorts(text) { precondition((1...65535).contains(local)) }
    case 3:
        _ = try? PreviewPlan.checkName(text)
    case 5:
        if let mark = try? VersionMark.parse(text) {
            precondition(!mark.value.isEmpty && !mark.key.isEmpty, "an empty mark parsed")
            precondition((try? VersionMark.parse("\(mark.key):\(mark.value)")) == mark, "mark round trip")
        }
    case 6:
        var metadata = ObjectMeta(name: "kt-mesh-a", namespace: "default")
        metadata.labels = [MeshRoute.serviceLabel: "s"]
        metadata.annotations = [MeshRoute.annotation: text]
        let lease = Lease(metadata: metadata, spec: Lease.Spec(leaseDurationSeconds: 30, renewTime: text))
        let (table, _) = MeshRoute.table(service: "s", leases: [lease], serverNow: Date())
        _ = table.route { _ in [text] }
    case 7:
        if let ports = try? RouterFlags.ports(text) {
            precondition(ports.allSatisfy { (1...65535).contains($0.listen) && (1...65535).contains($0.defaultPort) })
        }
        _ = try? RouterFlags.upstream(text)
        if let route = try? RouterFlags.route(text) { precondition(RouterFlags.isToken(route.header)) }
    case 4:
        var service = Service(metadata: ObjectMeta(name: "s", annotations: ["kt-selector": text]))
        service.spec = Service.Spec(selector: ["app": "x"])
        _ = ServiceLock.original(of: service)
    default:
        break
    }
    return 0
}
