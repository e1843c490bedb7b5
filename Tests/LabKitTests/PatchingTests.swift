import KubeKit
import Testing

@testable import LabKit

/// The patch semantics of the API server, case by case (RFC 7386, RFC 6902, and strategic merge as
/// `k8s.io/apimachinery/pkg/util/strategicpatch` applies it for the lists kubectl and ktctl touch).
@Suite struct PatchingTests {
    static let deployment: JSONValue = [
        "metadata": ["name": "tomcat", "labels": ["app": "tomcat", "tier": "web"]],
        "spec": [
            "replicas": 1,
            "template": [
                "spec": [
                    "containers": [
                        [
                            "name": "tomcat", "image": "tomcat:9",
                            "ports": [["containerPort": 8080, "protocol": "TCP"]],
                            "env": [["name": "A", "value": "1"], ["name": "B", "value": "2"]], "args": ["x", "y"],
                        ],
                        ["name": "sidecar", "image": "busybox"],
                    ]
                ]
            ],
        ],
    ]

    @Test func mergePatchRemovesWithNullAndReplacesLists() {
        let patched = Patching.merge(
            [
                "metadata": ["labels": ["tier": .null, "new": "x"]],
                "spec": ["template": ["spec": ["containers": [["name": "only"]]]]],
            ],
            into: Self.deployment)
        #expect(patched["metadata"]?["labels"] == ["app": "tomcat", "new": "x"])
        #expect(patched["spec"]?["template"]?["spec"]?["containers"] == [["name": "only"]])
        #expect(patched["spec"]?["replicas"] == 1)
    }

    @Test func strategicMergesContainersByNameAndPortsByContainerPort() throws {
        let patched = try Patching.strategic(
            [
                "spec": [
                    "template": [
                        "spec": [
                            "containers": [
                                [
                                    "name": "tomcat",
                                    "ports": [["containerPort": 8080, "name": "http"], ["containerPort": 8443]],
                                    "env": [["name": "B", "value": "3"], ["name": "A", "$patch": "delete"]],
                                    "args": ["z"],
                                ]
                            ]
                        ]
                    ]
                ]
            ], into: Self.deployment)
        let containers = try #require(patched["spec"]?["template"]?["spec"]?["containers"]?.arrayValue)
        #expect(containers.count == 2)
        #expect(containers[0]["image"] == "tomcat:9")
        #expect(
            containers[0]["ports"] == [
                ["containerPort": 8080, "protocol": "TCP", "name": "http"], ["containerPort": 8443],
            ])
        #expect(containers[0]["env"] == [["name": "B", "value": "3"]])
        #expect(containers[0]["args"] == ["z"])  // no merge key: replaced
        #expect(containers[1] == ["name": "sidecar", "image": "busybox"])
    }

    @Test func strategicMergesServicePortsByPortAndHonoursReplace() throws {
        let service: JSONValue = [
            "spec": [
                "ports": [["port": 80, "targetPort": 8080], ["port": 443, "targetPort": 8443]],
                "selector": ["app": "a", "v": "1"],
            ]
        ]
        let patched = try Patching.strategic(
            ["spec": ["ports": [["port": 80, "targetPort": 9090]], "selector": ["$patch": "replace", "app": "b"]]],
            into: service)
        #expect(patched["spec"]?["ports"] == [["port": 80, "targetPort": 9090], ["port": 443, "targetPort": 8443]])
        #expect(patched["spec"]?["selector"] == ["app": "b"])
        let missingKey = #expect(throws: APIStatusError.self) {
            try Patching.strategic(["spec": ["ports": [["targetPort": 1]]]], into: service)
        }
        #expect(missingKey?.code == 400)
    }

    @Test func jsonPatchOperationsAndAtomicFailure() throws {
        let patched = try Patching.json(
            [
                ["op": "add", "path": "/metadata/labels/kt~1role", "value": "shadow"],
                ["op": "replace", "path": "/spec/replicas", "value": 0],
                ["op": "copy", "from": "/metadata/labels/app", "path": "/metadata/labels/copied"],
                ["op": "move", "from": "/metadata/labels/tier", "path": "/metadata/labels/moved"],
                ["op": "add", "path": "/spec/template/spec/containers/-", "value": ["name": "third"]],
                ["op": "remove", "path": "/spec/template/spec/containers/1"],
                ["op": "test", "path": "/spec/replicas", "value": 0],
            ], into: Self.deployment)
        #expect(
            patched["metadata"]?["labels"] == [
                "app": "tomcat", "kt/role": "shadow", "copied": "tomcat", "moved": "web",
            ])
        #expect(patched["spec"]?["replicas"] == 0)
        #expect(
            patched["spec"]?["template"]?["spec"]?["containers"]?.arrayValue?.map { $0["name"] } == ["tomcat", "third"])
        for failing: JSONValue in [
            [["op": "replace", "path": "/spec/missing", "value": 1]],
            [["op": "test", "path": "/spec/replicas", "value": 5]],
            [["op": "remove", "path": "/spec/template/spec/containers/9"]],
            [["op": "frobnicate", "path": "/spec"]],
            [["op": "add", "path": "no-slash", "value": 1]],
            ["not": "a list"],
        ] {
            #expect(throws: APIStatusError.self) { try Patching.json(failing, into: Self.deployment) }
        }
    }

    @Test func labelAndFieldSelectors() throws {
        let labels = ["app": "web", "tier": "front", "env": "prod"]
        func matches(_ text: String) throws -> Bool { try LabelQuery(parsing: text).matches(labels) }
        #expect(try matches("app=web"))
        #expect(try matches("app==web,tier!=back"))
        #expect(try matches("env in (prod, staging),!legacy"))
        #expect(try !matches("env notin (prod)"))
        #expect(try matches("tier"))
        #expect(try !matches("app=web,missing"))
        #expect(try matches(""))
        #expect(throws: APIStatusError.self) { try LabelQuery(parsing: "env in prod") }
        let object: JSONValue = ["metadata": ["name": "a", "namespace": "dev"], "status": ["phase": "Running"]]
        #expect(try FieldQuery(parsing: "metadata.name=a,status.phase!=Failed").matches(object))
        #expect(try !FieldQuery(parsing: "metadata.namespace==default").matches(object))
        #expect(throws: APIStatusError.self) { try FieldQuery(parsing: "metadata.name") }
    }
}

