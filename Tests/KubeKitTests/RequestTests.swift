import Foundation
import Testing

@testable import KubeKit

/// Requests built as values: the exact method, path, query, headers and body the API server receives.
@Suite struct RequestTests {
    @Test func paths() {
        #expect(
            APIRequest.get(Pod.resource, name: "web-1", namespace: "default").path
                == "/api/v1/namespaces/default/pods/web-1")
        #expect(
            APIRequest.get(Deployment.resource, name: "tomcat", namespace: "dev", subresource: "scale").path
                == "/apis/apps/v1/namespaces/dev/deployments/tomcat/scale")
        #expect(APIRequest.get(Node.resource, name: "n1", namespace: "ignored").path == "/api/v1/nodes/n1")
        #expect(APIRequest.list(Pod.resource, namespace: nil).path == "/api/v1/pods")
        #expect(
            APIRequest.list(ServiceCIDR.resource, namespace: "x").path == "/apis/networking.k8s.io/v1/servicecidrs")
        #expect(
            APIRequest.list(EndpointSlice.resource, namespace: "a b").path
                == "/apis/discovery.k8s.io/v1/namespaces/a%20b/endpointslices")
    }

    @Test func listAndWatchQueries() {
        let options = ListOptions(
            labelSelector: "app=tomcat,tier in (web,api)", fieldSelector: "metadata.name=x", limit: 500,
            continueToken: "eyJ2Ijo=", resourceVersion: nil)
        let list = APIRequest.list(Pod.resource, namespace: "default", options: options)
        #expect(list.method == .get)
        #expect(
            list.target == "/api/v1/namespaces/default/pods?labelSelector=app%3Dtomcat%2Ctier%20in%20%28web%2Capi%29"
                + "&fieldSelector=metadata.name%3Dx&limit=500&continue=eyJ2Ijo%3D")
        #expect(list.header("Accept") == "application/json")
        #expect(list.verb == "list")
        #expect(list.subject == "pods in namespace \"default\"")

        let watch = APIRequest.watch(
            Pod.resource, namespace: "default",
            options: ListOptions(labelSelector: "app=x", limit: 5, resourceVersion: "105"), timeoutSeconds: 300)
        #expect(
            watch.target
                == "/api/v1/namespaces/default/pods?labelSelector=app%3Dx&resourceVersion=105&allowWatchBookmarks=true"
                + "&timeoutSeconds=300&watch=true")
    }

    @Test func writes() throws {
        var service = Service(
            metadata: ObjectMeta(name: "web", labels: ["app": "web"]),
            spec: .init(
                selector: ["app": "web"], ports: [ServicePort(name: "http", port: 80, targetPort: .string("http"))]))
        service.metadata.namespace = "dev"
        let create = try APIRequest.create(
            Service.resource, namespace: "dev", body: try service.document(), fieldManager: "ktctl")
        #expect(create.method == .post)
        #expect(create.target == "/api/v1/namespaces/dev/services?fieldManager=ktctl")
        #expect(create.header("Content-Type") == "application/json")
        #expect(
            String(decoding: create.body ?? [], as: UTF8.self)
                == #"{"apiVersion":"v1","kind":"Service","metadata":{"labels":{"app":"web"},"name":"web","namespace":"dev"},"#
                + #""spec":{"ports":[{"name":"http","port":80,"targetPort":"http"}],"selector":{"app":"web"}}}"#)
        #expect(create.subject == "services \"web\" in namespace \"dev\"")

        let patch = try APIRequest.patch(
            Deployment.resource, name: "tomcat", namespace: "dev", patch: .merge(["spec": ["replicas": 0]]),
            subresource: "scale", fieldManager: "ktctl")
        #expect(patch.method == .patch)
        #expect(patch.target == "/apis/apps/v1/namespaces/dev/deployments/tomcat/scale?fieldManager=ktctl")
        #expect(patch.header("Content-Type") == "application/merge-patch+json")
        #expect(String(decoding: patch.body ?? [], as: UTF8.self) == #"{"spec":{"replicas":0}}"#)

        let json = Patch.json([
            JSONPatchOperation(.replace, "/spec/selector/" + JSONPatchOperation.escape("kt/role"), value: "shadow"),
            JSONPatchOperation(.remove, "/metadata/annotations/a~b"),
        ])
        #expect(json.contentType == "application/json-patch+json")
        #expect(
            json.document.jsonText
                == #"[{"op":"replace","path":"/spec/selector/kt~1role","value":"shadow"},{"op":"remove","path":"/metadata/annotations/a~b"}]"#
        )
        #expect(Patch.strategic([:]).contentType == "application/strategic-merge-patch+json")

        let delete = try APIRequest.delete(
            Pod.resource, name: "p", namespace: "dev",
            options: DeleteOptions(propagationPolicy: .background, gracePeriodSeconds: 0))
        #expect(delete.method == .delete)
        #expect(
            String(decoding: delete.body ?? [], as: UTF8.self)
                == #"{"apiVersion":"v1","gracePeriodSeconds":0,"kind":"DeleteOptions","propagationPolicy":"Background"}"#
        )

        let forward = APIRequest.portForward(pod: "shadow-1", namespace: "dev", ports: [2222])
        #expect(forward.target == "/api/v1/namespaces/dev/pods/shadow-1/portforward?ports=2222")
    }

    @Test func clientUsesTheContextNamespaceAndDecodesStatusErrors() async throws {
        let access = ClusterAccess(
            server: URL(string: "https://h:6443")!, namespace: "team", credentials: .bearer(token: "t", file: nil))
        let transport = RecordingTransport { request in
            switch request.path {
            case "/api/v1/namespaces/team/pods/gone":
                return APIResponse(
                    status: 404,
                    body: Array(
                        #"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"pods \"gone\" not found","reason":"NotFound","details":{"name":"gone","kind":"pods"},"code":404}"#
                            .utf8))
            case "/api/v1/namespaces/kube-system/secrets":
                return APIResponse(
                    status: 403,
                    body: Array(
                        #"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"secrets is forbidden: User \"dev\" cannot list resource \"secrets\" in API group \"\" in the namespace \"kube-system\"","reason":"Forbidden","details":{"kind":"secrets"},"code":403}"#
                            .utf8))
            default:
                return APIResponse(status: 500, body: Array("boom".utf8))
            }
        }
        let client = KubeClient(access: access, retry: .init(attempts: 1), transport: { _ in transport })
        let notFound = await #expect(throws: KubeAPIError.self) { try await client.get(Pod.self, name: "gone") }
        #expect(notFound?.reason == .notFound)
        #expect(notFound?.description == "pods \"gone\" in namespace \"team\" not found (get): pods \"gone\" not found")
        let forbidden = await #expect(throws: KubeAPIError.self) {
            try await client.list(Secret.self, namespace: "kube-system")
        }
        #expect(forbidden?.reason == .forbidden)
        #expect(
            forbidden?.description.hasPrefix(
                "not allowed to list secrets in namespace \"kube-system\": secrets is forbidden: User \"dev\" cannot list"
            )
                == true)
        let other = await #expect(throws: KubeAPIError.self) { try await client.get(Node.self, name: "n") }
        #expect(other?.reason == .serverError)
        #expect(other?.message == "boom")
        // No retry on answers; the bearer token went with every request.
        #expect(transport.requests.count == 3)
        #expect(transport.requests.allSatisfy { $0.header("Authorization") == "Bearer t" })
    }

    @Test func conflictsAreRetriedByTheUpdateHelperOnly() async throws {
        let access = ClusterAccess(server: URL(string: "https://h:6443")!)
        let version = LockedBox(1)
        let transport = RecordingTransport { request in
            let current = version.get()
            if request.method == .get {
                return APIResponse(
                    status: 200,
                    body: Array(
                        #"{"metadata":{"name":"c","namespace":"default","resourceVersion":"\#(current)"},"data":{"n":"\#(current)"}}"#
                            .utf8))
            }
            let sent = try JSONValue(json: Data(request.body ?? []))
            // Someone else writes between our first read and our write.
            if current == 1 {
                version.set(2)
                return APIResponse(
                    status: 409,
                    body: Array(
                        #"{"kind":"Status","reason":"Conflict","code":409,"message":"the object has been modified"}"#
                            .utf8))
            }
            #expect(sent["metadata"]?["resourceVersion"] == .string("2"))
            return APIResponse(status: 200, body: request.body ?? [])
        }
        let client = KubeClient(access: access, transport: { _ in transport })
        let updated = try await client.update(ConfigMap.self, name: "c") { map in
            let seen = map.data?["n"]
            map.data?["seen"] = seen
        }
        #expect(updated.data?["seen"] == "2")
        #expect(transport.requests.map(\.method) == [.get, .put, .get, .put])
        // A plain update reports the conflict.
        version.set(1)
        let stale = try await client.get(ConfigMap.self, name: "c")
        let error = await #expect(throws: KubeAPIError.self) { try await client.update(stale) }
        #expect(error?.reason == .conflict)
    }
}

