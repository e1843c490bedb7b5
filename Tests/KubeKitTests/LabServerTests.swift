import Foundation
import KubeKit
import LabKit
import Logging
import NIOCore
import NIOPosix
import Testing

/// KubeKit against the lab's own API server (LabKit, the server ktlab runs), over HTTPS on 127.0.0.1: the round
/// trips, watches, conflicts and port-forward that ktctl relies on.
@Suite(.serialized) struct LabServerTests {
    final class Lab {
        let pki: TestPKI
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let server: APIServer
        let scratch: Scratch
        let client: KubeClient

        init() async throws {
            pki = try TestPKI()
            scratch = try Scratch()
            let handler = APIHandler(
                store: ObjectStore(), admission: Admission(), serverAddress: "127.0.0.1:6443",
                bookmarkInterval: .milliseconds(200))
            try handler.bootstrap()
            server = try await APIServer(
                configuration: .init(
                    host: "127.0.0.1", port: 0, certificate: pki.serverCertificate, key: pki.serverKey,
                    clientCA: pki.caCertificate, tokens: ["lab-token"]),
                handler: handler, group: group, logger: Logger(label: "lab"))
            let port = server.localAddress?.port ?? 0
            client = try KubeClient(
                access: try ClientTests.kubeconfig(
                    scratch, server: "https://127.0.0.1:\(port)", ca: pki.caCertificate, user: "{token: lab-token}"))
        }

        var port: Int { server.localAddress?.port ?? 0 }

        func access(user: String = "{token: lab-token}", ca: String? = nil) throws -> ClusterAccess {
            try ClientTests.kubeconfig(
                scratch, server: "https://127.0.0.1:\(port)", ca: ca ?? pki.caCertificate, user: user)
        }

        func stop() async {
            await client.shutdown()
            await server.stop()
            try? await group.shutdownGracefully()
            pki.remove()
        }
    }

    static func tomcat() -> Deployment {
        var container = Container(name: "tomcat", image: "tomcat:9")
        container.ports = [ContainerPort(containerPort: 8080)]
        var template = PodTemplateSpec(
            metadata: ObjectMeta(labels: ["app": "tomcat"]), spec: PodSpec(containers: [container]))
        template.spec?.containers.append(Container(name: "sidecar", image: "busybox:1.36"))
        return Deployment(
            metadata: ObjectMeta(name: "tomcat", labels: ["app": "tomcat"]),
            spec: .init(selector: LabelSelector(matchLabels: ["app": "tomcat"]), template: template))
    }

