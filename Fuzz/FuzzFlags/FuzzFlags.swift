import KtctlKit
import KubeKit

/// What users and clusters hand ktctl's commands. The first byte picks the parser, the rest is its input:
/// 0 an `--expose` list (what parses prints back to a list that parses the same), 1 a target (`svc/NAME`,
/// `deploy/NAME`, `pod/NAME`, NAME; the same round trip), 2 forward's `local[:remote]`, 3 a preview's Service name,
/// 4 a `kt-selector` annotation as a cluster may hold it (any JSON, or not). No input may crash; errors are fine.
func fuzzFlags(_ data: UnsafePointer<UInt8>?, _ count: Int) -> CInt {
    guard let data, count > 0 else { return 0 }
    let text = String(decoding: UnsafeBufferPointer(start: data + 1, count: count - 1), as: UTF8.self)
    switch data[0] % 5 {
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
    default:
        var service = Service(metadata: ObjectMeta(name: "s", annotations: ["kt-selector": text]))
        service.spec = Service.Spec(selector: ["app": "x"])
        _ = ServiceLock.original(of: service)
    }
    return 0
}
