import Foundation
import KubeKit
import NIOCore

/// KubeKit's parsers. The first byte picks one, the rest is its input: 0 a kubeconfig (YAML) and the choice of a
/// context from it, 1 a watch body split at every 7th byte (every value found is decoded as a Pod event), 2 an
/// exec plugin's answer, 3 an error response's body, 4 a Pod / Service / Deployment document (decoded, and sent
/// back unchanged), 5 times as the API server sends them (an HTTP `Date`, which must format back to itself, and a
/// Lease's MicroTime, which must parse back to the same instant). No input may crash; errors are fine.
func fuzzKube(_ data: UnsafePointer<UInt8>?, _ count: Int) -> CInt {
    guard let data, count > 0 else { return 0 }
    let selector = data[0] % 6
    let body = Array(UnsafeBufferPointer(start: data + 1, count: count - 1))
    switch selector {
    case 0:
        let text = String(decoding: body, as: UTF8.self)
        if let file = try? KubeconfigFile.parse(text, path: "fuzz") {
            var config = Kubeconfig()
            config.add(file, from: "/fuzz/config")
            _ = try? config.access()
        }
    case 1:
        var framer = JSONStreamFramer()
        let request = APIRequest.watch(Pod.resource, namespace: "default")
        var offset = 0
        while offset < body.count {
            let end = min(offset + 7, body.count)
            guard let values = try? framer.feed(body[offset..<end]) else { break }
            for value in values {
                if let document = try? JSONValue(json: Data(value)) {
                    _ = try? WatchEvent<Pod>.decode(document, request: request)
                }
            }
            offset = end
        }
    case 2:
        _ = try? ExecCredential.parse(body, expectedVersion: "client.authentication.k8s.io/v1", command: "fuzz")
    case 3:
        let request = APIRequest.get(Pod.resource, name: "p", namespace: "default")
        let error = KubeAPIError.from(
            APIResponse(status: 400 + Int(body.first ?? 0) % 200, body: body), request: request)
        _ = error.description
    case 5:
        let text = String(decoding: body, as: UTF8.self)
        if let date = ServerClock.parseHTTPDate(text) {
            let again = ServerClock.formatHTTPDate(date)
            precondition(ServerClock.parseHTTPDate(again) == date, "an HTTP date does not parse back: \(again)")
        }
        if let instant = MicroTime.parse(text), abs(instant.timeIntervalSince1970) < 1e11 {
            let again = MicroTime.format(instant)
            let back = MicroTime.parse(again)
            precondition(
                back.map { abs($0.timeIntervalSince(instant)) < 1e-5 } == true,
                "a MicroTime does not parse back: \(again)")
        }
    default:
        guard let document = try? JSONValue(json: Data(body)) else { return 0 }
        if let pod = try? Pod.decoding(document) {
            precondition((try? pod.document()) == document, "an unchanged pod must go back as it came")
        }
        _ = try? Service.decoding(document).document()
        _ = try? Deployment.decoding(document).document()
    }
    return 0
}
