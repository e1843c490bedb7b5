import Foundation
import Logging
import NIOCore
import Testing

@testable import KubeKit

/// The client over real HTTPS against `TestAPIServer` serving recorded responses: TLS trust and identity,
/// pagination, watches that end, break and expire.
@Suite(.serialized) struct ClientTests {
    static func kubeconfig(
        _ scratch: Scratch, server: String, ca: String?, user: String = "{token: secret}", extraCluster: String = ""
    ) throws -> ClusterAccess {
        let file = try scratch.write(
            "config-\(UUID().uuidString)",
            """
            current-context: c
            contexts: [{name: c, context: {cluster: k, user: u, namespace: default}}]
            clusters:
            - name: k
              cluster:
                server: \(server)
            \(ca.map { "    certificate-authority: \($0)" } ?? "")
            \(extraCluster)
            users: [{name: u, user: \(user)}]
            """)
        return try Kubeconfig.load(explicitPath: file).access()
    }

    static func podListPages() throws -> (String, String) {
        let url = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent(
            "Fixtures/pod-list.json")
        let first = try String(contentsOf: url, encoding: .utf8)
        var document = try JSONValue(json: Data(first.utf8))
        let items = document["items"]?.arrayValue ?? []
        document["items"] = .array([items[1]])
        document["metadata"] = .object(["resourceVersion": .string("48213")])
        var firstPage = try JSONValue(json: Data(first.utf8))
        firstPage["items"] = .array([items[0]])
        return (firstPage.jsonText, document.jsonText)
    }

    @Test func tokenOverTLSWithPaginationAndTheRightCA() async throws {
        let pki = try TestPKI()
        defer { pki.remove() }
        let (page1, page2) = try Self.podListPages()
        let server = try await TestAPIServer(pki: pki) { request in
            request.query["continue"] == nil ? .json(200, page1) : .json(200, page2)
        }
        let scratch = try Scratch()
        let access = try Self.kubeconfig(scratch, server: "https://127.0.0.1:\(server.port)", ca: pki.caCertificate)
        let client = try KubeClient(access: access)
        let pods = try await client.listAll(Pod.self, options: ListOptions(labelSelector: "app=tomcat"), pageSize: 1)
        await client.shutdown()
        await server.stop()
        #expect(pods.items.map(\.name) == ["tomcat-5d8c7b9f4-bd0ef", "shadow-x7k2p"])
        #expect(pods.metadata.resourceVersion == "48213")
        let requests = server.requests
        #expect(requests.count == 2)
        #expect(requests[0].uri == "/api/v1/namespaces/default/pods?labelSelector=app%3Dtomcat&limit=1")
        #expect(requests[1].query["continue"]?.hasPrefix("eyJ2Ijoi") == true)
        #expect(requests[1].query["labelSelector"] == "app=tomcat")
        #expect(requests.allSatisfy { $0.header("Authorization") == "Bearer secret" })
    }

