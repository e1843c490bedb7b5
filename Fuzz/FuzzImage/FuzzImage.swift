import Foundation
import KubeKit
import LabKit

/// ktlab's image parsers. The first byte picks one: 0 an image name (a name that parses must print as a name that
/// parses to itself), 1 an image config and a pod document turned into an OCI runtime spec. No input may crash;
/// errors are fine.
func fuzzImage(_ data: UnsafePointer<UInt8>?, _ count: Int) -> CInt {
    guard let data, count > 0 else { return 0 }
    let body = Array(UnsafeBufferPointer(start: data + 1, count: count - 1))
    switch data[0] % 2 {
    case 0:
        let text = String(decoding: body, as: UTF8.self)
        if let reference = ImageReference(text) {
            precondition(
                ImageReference(reference.description) == reference, "\(reference) does not parse back to itself")
            precondition(ImageReference(reference.familiar) == reference, "\(reference.familiar) is another name")
        }
    default:
        // The pod is the input; the image has an entrypoint, a user and an environment of its own.
        guard let pod = try? JSONValue(json: Data(body)) else { return 0 }
        var image = ImageConfig()
        image.entrypoint = ["/usr/local/bin/kt-shadow"]
        image.user = "65532:65532"
        image.environment = ["PATH=/usr/local/bin", "A"]
        let container = pod["spec"]?["containers"]?.arrayValue?.first ?? [:]
        _ = try? OCISpec.spec(
            OCISpec.Input(
                pod: pod, container: container, image: image, rootfs: "/nonexistent", networkNamespace: "/run/netns/x",
                environment: ["PATH": "/bin", "HOSTNAME": "p"], mounts: []))
    }
    return 0
}
