import Foundation
import KubeKit
import LabKit
import Testing

/// The API server's side of deleting a pod and of strict field validation, on the handler alone (no kubelet: the
/// lab's kubelet test is `KtlabPodLifecycleTests`).
@Suite struct DeletionTests {
    let handler: APIHandler

    init() throws {
        handler = APIHandler(store: ObjectStore(), admission: Admission(), serverAddress: "127.0.0.1:6443")
        try handler.bootstrap()
    }

    func send(_ method: String, _ uri: String, _ body: JSONValue? = nil) async throws -> (Int, JSONValue) {
        let bytes = try body.map { Array(try $0.jsonData()) } ?? []
        let request = APIServerRequest(
            method: method, uri: uri, headers: [("Content-Type", "application/json")], body: bytes)
        switch await handler.handle(request) {
        case .json(let code, let document): return (code, document)
        default: throw CancellationError()
        }
    }

    func pod(_ name: String, node: String?) -> JSONValue {
        var spec: JSONValue = ["containers": [["name": "c", "image": "busybox"]]]
        if let node { spec["nodeName"] = .string(node) }
        return ["apiVersion": "v1", "kind": "Pod", "metadata": ["name": .string(name)], "spec": spec]
    }

    @Test func aPodOnANodeTerminatesAndOneNotOnANodeGoesAtOnce() async throws {
        let pods = "/api/v1/namespaces/default/pods"
        #expect(try await send("POST", pods, pod("waiting", node: nil)).0 == 201)
        #expect(try await send("DELETE", "\(pods)/waiting").0 == 200)
        #expect(try await send("GET", "\(pods)/waiting").0 == 404)

        #expect(try await send("POST", pods, pod("running", node: "n")).0 == 201)
        let (code, marked) = try await send("DELETE", "\(pods)/running")
        #expect(code == 200)
        #expect(marked["metadata"]?["deletionGracePeriodSeconds"] == 30)
        let deadline = try #require(marked["metadata"]?["deletionTimestamp"]?.stringValue.flatMap(RFC3339.parse))
        #expect(abs(deadline.timeIntervalSinceNow - 30) < 3)
        // Still there (Terminating) until the kubelet removes it; an update cannot clear the mark.
        var (_, current) = try await send("GET", "\(pods)/running")
        current["metadata"]?["deletionTimestamp"] = nil
        current["metadata"]?["labels"] = ["x": "y"]
        let (_, updated) = try await send("PUT", "\(pods)/running", current)
        #expect(updated["metadata"]?["labels"]?["x"] == "y")
        #expect(updated["metadata"]?["deletionTimestamp"] == marked["metadata"]?["deletionTimestamp"])
        // A second delete may shorten the period, never lengthen it.
        let (_, longer) = try await send("DELETE", "\(pods)/running", ["gracePeriodSeconds": 60])
        #expect(longer["metadata"]?["deletionGracePeriodSeconds"] == 30)
        let (_, shorter) = try await send("DELETE", "\(pods)/running?gracePeriodSeconds=5")
        #expect(shorter["metadata"]?["deletionGracePeriodSeconds"] == 5)
        // --grace-period=0 --force: gone at once.
        #expect(try await send("DELETE", "\(pods)/running", ["gracePeriodSeconds": 0]).0 == 200)
        #expect(try await send("GET", "\(pods)/running").0 == 404)
    }

    @Test func strictFieldValidationNamesTheFieldAndStoresNothing() async throws {
        let maps = "/api/v1/namespaces/default/configmaps"
        let bad: JSONValue = [
            "apiVersion": "v1", "kind": "ConfigMap", "metadata": ["name": "bad", "lables": ["a": "b"]], "data": [:],
            "bogus": 1,
        ]
        let (code, status) = try await send("POST", "\(maps)?fieldValidation=Strict", bad)
        #expect(code == 400)
        #expect(
            status["message"]?.stringValue
                == #"ConfigMap in version "v1" cannot be handled as a ConfigMap: strict decoding error: unknown field "bogus", unknown field "metadata.lables""#
        )
        #expect(try await send("GET", "\(maps)/bad").0 == 404)
        // Without Strict (an older client, or Ignore) the object is stored.
        #expect(try await send("POST", "\(maps)?fieldValidation=Ignore", bad).0 == 201)
        // An update that carries an unknown field is refused the same way.
        let (patched, _) = try await send("PUT", "\(maps)/bad?fieldValidation=Strict", bad)
        #expect(patched == 400)
    }
}