    @Test func wrongCAFailsWithATLSErrorNamingTheCAFile() async throws {
        let pki = try TestPKI()
        defer { pki.remove() }
        let server = try await TestAPIServer(pki: pki) { _ in .json(200, "{}") }
        let scratch = try Scratch()
        let access = try Self.kubeconfig(scratch, server: "https://127.0.0.1:\(server.port)", ca: pki.otherCA)
        let client = try KubeClient(access: access)
        let error = await #expect(throws: KubeTransportError.self) {
            try await client.get(Namespace.self, name: "default")
        }
        await client.shutdown()
        await server.stop()
        #expect(error?.kind == .tls)
        #expect(error?.description.contains(pki.otherCA) == true)
        #expect(error?.description.contains("certificate verify failed") == true)
        #expect(server.requests.isEmpty)  // nothing reached the server
    }

    @Test func tlsServerNameIsUsedToVerify() async throws {
        let pki = try TestPKI()
        defer { pki.remove() }
        let server = try await TestAPIServer(pki: pki, namedOnly: true) { _ in
            .json(200, #"{"metadata":{"name":"default"}}"#)
        }
        let scratch = try Scratch()
        // Neither 127.0.0.1 nor `localhost` is in the certificate: refused ...
        let plain = try Self.kubeconfig(scratch, server: "https://127.0.0.1:\(server.port)", ca: pki.caCertificate)
        let refused = try KubeClient(access: plain, retry: .init(attempts: 1))
        let error = await #expect(throws: KubeTransportError.self) {
            try await refused.get(Namespace.self, name: "default")
        }
        #expect(error?.kind == .tls)
        await refused.shutdown()
        // ... unless tls-server-name names one that is.
        let named = try Self.kubeconfig(
            scratch, server: "https://127.0.0.1:\(server.port)", ca: pki.caCertificate,
            extraCluster: "    tls-server-name: ktlab.local")
        let client = try KubeClient(access: named)
        #expect(try await client.get(Namespace.self, name: "default").name == "default")
        await client.shutdown()
        await server.stop()
    }

    @Test func clientCertificatesFromFiles() async throws {
        let pki = try TestPKI()
        defer { pki.remove() }
        let server = try await TestAPIServer(pki: pki, requireClientCertificate: true) { _ in
            .json(200, #"{"metadata":{"name":"default"}}"#)
        }
        let scratch = try Scratch()
        let withCertificate = try Self.kubeconfig(
            scratch, server: "https://127.0.0.1:\(server.port)", ca: pki.caCertificate,
            user: "{client-certificate: \(pki.clientCertificate), client-key: \(pki.clientKey)}")
        let client = try KubeClient(access: withCertificate)
        #expect(try await client.get(Namespace.self, name: "default").name == "default")
        #expect(server.requests.first?.header("Authorization") == nil)
        await client.shutdown()
        let without = try Self.kubeconfig(scratch, server: "https://127.0.0.1:\(server.port)", ca: pki.caCertificate)
        let anonymous = try KubeClient(access: without, retry: .init(attempts: 1))
        await #expect(throws: KubeTransportError.self) { try await anonymous.get(Namespace.self, name: "default") }
        await anonymous.shutdown()
        await server.stop()
    }

    @Test func connectionRefusedIsRetriedThenExplained() async throws {
        let scratch = try Scratch()
        // A port nobody listens on: bind one, note it, close it.
        let probe = try await TestAPIServer(pki: nil) { _ in .json(200, "{}") }
        let port = probe.port
        await probe.stop()
        let access = try Self.kubeconfig(scratch, server: "http://127.0.0.1:\(port)", ca: nil)
        let client = try KubeClient(
            access: access, retry: .init(attempts: 3, firstDelay: .milliseconds(20), maximumDelay: .milliseconds(40)))
        let started = ContinuousClock.now
        let error = await #expect(throws: KubeTransportError.self) { try await client.get(Pod.self, name: "x") }
        #expect(ContinuousClock.now - started >= .milliseconds(60))
        #expect(error?.kind == .connection)
        #expect(error?.description.hasPrefix("cannot reach the API server http://127.0.0.1:\(port)") == true)
        await client.shutdown()
    }

    static func event(_ type: String, _ name: String, _ version: Int) -> String {
        #"{"type":"\#(type)","object":{"kind":"Pod","apiVersion":"v1","metadata":{"name":"\#(name)","namespace":"default","resourceVersion":"\#(version)"},"spec":{"containers":[{"name":"c","image":"i"}]}}}"#
            + "\n"
    }

    /// The server ends the first watch, breaks the second, expires the third's version (410); the lasting watch
    /// re-watches from the last version it saw each time and lists again after the 410.
    @Test func lastingWatchSurvivesEndsBreaksAndExpiry() async throws {
        let pki = try TestPKI()
        defer { pki.remove() }
        let watches = LockedBox(0)
        let lists = LockedBox(0)
        let server = try await TestAPIServer(pki: pki) { request in
            if request.query["watch"] == nil {
                lists.set(lists.get() + 1)
                let version = lists.get() == 1 ? 10 : 50
                return .json(
                    200,
                    #"{"kind":"PodList","apiVersion":"v1","metadata":{"resourceVersion":"\#(version)"},"items":[{"metadata":{"name":"a","resourceVersion":"\#(version - 1)"}}]}"#
                )
            }
            watches.set(watches.get() + 1)
            switch watches.get() {
            case 1:
                // Split an event across chunks; then end the stream cleanly.
                let added = Self.event("ADDED", "b", 11)
                let cut = added.index(added.startIndex, offsetBy: 30)
                return .stream(
                    [String(added[..<cut]), String(added[cut...]) + Self.event("MODIFIED", "b", 12)],
                    pause: .milliseconds(5),
                    end: true)
            case 2:
                return .stream(
                    [#"{"type":"BOOKMARK","object":{"kind":"Pod","metadata":{"resourceVersion":"20"}}}"# + "\n"],
                    pause: .milliseconds(5), end: false)
            case 3:
                return .stream(
                    [
                        #"{"type":"ERROR","object":{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"too old resource version: 20 (40)","reason":"Expired","code":410}}"#
                            + "\n"
                    ],
                    pause: .milliseconds(5), end: true)
            default:
                return .stream([Self.event("DELETED", "a", 51)], pause: .seconds(30), end: true)
            }
        }
        let scratch = try Scratch()
        let access = try Self.kubeconfig(scratch, server: "https://127.0.0.1:\(server.port)", ca: pki.caCertificate)
        let client = try KubeClient(
            access: access, retry: .init(firstDelay: .milliseconds(10)), logger: Logger(label: "test"))
        var seen: [String] = []
        for try await update in client.watchContinuously(Pod.self) {
            switch update {
            case .listed(let pods): seen.append("listed \(pods.map { $0.name })")
            case .event(.added(let pod)): seen.append("added \(pod.name)")
            case .event(.modified(let pod)): seen.append("modified \(pod.name)")
            case .event(.deleted(let pod)): seen.append("deleted \(pod.name)")
            case .event(.bookmark): seen.append("bookmark")
            }
            if seen.count == 5 { break }
        }
        // Ending the watch ends its request: shutting down does not wait for the server.
        let stopping = ContinuousClock.now
        await client.shutdown()
        #expect(ContinuousClock.now - stopping < .seconds(2))
        await server.stop()
        #expect(seen == ["listed [\"a\"]", "added b", "modified b", "listed [\"a\"]", "deleted a"])
        let versions = server.requests.filter { $0.query["watch"] == "true" }.map { $0.query["resourceVersion"] ?? "-" }
        // 10 from the first list; 12 after the clean end; 20 (the bookmark) after the break; 50 from the re-list.
        #expect(versions == ["10", "12", "20", "50"])
        #expect(
            server.requests.filter { $0.query["watch"] == "true" }.allSatisfy {
                $0.query["allowWatchBookmarks"] == "true"
            })
    }
}
