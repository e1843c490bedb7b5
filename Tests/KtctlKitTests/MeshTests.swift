import Foundation
import Glibc
import KubeKit
import LabKit
import LabTestSupport
import NamespaceTestSupport
import Testing

/// `ktctl mesh` end to end against ktlab with the real binaries (ktctl, kt-shadow, kt-router), as a user bound only
/// to `deploy/rbac/ktctl-session.yaml`, the router under its own account (`deploy/rbac/kt-router.yaml`): the seed's
/// mesh from a pod and through `ktctl connect`, two developers at once (one leaving while the other's requests
/// flow), a scale-mode exchange composed with the mesh; WebSocket, gRPC and HTTP/2 routed by header; the router
/// killed, a developer killed, and `ktctl clean` once no one is left.
@Suite(.serialized, .enabled(if: TestNamespace.unavailableReason == nil)) struct MeshTests {
    static var kubectl: String? { RunningLab.tool("kubectl") }
    typealias X = ExchangeTests

    /// The router's RBAC and the session Role bound to `dev`; returns dev's workstation kubeconfig.
    static func grant(_ lab: RunningLab, _ kubectl: String) async throws -> String {
        let rbac = "\(repositoryRoot)/deploy/rbac"
        for file in ["ktctl-session.yaml", "kt-router.yaml"] {
            let apply = try await lab.kubectl(kubectl, ["apply", "-n", "default", "-f", "\(rbac)/\(file)"])
            #expect(apply.status == 0, "\(apply.error)")
        }
        let bind = try await lab.kubectl(
            kubectl, ["create", "rolebinding", "ktctl-dev", "-n", "default", "--role=ktctl-session", "--user=dev"])
        #expect(bind.status == 0, "\(bind.error)")
        let made = try await TestNamespace.run([
            "env", lab.ktlab, "kubeconfig", "--name", lab.name, "--user", "dev", "--workstation",
        ])
        return made.output.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// kt-connect 0.3.7's documented command lines, global flags first (`-n`, `-d`, `-c`, `-i`, `-f`), camelCase
    /// flags and kt-connect's values: connect (tun2socks, localDNS), a scale-mode exchange, an auto mesh with a
    /// version mark, a preview, and clean.
    @Test(.enabled(if: kubectl != nil)) func ktConnectCommandLinesWithGlobalFlagsFirst() async throws {
        let kubectl = try #require(Self.kubectl)
        let ktctl = try #require(builtExecutable("ktctl"))
        try await RunningLab.with { lab in
            _ = try await lab.deploySeedTomcat(kubectl)
            try await X.clientPod(lab, kubectl)
            _ = try await Self.grant(lab, kubectl)
            let workstation = TestNamespace(existing: "\(lab.name)-ws")
            let server = try await X.localServer(lab)
            defer { server.stop() }
            let global = [
                ktctl, "-n", "default", "-d", "-c", "\(LabLayout.stateRoot)/\(lab.name)/kubeconfig-ws", "-i",
                "kt-shadow:dev", "-f",
            ]
            func state(_ name: String) -> [String] { ["--state-dir", "\(LabLayout.stateRoot)/\(lab.name)/\(name)"] }
            func session(_ arguments: [String], until line: String, _ check: () async throws -> Void) async throws {
                let process = try BackgroundProcess(workstation, global + arguments)
                defer { process.stop() }
                try #require(await process.waitForOutput(line, timeout: 90), "\(arguments): \(process.output)")
                try await check()
                process.signalProgram(SIGINT)
                #expect(await process.waitForExit(timeout: 30) == 0, "\(arguments): \(process.output)")
            }
            try await session(
                ["connect", "--mode", "tun2socks", "--dnsMode", "localDNS"] + state("c"), until: "ktctl: connected"
            ) {
                let curl = try await workstation.run(["curl", "-s", "-m", "10", "http://tomcat.default:8080"])
                #expect(curl.output == X.clusterPage, "\(curl.error)")
            }
            try await session(
                ["exchange", "deployment/tomcat", "--mode", "scale", "--expose", "8080"] + state("e"),
                until: "ktctl: exchanging service tomcat"
            ) {
                try await X.expectPage(lab, kubectl, "http://tomcat:8080", X.localPage)
            }
            // Scale mode brought up new tomcat pods: the seed's page, written by `exec` into the old one, is written
            // again (it is not in the image).
            let rewrite = try await lab.kubectl(
                kubectl,
                [
                    "exec", "deployment/tomcat", "-c", "tomcat", "--", "/bin/bash", "-c",
                    "mkdir -p webapps/ROOT; echo \"kt-connect demo v1\" > webapps/ROOT/index.html",
                ])
            #expect(rewrite.status == 0, "\(rewrite.error)")
            try await X.expectPage(lab, kubectl, "http://tomcat:8080", X.clusterPage)
            try await session(
                [
                    "mesh", "tomcat", "--mode", "auto", "--expose", "8080", "--versionMark", "ci", "--routerImage",
                    "kt-router:dev",
                ] + state("m"),
                until: "ktctl: meshing service tomcat"
            ) {
                try await X.expectPage(lab, kubectl, "http://tomcat:8080", X.clusterPage)
                try await X.expectPage(lab, kubectl, "http://tomcat:8080", X.localPage, header: "VERSION: ci")
            }
            try await session(
                ["preview", "tomcat-preview", "--expose", "8080"] + state("p"),
                until: "ktctl: previewing service tomcat-preview"
            ) {
                try await X.expectPage(lab, kubectl, "http://tomcat-preview:8080", X.localPage)
            }
            let clean = try await workstation.run(global.filter { $0 != "-f" } + ["clean"] + state("c"), timeout: 60)
            #expect(clean.status == 0, "\(clean.output) \(clean.error)")
            // Refused before anything is made, with what to use instead.
            let refused = try await workstation.run(global + ["connect", "--mode", "sshuttle"] + state("c"))
            #expect(refused.status != 0 && refused.error.contains("ktctl has no sshuttle mode"), "\(refused.error)")
            let left = try await lab.kubectl(
                kubectl, ["get", "pods,secrets,leases", "-l", "app.kubernetes.io/managed-by=ktctl", "-o", "name"])
            #expect(left.output.isEmpty, "\(left.output)")
        }
    }

    /// The seed's tomcat, a client pod, user `dev` with the session Role and the router's account applied, and two
    /// local servers (alice's `kt-connect local v2` on 8080, bob's on 8081); the Service's JSON from before.
    struct SeedMesh {
        var dev: String
        var workstation: TestNamespace
        var service: String
        var servers: [BackgroundProcess]

        init(_ lab: RunningLab, _ kubectl: String) async throws {
            _ = try await lab.deploySeedTomcat(kubectl)
            try await X.clientPod(lab, kubectl)
            dev = try await MeshTests.grant(lab, kubectl)
            workstation = TestNamespace(existing: "\(lab.name)-ws")
            let alice = try await X.localServer(lab)
            do {
                servers = [alice, try await X.localServer(lab, port: 8081, page: "bob local v3\n")]
            } catch {
                alice.stop()
                throw error
            }
            do {
                service = try await X.json(lab, kubectl, "service", "tomcat")
            } catch {
                for server in servers { server.stop() }
                throw error
            }
        }

        func stop() {
            for server in servers { server.stop() }
        }
    }

    /// How long after `since` a pod's `curl -H header http://tomcat:8080` first printed `page` (asked every 200 ms);
    /// nil when it did not within `within` seconds.
    static func whenPage(
        _ lab: RunningLab, _ kubectl: String, _ page: String, header: String, since: ContinuousClock.Instant,
        within: Int
    ) async throws -> Duration? {
        while ContinuousClock.now - since < .seconds(within) {
            if try await X.curlFromPod(lab, kubectl, "http://tomcat:8080", header: header) == page {
                return ContinuousClock.now - since
            }
            try await Task.sleep(for: .milliseconds(200))
        }
        return nil
    }

    /// The mark a mesh printed (`send 'VERSION: abcde'`).
    static func header(_ output: String) -> String? {
        guard let start = output.range(of: "send '")?.upperBound,
            let end = output[start...].firstIndex(of: "'")
        else { return nil }
        return String(output[start..<end])
    }

    static func writeSeedPage(_ lab: RunningLab, _ kubectl: String) async throws {
        _ = try await lab.kubectl(kubectl, ["rollout", "status", "deployment/tomcat", "--timeout=60s"])
        let exec = try await lab.kubectl(
            kubectl,
            [
                "exec", "deployment/tomcat", "-c", "tomcat", "--", "/bin/bash", "-c",
                "mkdir -p webapps/ROOT; echo \"kt-connect demo v1\" > webapps/ROOT/index.html",
            ])
        #expect(exec.status == 0, "\(exec.error)")
    }

    /// Nothing of the mesh is left: no router, stuntman, shadow, Lease (the mesh lock included).
    static func expectNothingLeft(_ lab: RunningLab, sourceLocation: SourceLocation = #_sourceLocation) async throws {
        let pods = try await SessionTests.managed(lab, Pod.self).map(\.name)
        let leases = try await SessionTests.managed(lab, Lease.self).map(\.name)
        let services = try await SessionTests.managed(lab, Service.self).map(\.name)
        #expect(pods.isEmpty, "\(pods)", sourceLocation: sourceLocation)
        #expect(leases.isEmpty, "\(leases)", sourceLocation: sourceLocation)
        #expect(services.isEmpty, "\(services)", sourceLocation: sourceLocation)
    }

    // MARK: - The seed, two developers, and an exchange beside them

    @Test(.enabled(if: kubectl != nil)) func theSeedMeshTwoDevelopersAndAScaleExchange() async throws {
        let kubectl = try #require(Self.kubectl)
        let ktctl = try #require(builtExecutable("ktctl"))
        try await RunningLab.with { lab in
            let seed = try await SeedMesh(lab, kubectl)
            defer { seed.stop() }
            let (dev, workstation, service) = (seed.dev, seed.workstation, seed.service)

            // The seed: `ktctl mesh tomcat --expose 8080`, a random mark.
            let first = try BackgroundProcess(
                workstation, X.ktctl(lab, ktctl, "mesh", state: "a", ["tomcat", "--expose", "8080"], kubeconfig: dev))
            defer { first.stop() }
            try #require(await first.waitForOutput("ktctl: meshing service tomcat", timeout: 90), "\(first.output)")
            let aliceHeader = try #require(Self.header(first.output), "\(first.output)")
            #expect(aliceHeader.hasPrefix("VERSION: "), "\(aliceHeader)")
            #expect(!first.output.contains("has not confirmed"), "\(first.output)")
            try await X.expectPage(lab, kubectl, "http://tomcat:8080", X.clusterPage)
            try await X.expectPage(lab, kubectl, "http://tomcat:8080", X.localPage, header: aliceHeader)
            // kt-connect's names: the router, the stuntman, the shadow; the original selector where it kept it.
            let meshed = try await lab.client.get(Service.self, name: "tomcat")
            #expect(meshed.metadata.annotations?["kt-selector"] == #"{"app":"tomcat"}"#)
            #expect(meshed.metadata.annotations?["ktctl.io/mesh"] == "tomcat-kt-router")
            let mark = String(aliceHeader.dropFirst("VERSION: ".count))
            #expect(try await lab.client.get(Pod.self, name: "tomcat-kt-mesh-\(mark)").status?.isReady == true)
            #expect(
                try await lab.client.get(Service.self, name: "tomcat-kt-stuntman").spec?.selector == ["app": "tomcat"])

            // Through ktctl connect from the workstation: the same routing.
            let connect = try BackgroundProcess(
                workstation, SessionTests.connect(lab, ktctl, state: "\(LabLayout.stateRoot)/\(lab.name)/co"))
            defer { connect.stop() }
            try #require(await connect.waitForOutput("ktctl: connected", timeout: 60), "\(connect.output)")
            let plain = try await workstation.run(["curl", "-s", "-m", "10", "http://tomcat:8080"])
            #expect(plain.output == X.clusterPage, "\(plain.output) \(plain.error)")
            let marked = try await workstation.run(["curl", "-s", "-m", "10", "-H", aliceHeader, "http://tomcat:8080"])
            #expect(marked.output == X.localPage, "\(marked.output) \(marked.error)")
            connect.signalProgram(SIGINT)
            #expect(await connect.waitForExit(timeout: 20) == 0, "\(connect.output)")

            // A second developer, another header name: each gets only their own requests.
            let second = try BackgroundProcess(
                workstation,
                X.ktctl(
                    lab, ktctl, "mesh", state: "b",
                    ["tomcat", "--expose", "8081:8080", "--version-mark", "x-dev:bob"], kubeconfig: dev))
            defer { second.stop() }
            try #require(await second.waitForOutput("ktctl: meshing service tomcat", timeout: 90), "\(second.output)")
            #expect(second.output.contains("shared with the mesh's other members"), "\(second.output)")
            #expect(Self.header(second.output) == "x-dev: bob", "\(second.output)")
            try await X.expectPage(lab, kubectl, "http://tomcat:8080", "bob local v3\n", header: "X-Dev: bob")
            try await X.expectPage(lab, kubectl, "http://tomcat:8080", X.localPage, header: aliceHeader)
            try await X.expectPage(lab, kubectl, "http://tomcat:8080", X.clusterPage, header: "X-Dev: carol")
            try await X.expectPage(lab, kubectl, "http://tomcat:8080", X.clusterPage)

            // A selector-mode exchange is refused, naming both; a scale-mode one composes with the mesh.
            let refused = try await workstation.run(
                X.ktctl(lab, ktctl, "exchange", state: "c", ["tomcat", "--expose", "8080"], kubeconfig: dev),
                timeout: 60)
            #expect(refused.status == 1)
            #expect(refused.error.contains("service tomcat is meshed by"), "\(refused.error)")
            #expect(refused.error.contains("(x-dev: bob)"), "\(refused.error)")
            #expect(refused.error.contains("nothing was changed"), "\(refused.error)")
            let exchanger = try await X.localServer(lab, port: 8082, page: "exchange local v4\n")
            defer { exchanger.stop() }
            let exchange = try BackgroundProcess(
                workstation,
                X.ktctl(
                    lab, ktctl, "exchange", state: "d",
                    ["deployment/tomcat", "--mode", "scale", "--expose", "8082:8080"], kubeconfig: dev))
            defer { exchange.stop() }
            try #require(
                await exchange.waitForOutput(
                    "ktctl: exchanging service tomcat in namespace default (scale mode; it is meshed",
                    timeout: 90), "\(exchange.output)")
            try await X.expectPage(lab, kubectl, "http://tomcat:8080", "exchange local v4\n")
            try await X.expectPage(lab, kubectl, "http://tomcat:8080", X.localPage, header: aliceHeader)
            try await X.expectPage(lab, kubectl, "http://tomcat:8080", "bob local v3\n", header: "X-Dev: bob")
            exchange.signalProgram(SIGINT)
            #expect(await exchange.waitForExit(timeout: 60) == 0, "\(exchange.output)")
            let deployment = try await lab.client.get(Deployment.self, name: "tomcat")
            #expect(deployment.spec?.replicas == 1 && deployment.status?.readyReplicas == 1)
            try await Self.writeSeedPage(lab, kubectl)
            try await X.expectPage(lab, kubectl, "http://tomcat:8080", X.clusterPage)

            // The first developer leaves while the second's requests flow: none of them is lost.
            let load = try X.Load(lab, kubectl, url: "tomcat", port: 8080, header: ("X-Dev", "bob"))
            try await load.waitUntilRunning()
            first.signalProgram(SIGINT)
            #expect(await first.waitForExit(timeout: 30) == 0, "\(first.output)")
            #expect(first.output.contains("the mesh has ended"), "\(first.output)")
            try await Task.sleep(for: .seconds(1))
            let result = try await load.stop()
            print("mesh: one developer left while \(result.ok) requests of the other's flowed; errors \(result.errors)")
            #expect(result.errors.isEmpty, "\(result.errors)")
            #expect(result.bodies.keys.sorted() == ["bob local v3"], "\(result.bodies)")
            try await X.expectPage(lab, kubectl, "http://tomcat:8080", X.clusterPage, header: aliceHeader)
            #expect(MeshTestsSupport.isMeshed(try await lab.client.get(Service.self, name: "tomcat")))

            // The last one out: the Service as it was, nothing of the mesh left.
            second.signalProgram(SIGINT)
            #expect(await second.waitForExit(timeout: 30) == 0, "\(second.output)")
            #expect(try await X.json(lab, kubectl, "service", "tomcat") == service)
            try await X.expectPage(lab, kubectl, "http://tomcat:8080", X.clusterPage)
            try await Self.expectNothingLeft(lab)
        }
    }

    // MARK: - Protocols

    /// The same app in the cluster and on the laptop, each naming itself: a WebSocket echo, a gRPC service (unary and
    /// server streaming), an HTTP/2 server (nghttpd) and an upload counter, behind one Service. With the header each
    /// reaches the laptop; without it the cluster.
    @Test(.enabled(if: kubectl != nil)) func webSocketGRPCAndHTTP2AreRoutedByHeader() async throws {
        let kubectl = try #require(Self.kubectl)
        // `make deps` installs them; a machine without them fails here, naming what is missing.
        try #require(MeshTestsSupport.protocolsUnavailable == nil, "\(MeshTestsSupport.protocolsUnavailable ?? "")")
        let ktctl = try #require(builtExecutable("ktctl"))
        try await RunningLab.with { lab in
            let root = "\(LabLayout.stateRoot)/\(lab.name)"
            try MeshTestsSupport.app.write(toFile: "\(root)/app.py", atomically: true, encoding: .utf8)
            try MeshTestsSupport.client.write(toFile: "\(root)/client.py", atomically: true, encoding: .utf8)
            let deploy = try await lab.kubectl(
                kubectl,
                [
                    "create", "deployment", "echo", "--image=python:3", "--port=8081", "--",
                    "/usr/bin/python3", "\(root)/app.py", "cluster",
                ])
            #expect(deploy.status == 0, "\(deploy.error)")
            let manifest = """
                {"apiVersion":"v1","kind":"Service","metadata":{"name":"echo"},"spec":{"selector":{"app":"echo"},
                "ports":[{"name":"ws","port":8081},{"name":"grpc","port":50051},{"name":"h2","port":8082},
                {"name":"upload","port":8083}]}}
                """
            try manifest.write(toFile: "\(root)/echo.json", atomically: true, encoding: .utf8)
            #expect(try await lab.kubectl(kubectl, ["apply", "-f", "\(root)/echo.json"]).status == 0)
            _ = try await lab.kubectl(kubectl, ["rollout", "status", "deployment/echo", "--timeout=60s"])
            try await X.clientPod(lab, kubectl)
            let dev = try await Self.grant(lab, kubectl)
            let workstation = TestNamespace(existing: "\(lab.name)-ws")
            let laptop = try BackgroundProcess(workstation, ["/usr/bin/python3", "\(root)/app.py", "laptop"])
            defer { laptop.stop() }
            for port in [8081, 50051, 8082, 8083] { try await X.waitListening(workstation, port: port) }

            let mesh = try BackgroundProcess(
                workstation,
                X.ktctl(
                    lab, ktctl, "mesh", state: "a",
                    ["echo", "--expose", "8081,50051,8082,8083", "--version-mark", "VERSION:proto"], kubeconfig: dev))
            defer { mesh.stop() }
            try #require(await mesh.waitForOutput("ktctl: meshing service echo", timeout: 90), "\(mesh.output)")

            func client(_ arguments: [String]) async throws -> String {
                let run = try await lab.kubectl(
                    kubectl, ["exec", "client", "--", "/usr/bin/python3", "\(root)/client.py"] + arguments, timeout: 60)
                return run.status == 0 ? run.output : "failed (\(run.status)): \(run.output) \(run.error)"
            }
            #expect(try await client(["ws", "echo:8081"]) == "cluster:a cluster:b\n")
            #expect(try await client(["ws", "echo:8081", "VERSION", "proto"]) == "laptop:a laptop:b\n")
            #expect(try await client(["grpc", "echo:50051"]) == "cluster:hi cluster:n:0 cluster:n:1 cluster:n:2\n")
            #expect(
                try await client(["grpc", "echo:50051", "VERSION", "proto"])
                    == "laptop:hi laptop:n:0 laptop:n:1 laptop:n:2\n")
            // HTTP/2 with prior knowledge and by h2c upgrade (nghttpd speaks no HTTP/1.1).
            for mode in ["--http2-prior-knowledge", "--http2"] {
                for (header, page) in [([String](), "cluster-h2\n 2"), (["-H", "VERSION: proto"], "laptop-h2\n 2")] {
                    let h2 = try await lab.kubectl(
                        kubectl,
                        ["exec", "client", "--", "curl", "-s", "-m", "10", mode, "-w", " %{http_version}"] + header
                            + ["http://echo:8082/"])
                    #expect(h2.output == page, "\(mode) \(header): \(h2.output) \(h2.error)")
                }
            }
            // A POST streamed in chunks with `Expect: 100-continue`, to the laptop and back.
            let chunked = try await lab.kubectl(
                kubectl,
                [
                    "exec", "client", "--", "sh", "-c",
                    "head -c 3000000 /dev/zero | curl -s -m 20 -H 'VERSION: proto' -H 'Transfer-Encoding: chunked' "
                        + "-H 'Expect: 100-continue' --data-binary @- http://echo:8083/upload",
                ])
            #expect(chunked.output == "laptop:3000000\n", "\(chunked.output) \(chunked.error)")
            let routerLog = try await lab.kubectl(kubectl, ["logs", "echo-kt-router"])
            #expect(routerLog.output.contains("[version: proto] → echo-kt-mesh-proto"), "\(routerLog.output)")
            #expect(routerLog.output.contains("HTTP/2\" [version: proto]"), "\(routerLog.output)")

            mesh.signalProgram(SIGINT)
            #expect(await mesh.waitForExit(timeout: 30) == 0, "\(mesh.output)")
            try await Self.expectNothingLeft(lab)

            // Manual mode: only a shadow with the Service's selector and the version label; the Service untouched.
            let service = try await X.json(lab, kubectl, "service", "echo")
            let manual = try BackgroundProcess(
                workstation,
                X.ktctl(
                    lab, ktctl, "mesh", state: "m",
                    ["echo", "--mode", "manual", "--expose", "8081", "--version-mark", "version:m1"], kubeconfig: dev))
            defer { manual.stop() }
            try #require(
                await manual.waitForOutput(
                    "ktctl: meshing service echo in namespace default (manual mode)", timeout: 90),
                "\(manual.output)")
            let shadow = try await lab.client.get(Pod.self, name: "echo-kt-mesh-m1")
            #expect(shadow.metadata.labels?["app"] == "echo", "\(shadow.metadata.labels ?? [:])")
            #expect(shadow.metadata.labels?["version"] == "m1", "\(shadow.metadata.labels ?? [:])")
            #expect(shadow.metadata.labels?["kt-role"] == "shadow-mesh", "\(shadow.metadata.labels ?? [:])")
            #expect(try await X.json(lab, kubectl, "service", "echo") == service)
            #expect((try? await lab.client.get(Pod.self, name: "echo-kt-router")) == nil)
            manual.signalProgram(SIGINT)
            #expect(await manual.waitForExit(timeout: 30) == 0, "\(manual.output)")
            try await Self.expectNothingLeft(lab)
        }
    }

    // MARK: - Crashes

    /// `kill -9` of the router: its routes are back within 10 s; its pod deleted: a member makes it again. `kill -9`
    /// of a developer's ktctl: the router drops that route once its Lease is stale; with both developers killed,
    /// `ktctl clean` puts everything back once no one is left. Then a selector-mode exchange's Service is not meshed.
    @Test(.enabled(if: kubectl != nil)) func killedRouterAndKilledDevelopers() async throws {
        let kubectl = try #require(Self.kubectl)
        let ktctl = try #require(builtExecutable("ktctl"))
        try await RunningLab.with { lab in
            let seed = try await SeedMesh(lab, kubectl)
            defer { seed.stop() }
            let (dev, workstation, service) = (seed.dev, seed.workstation, seed.service)
            func mesh(_ state: String, _ arguments: [String]) throws -> BackgroundProcess {
                try BackgroundProcess(
                    workstation,
                    X.ktctl(
                        lab, ktctl, "mesh", state: state, ["tomcat", "--lease-duration", "10"] + arguments,
                        kubeconfig: dev))
            }
            // Both start at once: the mesh lock lets one make the router and the other join it.
            let first = try mesh("a", ["--expose", "8080", "--version-mark", "a"])
            defer { first.stop() }
            let second = try mesh("b", ["--expose", "8081:8080", "--version-mark", "b"])
            defer { second.stop() }
            try #require(await first.waitForOutput("ktctl: meshing service tomcat", timeout: 90), "\(first.output)")
            try #require(await second.waitForOutput("ktctl: meshing service tomcat", timeout: 90), "\(second.output)")
            let made = [first.output, second.output].filter { $0.contains("(made for this mesh)") }.count
            let shared = [first.output, second.output].filter { $0.contains("(shared with the mesh's other members)") }
                .count
            #expect(made == 1 && shared == 1, "\(first.output)\n\(second.output)")
            try await X.expectPage(lab, kubectl, "http://tomcat:8080", X.localPage, header: "VERSION: a")

            // The router's process killed: the kubelet starts it again and it reads the routes back.
            let router = try #require(try MeshTestsSupport.routerProcess(lab), "no kt-router process in the lab")
            kill(router, SIGKILL)
            let killed = ContinuousClock.now
            let routesBack = try #require(
                try await Self.whenPage(
                    lab, kubectl, "bob local v3\n", header: "VERSION: b", since: killed, within: 30),
                "the routes did not come back within 30 s")
            print("mesh: kill -9 of the router: its routes were back after \(routesBack)")
            #expect(routesBack < .seconds(10))
            try await X.expectPage(lab, kubectl, "http://tomcat:8080", X.localPage, header: "VERSION: a")

            // The router's pod deleted: a member makes it again, and it reads the routes back.
            let delete = try await lab.kubectl(kubectl, ["delete", "pod", "tomcat-kt-router", "--wait=false"])
            #expect(delete.status == 0, "\(delete.error)")
            let deleted = ContinuousClock.now
            try await Task.sleep(for: .seconds(1))
            let routerBack = try #require(
                try await Self.whenPage(
                    lab, kubectl, "bob local v3\n", header: "VERSION: b", since: deleted, within: 60),
                "the router was not made again within 60 s")
            print("mesh: the router's pod deleted: made again and routing after \(routerBack)")
            #expect(
                first.output.contains("is gone; making it again") || second.output.contains("is gone; making it again"),
                "\(first.output) \(second.output)")
            try await X.expectPage(lab, kubectl, "http://tomcat:8080", X.localPage, header: "VERSION: a")

            // A developer killed: their route goes once their Lease is stale; the other's stays.
            first.signalProgram(SIGKILL)
            _ = await first.waitForExit(timeout: 10)
            let crashed = ContinuousClock.now
            // Until then its shadow has no laptop behind it: the router answers 502, naming it.
            var badGateway = ""
            while ContinuousClock.now - crashed < .seconds(5), !badGateway.contains("502") {
                let answer = try await lab.kubectl(
                    kubectl,
                    ["exec", "client", "--", "curl", "-s", "-i", "-m", "5", "-H", "VERSION: a", "http://tomcat:8080"])
                badGateway = answer.output
            }
            #expect(badGateway.contains("HTTP/1.1 502 Bad Gateway"), "\(badGateway)")
            #expect(badGateway.contains("kt-router: upstream tomcat-kt-mesh-a ("), "\(badGateway)")
            let droppedAfter = try #require(
                try await Self.whenPage(lab, kubectl, X.clusterPage, header: "VERSION: a", since: crashed, within: 40),
                "the killed developer's route stayed for 40 s")
            print("mesh: kill -9 of a developer (10 s Lease): the router dropped the route after \(droppedAfter)")
            try await X.expectPage(lab, kubectl, "http://tomcat:8080", "bob local v3\n", header: "VERSION: b")
            let log = try await lab.kubectl(kubectl, ["logs", "tomcat-kt-router"])
            #expect(log.output.contains("route dropped: version: a"), "\(log.output)")
            #expect(log.output.contains("stale"), "\(log.output)")

            // The other killed too; clean leaves the mesh alone while a member is live, and restores it after.
            second.signalProgram(SIGKILL)
            _ = await second.waitForExit(timeout: 10)
            let early = try await workstation.run(
                X.ktctl(lab, ktctl, "clean", state: "c", [], kubeconfig: dev), timeout: 60)
            #expect(early.status == 0, "\(early.output) \(early.error)")
            #expect(
                MeshTestsSupport.isMeshed(try await lab.client.get(Service.self, name: "tomcat")), "\(early.output)")
            try await Task.sleep(for: .seconds(12))
            let late = try await workstation.run(
                X.ktctl(lab, ktctl, "clean", state: "c", [], kubeconfig: dev), timeout: 60)
            #expect(late.status == 0, "\(late.output) \(late.error)")
            #expect(late.output.contains("restored the selector of service/tomcat"), "\(late.output)")
            #expect(late.output.contains("deleted pod/tomcat-kt-router"), "\(late.output)")
            #expect(try await X.json(lab, kubectl, "service", "tomcat") == service)
            try await X.expectPage(lab, kubectl, "http://tomcat:8080", X.clusterPage)
            try await Self.expectNothingLeft(lab)

            // The other way round: a Service a selector-mode exchange holds is not meshed, and the refusal names
            // the holder.
            let exchange = try BackgroundProcess(
                workstation,
                X.ktctl(lab, ktctl, "exchange", state: "e", ["tomcat", "--expose", "8080"], kubeconfig: dev))
            defer { exchange.stop() }
            try #require(
                await exchange.waitForOutput("ktctl: exchanging service tomcat", timeout: 60), "\(exchange.output)")
            let holder = try #require(SessionTests.sessionID(exchange.output))
            let refused = try await workstation.run(
                X.ktctl(lab, ktctl, "mesh", state: "f", ["tomcat", "--expose", "8080"], kubeconfig: dev), timeout: 60)
            #expect(refused.status == 1)
            #expect(refused.error.contains("service tomcat is exchanged by"), "\(refused.error)")
            #expect(refused.error.contains("session \(holder)"), "\(refused.error)")
            #expect(refused.error.contains("cannot be meshed; nothing was changed"), "\(refused.error)")
            #expect((try? await lab.client.get(Pod.self, name: "tomcat-kt-router")) == nil)
            exchange.signalProgram(SIGINT)
            #expect(await exchange.waitForExit(timeout: 30) == 0, "\(exchange.output)")
            #expect(try await X.json(lab, kubectl, "service", "tomcat") == service)
            try await Self.expectNothingLeft(lab)
        }
    }
}