/// The store's versions, conflicts and watch log.
@Suite struct ObjectStoreTests {
    @Test func versionsConflictsAndWatchReplay() async throws {
        let store = ObjectStore()
        _ = try store.create(Namespace.resource, namespace: "", object: ["metadata": ["name": "default"]])
        let created = try store.create(
            ConfigMap.resource, namespace: "default", object: ["metadata": ["name": "c"], "data": ["a": "1"]])
        let version = try #require(created["metadata"]?["resourceVersion"]?.stringValue)
        #expect(throws: APIStatusError.self) {
            try store.create(ConfigMap.resource, namespace: "missing", object: ["metadata": ["name": "c"]])
        }
        #expect(throws: APIStatusError.self) {
            try store.create(ConfigMap.resource, namespace: "default", object: ["metadata": ["name": "Bad_Name"]])
        }
        var stale = created
        stale["data"] = ["a": "2"]
        let updated = try store.update(ConfigMap.resource, namespace: "default", name: "c", object: stale)
        #expect(updated["metadata"]?["uid"] == created["metadata"]?["uid"])
        let conflict = #expect(throws: APIStatusError.self) {
            try store.update(ConfigMap.resource, namespace: "default", name: "c", object: stale)
        }
        #expect(conflict?.reason == "Conflict")
        // Unchanged writes make no new version.
        #expect(try store.update(ConfigMap.resource, namespace: "default", name: "c", object: updated) == updated)
        // A watch from the first version replays what came after it, then goes on live.
        let events = try store.watch(
            Selection(resource: ConfigMap.resource, namespace: "default"), after: Int64(version))
        try store.delete(ConfigMap.resource, namespace: "default", name: "c")
        var kinds: [StoredEvent.Kind] = []
        for await event in events {
            kinds.append(event.kind)
            if kinds.count == 2 { break }
        }
        #expect(kinds == [.modified, .deleted])
    }

    @Test func aVersionOlderThanTheLogIsGone() throws {
        let store = ObjectStore()
        _ = try store.create(Namespace.resource, namespace: "", object: ["metadata": ["name": "default"]])
        _ = try store.create(
            ConfigMap.resource, namespace: "default", object: ["metadata": ["name": "c"], "data": ["n": "0"]])
        for round in 0..<(ObjectStore.eventLogCapacity + 10) {
            try store.modify(ConfigMap.resource, namespace: "default", name: "c") {
                $0["data"]?["n"] = .int(Int64(round))
            }
        }
        let gone = #expect(throws: APIStatusError.self) {
            try store.watch(Selection(resource: ConfigMap.resource, namespace: nil), after: 2)
        }
        #expect(gone?.code == 410)
        #expect(gone?.message.hasPrefix("too old resource version: 2") == true)
    }
}