    @Test func createGetListPatchUpdateDeleteRoundTrips() async throws {
        let lab = try await Lab()
        let client = lab.client
        // create: the server fills in what it owns and defaults.
        let created = try await client.create(Self.tomcat())
        #expect(created.metadata.uid != nil)
        #expect(created.metadata.namespace == "default")
        #expect(created.metadata.generation == 1)
        #expect(created.spec?.replicas == 1)
        #expect(created.spec?.template.spec?.containers[0].ports?[0].protocol == "TCP")
        #expect(created.raw["spec"]?["strategy"]?["type"] == .string("RollingUpdate"))
        let duplicate = await #expect(throws: KubeAPIError.self) { try await client.create(Self.tomcat()) }
        #expect(duplicate?.reason == .alreadyExists)
        #expect(duplicate?.message == "deployments.apps \"tomcat\" already exists")

        // get and list with selectors.
        #expect(try await client.get(Deployment.self, name: "tomcat").metadata.uid == created.metadata.uid)
        var other = Self.tomcat()
        other.metadata.name = "web"
        other.metadata.labels = ["app": "web"]
        _ = try await client.create(other)
        #expect(
            try await client.list(Deployment.self, options: ListOptions(labelSelector: "app=tomcat")).items.map(\.name)
                == ["tomcat"])
        #expect(
            try await client.list(Deployment.self, options: ListOptions(labelSelector: "app in (web,x)")).items.map(
                \.name) == ["web"])
        #expect(
            try await client.list(Deployment.self, options: ListOptions(fieldSelector: "metadata.name!=web")).items.map(
                \.name) == ["tomcat"])
        let pages = try await client.listAll(Deployment.self, pageSize: 1)
        #expect(pages.items.map(\.name) == ["tomcat", "web"])
        let missing = await #expect(throws: KubeAPIError.self) { try await client.get(Pod.self, name: "nope") }
        #expect(missing?.message == "pods \"nope\" not found")

        // patches: merge (replicas), strategic (a port merged into the container by containerPort, image kept),
        // JSON (an annotation), and scale through the subresource.
        let merged = try await client.patch(Deployment.self, name: "tomcat", .merge(["spec": ["replicas": 3]]))
        #expect(merged.spec?.replicas == 3)
        #expect(merged.metadata.generation == 2)
        let strategic = try await client.patch(
            Deployment.self, name: "tomcat",
            .strategic([
                "spec": [
                    "template": [
                        "spec": [
                            "containers": [["name": "tomcat", "ports": [["containerPort": 8080, "name": "http"]]]]
                        ]
                    ]
                ]
            ]))
        let containers = try #require(strategic.spec?.template.spec?.containers)
        #expect(containers.map(\.name) == ["tomcat", "sidecar"])
        #expect(containers[0].image == "tomcat:9")
        #expect(containers[0].ports == [ContainerPort(name: "http", containerPort: 8080, protocol: "TCP")])
        let annotated = try await client.patch(
            Deployment.self, name: "tomcat",
            .json([JSONPatchOperation(.add, "/metadata/annotations", value: ["kt/origin": "lab"])]))
        #expect(annotated.metadata.annotations?["kt/origin"] == "lab")
        let scale = try await client.scale(Deployment.self, name: "tomcat", to: 0)
        #expect(scale.spec?.replicas == 0)
        #expect(scale.status?.selector == "app=tomcat")
        #expect(try await client.scale(Deployment.self, name: "tomcat").spec?.replicas == 0)
        #expect(try await client.get(Deployment.self, name: "tomcat").spec?.replicas == 0)

        // update: what KubeKit does not model survives; status is the server's.
        var read = try await client.get(Deployment.self, name: "tomcat")
        read.metadata.labels?["tier"] = "web"
        read.status?.replicas = 99
        let updated = try await client.update(read)
        #expect(updated.metadata.labels?["tier"] == "web")
        #expect(updated.raw["spec"]?["progressDeadlineSeconds"] == .int(600))
        #expect(updated.status?.replicas == 0)

        // delete: dependents (owner reference) go too; a second delete finds nothing.
        var child = ConfigMap(metadata: ObjectMeta(name: "tomcat-config"), data: ["k": "v"])
        child.metadata.ownerReferences = [
            OwnerReference(apiVersion: "apps/v1", kind: "Deployment", name: "tomcat", uid: created.metadata.uid ?? "")
        ]
        _ = try await client.create(child)
        #expect(
            try await client.delete(
                Deployment.self, name: "tomcat", options: DeleteOptions(propagationPolicy: .background)))
        #expect(try await client.list(ConfigMap.self).items.isEmpty)
        #expect(try await client.delete(Deployment.self, name: "tomcat") == false)

        // A Service gets a ClusterIP from the service CIDR; a bad one is refused with the field named.
        let service = try await client.create(
            Service(
                metadata: ObjectMeta(name: "tomcat"),
                spec: .init(selector: ["app": "tomcat"], ports: [ServicePort(port: 8080)])))
        #expect(service.spec?.clusterIP?.hasPrefix("10.") == true)
        #expect(service.spec?.ports?.first?.targetPort == .int(8080))
        var bad = Service(metadata: ObjectMeta(name: "bad"), spec: .init(ports: [ServicePort(port: 80)]))
        bad.spec?.clusterIP = "192.168.1.1"
        let invalid = await #expect(throws: KubeAPIError.self) { try await client.create(bad) }
        #expect(invalid?.reason == .invalid)
        #expect(invalid?.message.contains("the provided IP is not in the valid range") == true)
        await lab.stop()
    }

    @Test func staleUpdateConflictsAndTheHelperRetries() async throws {
        let lab = try await Lab()
        let client = lab.client
        _ = try await client.create(ConfigMap(metadata: ObjectMeta(name: "c"), data: ["n": "0"]))
        let stale = try await client.get(ConfigMap.self, name: "c")
        var fresh = stale
        fresh.data?["n"] = "1"
        _ = try await client.update(fresh)
        var late = stale
        late.data?["n"] = "2"
        let conflict = await #expect(throws: KubeAPIError.self) { try await client.update(late) }
        #expect(conflict?.code == 409)
        #expect(conflict?.reason == .conflict)
        #expect(
            conflict?.message.hasPrefix(
                "Operation cannot be fulfilled on configmaps \"c\": the object has been modified") == true)
        let done = try await client.update(ConfigMap.self, name: "c") { $0.data?["n"] = "3" }
        #expect(done.data?["n"] == "3")
        await lab.stop()
    }

    @Test func watchSurvivesTheServerEndingItsStreams() async throws {
        let lab = try await Lab()
        let client = lab.client
        _ = try await client.create(ConfigMap(metadata: ObjectMeta(name: "a")))
        var seen: [String] = []
        let updates = client.watchContinuously(ConfigMap.self)
        var iterator = updates.makeAsyncIterator()
        func next() async throws -> String {
            switch try await iterator.next() {
            case .listed(let items)?: return "listed " + items.map(\.name).joined(separator: ",")
            case .event(.added(let object))?: return "added \(object.name)"
            case .event(.modified(let object))?: return "modified \(object.name)"
            case .event(.deleted(let object))?: return "deleted \(object.name)"
            default: return "end"
            }
        }
        seen.append(try await next())
        _ = try await client.create(ConfigMap(metadata: ObjectMeta(name: "b")))
        seen.append(try await next())
        // The server ends every watch stream (as a real one does at its timeout); the client watches again from
        // the last version it saw: nothing is repeated, nothing is lost.
        lab.server.handler.store.endWatches()
        _ = try await client.create(ConfigMap(metadata: ObjectMeta(name: "c")))
        try await Task.sleep(for: .milliseconds(50))
        lab.server.handler.store.endWatches()
        _ = try await client.patch(ConfigMap.self, name: "a", .merge(["data": ["x": "1"]]))
        try await client.delete(ConfigMap.self, name: "b")
        for _ in 0..<3 { seen.append(try await next()) }
        #expect(seen == ["listed a", "added b", "added c", "modified a", "deleted b"])
        await lab.stop()
    }

    @Test func portForwardToAPodCarriesAGibibyteByteExact() async throws {
        let lab = try await Lab()
        let client = lab.client
        // The "pod": a pattern server on loopback, and a Pod object whose status says that is its IP.
        let podGroup = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let server = try await ServerBootstrap(group: podGroup)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(PatternPodHandler())
                }
            }
            .bind(host: "127.0.0.1", port: 0).get()
        let podPort = server.localAddress?.port ?? 0
        var pod = try await client.create(
            Pod(metadata: ObjectMeta(name: "pattern"), spec: PodSpec(containers: [Container(name: "c", image: "x")])))
        #expect(pod.status?.phase == "Pending")
        pod.status?.phase = "Running"
        pod.status?.podIP = "127.0.0.1"
        pod = try await client.update(pod, subresource: "status")
        #expect(pod.status?.podIP == "127.0.0.1")

        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let forwarder = PortForwarder(client: client, pod: "pattern", port: UInt16(podPort))
        let started = ContinuousClock.now
        let result = try await PortForwardTests.transfer(forwarder, download: 1 << 30, upload: 64 << 20, group: group)
        let elapsed = ContinuousClock.now - started
        #expect(result.downloadedCorrectly)
        #expect(result.uploadVerdict == 1)
        print("port-forward through the lab API server: 1 GiB down + 64 MiB up in \(elapsed)")
        // A pod that does not exist: the server's 404.
        let missing = await #expect(throws: KubeAPIError.self) {
            _ = try await PortForwarder(client: client, pod: "ghost", port: 80).connect(on: group.next())
        }
        #expect(missing?.message == "pods \"ghost\" not found")
        try await group.shutdownGracefully()
        try await server.close()
        try await podGroup.shutdownGracefully()
        await lab.stop()
    }

    @Test func clientCertificatesTokensAndTheWrongCA() async throws {
        let lab = try await Lab()
        let withCertificate = try KubeClient(
            access: try lab.access(
                user: "{client-certificate: \(lab.pki.clientCertificate), client-key: \(lab.pki.clientKey)}"))
        #expect(try await withCertificate.get(Namespace.self, name: "kube-system").name == "kube-system")
        await withCertificate.shutdown()
        let wrongToken = try KubeClient(access: try lab.access(user: "{token: nope}"))
        let unauthorized = await #expect(throws: KubeAPIError.self) { try await wrongToken.list(Pod.self) }
        #expect(unauthorized?.reason == .unauthorized)
        await wrongToken.shutdown()
        let wrongCA = try KubeClient(access: try lab.access(ca: lab.pki.otherCA))
        let tls = await #expect(throws: KubeTransportError.self) { try await wrongCA.list(Pod.self) }
        #expect(tls?.kind == .tls)
        #expect(tls?.description.contains(lab.pki.otherCA) == true)
        await wrongCA.shutdown()
        await lab.stop()
    }
}