/// What the mesh tests need beyond ExchangeTests' helpers.
enum MeshTestsSupport {
    static func isMeshed(_ service: Service) -> Bool { service.metadata.annotations?["ktctl.io/mesh"] != nil }

    /// Why the protocol test cannot run here (Debian's python3-grpcio, python3-websockets, nghttpd and curl with
    /// HTTP/2), or nil.
    static var protocolsUnavailable: String? {
        guard FileManager.default.isExecutableFile(atPath: "/usr/bin/python3"),
            FileManager.default.fileExists(atPath: "/usr/lib/python3/dist-packages/grpc"),
            FileManager.default.fileExists(atPath: "/usr/lib/python3/dist-packages/websockets"),
            FileManager.default.isExecutableFile(atPath: "/usr/sbin/nghttpd")
        else { return "needs python3-grpcio, python3-websockets and nghttp2-server (make deps)" }
        return nil
    }

    /// The pid of the lab's kt-router process: found among the processes of the lab's pod namespaces.
    static func routerProcess(_ lab: RunningLab) throws -> pid_t? {
        let names = try FileManager.default.contentsOfDirectory(atPath: "/run/netns").filter {
            $0.hasPrefix("\(lab.name)-pod-")
        }
        for name in names {
            let pids = (try? TestNamespace.run(["ip", "netns", "pids", name]).output) ?? ""
            for text in pids.split(separator: "\n") {
                guard let pid = pid_t(text),
                    let command = FileManager.default.contents(atPath: "/proc/\(pid)/cmdline")
                else { continue }
                let argv = command.split(separator: 0).map { String(decoding: $0, as: UTF8.self) }
                if argv.first?.hasSuffix("/kt-router") == true { return pid }
            }
        }
        return nil
    }