/// Real API server JSON decodes into the models, and what ktctl does not model survives an update.
@Suite struct ModelTests {
    static func fixture(_ name: String) throws -> JSONValue {
        let url = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Fixtures/\(name)")
        return try JSONValue(json: try Data(contentsOf: url))
    }

    @Test func podListWithEveryStatusField() throws {
        let list = try ObjectList<Pod>.decoding(try Self.fixture("pod-list.json"))
        #expect(list.metadata.resourceVersion == "48213")
        #expect(list.metadata.continue?.hasPrefix("eyJ2Ijoi") == true)
        #expect(list.items.count == 2)
        let tomcat = list.items[0]
        #expect(tomcat.metadata.labels?["pod-template-hash"] == "5d8c7b9f4")
        #expect(tomcat.metadata.ownerReferences?.first?.kind == "ReplicaSet")
        #expect(tomcat.spec?.containers.first?.ports?.first == ContainerPort(containerPort: 8080, protocol: "TCP"))
        #expect(tomcat.status?.phase == "Running")
        #expect(tomcat.status?.isReady == true)
        #expect(tomcat.status?.podIP == "10.244.0.7")
        #expect(tomcat.status?.containerStatuses?.first?.state?.running?.startedAt == "2026-11-20T09:14:20Z")
        let shadow = list.items[1]
        #expect(shadow.status?.isReady == false)
        #expect(shadow.status?.containerStatuses?.first?.state?.waiting?.reason == "ErrImagePull")
        #expect(shadow.spec?.containers.first?.env?.first?.valueFrom?.fieldRef?.fieldPath == "status.podIP")
        #expect(shadow.spec?.containers.first?.securityContext?.capabilities?.drop == ["ALL"])
        #expect(shadow.spec?.containers.first?.resources?.requests?["cpu"] == "50m")
    }