    /// One app on four ports, naming itself: a WebSocket echo on 8081, gRPC `kt.Echo/Say` and `kt.Echo/Count` on
    /// 50051, nghttpd serving `<name>-h2` on 8082, and on 8083 a POST's body length.
    static let app = #"""
        import asyncio, http.server, os, subprocess, sys, tempfile, threading
        from concurrent import futures
        import grpc, websockets
        name = sys.argv[1]
        page = tempfile.mkdtemp()
        with open(os.path.join(page, "index.html"), "w") as f:
            f.write(name + "-h2\n")
        h2 = subprocess.Popen(["nghttpd", "--no-tls", "-d", page, "8082"])
        def say(request, context): return (name + ":" + request.decode()).encode()
        def count(request, context):
            for i in range(3): yield ("%s:%s:%d" % (name, request.decode(), i)).encode()
        server = grpc.server(futures.ThreadPoolExecutor(4))
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("kt.Echo", {
            "Say": grpc.unary_unary_rpc_method_handler(say),
            "Count": grpc.unary_stream_rpc_method_handler(count)}),))
        server.add_insecure_port("0.0.0.0:50051")
        server.start()
        class Upload(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            def do_POST(self):
                size = 0
                if self.headers.get("transfer-encoding", "").lower() == "chunked":
                    while True:
                        n = int(self.rfile.readline().split(b";")[0].strip(), 16)
                        if n == 0:
                            self.rfile.readline()
                            break
                        size += len(self.rfile.read(n))
                        self.rfile.readline()
                else:
                    size = len(self.rfile.read(int(self.headers.get("content-length", "0"))))
                body = ("%s:%d\n" % (name, size)).encode()
                self.send_response(200)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            def log_message(self, *args): pass
        http.server.ThreadingHTTPServer.allow_reuse_address = True
        uploads = http.server.ThreadingHTTPServer(("0.0.0.0", 8083), Upload)
        threading.Thread(target=uploads.serve_forever, daemon=True).start()
        async def echo(ws, path=None):
            async for m in ws: await ws.send(name + ":" + m)
        async def main():
            async with websockets.serve(echo, "0.0.0.0", 8081):
                await asyncio.Future()
        try:
            asyncio.run(main())
        finally:
            h2.terminate()
        """#

    static let client = #"""
        import asyncio, sys, grpc, websockets
        kind, target = sys.argv[1], sys.argv[2]
        meta = [(sys.argv[3].lower(), sys.argv[4])] if len(sys.argv) > 4 else []
        if kind == "ws":
            async def go():
                async with websockets.connect("ws://%s/" % target, extra_headers=meta) as ws:
                    out = []
                    for m in ("a", "b"):
                        await ws.send(m); out.append(await ws.recv())
                    print(" ".join(out))
            asyncio.run(go())
        else:
            with grpc.insecure_channel(target) as ch:
                say = ch.unary_unary("/kt.Echo/Say")
                count = ch.unary_stream("/kt.Echo/Count")
                print(say(b"hi", metadata=meta, timeout=10).decode(),
                      " ".join(r.decode() for r in count(b"n", metadata=meta, timeout=10)))
        """#
}