    @Test func servicesWithNamedTargetPortsAndHeadless() throws {
        let list = try ObjectList<Service>.decoding(try Self.fixture("service-list.json"))
        let web = list.items[0]
        #expect(web.spec?.ports?.map(\.targetPort) == [.string("http"), .int(8443), .int(5353)])
        #expect(web.spec?.ports?.map(\.protocol) == ["TCP", "TCP", "UDP"])
        #expect(web.spec?.clusterIP == "10.96.41.7")
        #expect(!web.isHeadless)
        #expect(list.items[1].isHeadless)
        #expect(list.items[1].spec?.ipFamilies == ["IPv4", "IPv6"])
    }

    @Test func deploymentUpdateKeepsUnknownFieldsAtEveryDepth() throws {
        let document = try Self.fixture("deployment.json")
        var deployment = try Deployment.decoding(document)
        #expect(deployment.spec?.replicas == 1)
        #expect(deployment.spec?.selector.queryText == "app=tomcat")
        #expect(deployment.status?.conditions?.first?.reason == "MinimumReplicasAvailable")

        // Change what ktctl changes when it exchanges a workload: replicas, a label, the first container's image;
        // drop the second container's command.
        deployment.spec?.replicas = 0
        deployment.metadata.annotations?["kt-exchange"] = "on"
        deployment.spec?.template.spec?.containers[0].image = "ktconnect/shadow:1"
        deployment.spec?.template.spec?.containers[1].command = nil
        let sent = try deployment.document()

        #expect(sent["spec"]?["replicas"] == .int(0))
        #expect(sent["metadata"]?["annotations"]?["kt-exchange"] == .string("on"))
        // Unknown to KubeKit, kept as sent by the server:
        #expect(sent["metadata"]?["managedFields"] == document["metadata"]?["managedFields"])
        #expect(sent["spec"]?["revisionHistoryLimit"] == .int(10))
        #expect(sent["spec"]?["strategy"] == document["spec"]?["strategy"])
        let containers = try #require(sent["spec"]?["template"]?["spec"]?["containers"]?.arrayValue)
        #expect(containers[0]["image"] == .string("ktconnect/shadow:1"))
        #expect(containers[0]["terminationMessagePolicy"] == .string("File"))
        #expect(containers[1]["terminationMessagePath"] == .string("/dev/termination-log"))
        #expect(containers[1]["command"] == nil)
        #expect(sent["spec"]?["template"]?["spec"]?["schedulerName"] == .string("default-scheduler"))
        // Untouched objects go back byte for byte.
        #expect(try Deployment.decoding(document).document() == document)
    }

    @Test func addingAContainerKeepsTheOthersUnknownFields() throws {
        var deployment = try Deployment.decoding(try Self.fixture("deployment.json"))
        deployment.spec?.template.spec?.containers.insert(Container(name: "kt-agent", image: "agent"), at: 0)
        let containers = try #require(
            try deployment.document()["spec"]?["template"]?["spec"]?["containers"]?.arrayValue)
        #expect(containers.map { $0["name"]?.stringValue } == ["kt-agent", "tomcat", "sidecar"])
        #expect(containers[1]["terminationMessagePolicy"] == .string("File"))
        #expect(containers[0]["terminationMessagePolicy"] == nil)
    }
}

/// Watch bodies split anywhere still yield whole events.
@Suite struct JSONStreamFramerTests {
    static let events = [
        #"{"type":"ADDED","object":{"metadata":{"name":"a {\"}","resourceVersion":"1"}}}"#,
        #"{"type":"MODIFIED","object":{"metadata":{"name":"b\\","resourceVersion":"2"},"spec":{"x":[1,{"y":"]"}]}}}"#,
        #"{"type":"BOOKMARK","object":{"kind":"Pod","metadata":{"resourceVersion":"3"}}}"#,
    ]

    @Test func wholeByteByByteAndSeveralPerBuffer() throws {
        let stream = Array((Self.events.joined(separator: "\n") + "\n").utf8)
        var whole = JSONStreamFramer()
        #expect(try whole.feed(stream).map { String(decoding: $0, as: UTF8.self) } == Self.events)
        var bytewise = JSONStreamFramer()
        var out: [[UInt8]] = []
        for byte in stream { out += try bytewise.feed([byte]) }
        #expect(out.map { String(decoding: $0, as: UTF8.self) } == Self.events)
        // No separators at all, and a split inside a string and inside an escape.
        var tight = JSONStreamFramer()
        let joined = Array(Self.events.joined().utf8)
        let cut = joined.firstIndex(of: UInt8(ascii: "\\"))! + 1
        let first = try tight.feed(joined[..<cut])
        let rest = try tight.feed(joined[cut...])
        #expect((first + rest).map { String(decoding: $0, as: UTF8.self) } == Self.events)
    }

    @Test func garbageOutsideAValueIsAnError() {
        var framer = JSONStreamFramer()
        #expect(throws: JSONStreamFramer.FramingError.unexpectedByte(UInt8(ascii: "x"))) {
            try framer.feed(Array("x{}".utf8))
        }
        var closing = JSONStreamFramer()
        #expect(throws: JSONStreamFramer.FramingError.unexpectedByte(UInt8(ascii: "}"))) {
            try closing.feed(Array("}".utf8))
        }
    }

    @Test func watchEventsDecodeAndErrorEventsThrowTheirStatus() throws {
        let request = APIRequest.watch(Pod.resource, namespace: "default")
        let added = try WatchEvent<Pod>.decode(try JSONValue(json: Data(Self.events[0].utf8)), request: request)
        #expect(added.object?.name == "a {\"}")
        let bookmark = try WatchEvent<Pod>.decode(try JSONValue(json: Data(Self.events[2].utf8)), request: request)
        #expect(bookmark.resourceVersion == "3")
        let gone =
            #"{"type":"ERROR","object":{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"too old resource version: 5 (12)","reason":"Expired","code":410}}"#
        let error = #expect(throws: KubeAPIError.self) {
            try WatchEvent<Pod>.decode(try JSONValue(json: Data(gone.utf8)), request: request)
        }
        #expect(error?.reason == .gone)
        #expect(error?.message == "too old resource version: 5 (12)")
    }
}
