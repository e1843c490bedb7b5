import Foundation
import KubeKit
import LabKit
import LabTestSupport
import NIOCore
import NIOPosix
import NamespaceTestSupport
import Testing

/// A pod whose container (python, as the lab's `python` image runs its command) sends `gibibytes` GiB of the
/// byte pattern `offset % 251` to whoever connects to port 9000.
func patternPod(_ name: String, bytes: Int) -> Pod {
    var container = Container(name: "source", image: "python:3.12")
    container.command = [
        "python3", "-c",
        """
        import socket
        block = bytes(i % 251 for i in range(251 * 1024))
        server = socket.socket(); server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("0.0.0.0", 9000)); server.listen(8)
        while True:
            conn, _ = server.accept()
            left = \(bytes)
            try:
                while left > 0:
                    n = min(left, len(block)); conn.sendall(block[:n]); left -= n
            except OSError:
                pass  # the kubelet's readiness probe connects and leaves at once
            conn.close()
        """,
    ]
    container.ports = [ContainerPort(containerPort: 9000)]
    return Pod(metadata: ObjectMeta(name: name, labels: ["app": name]), spec: PodSpec(containers: [container]))
}

/// Counts and checks what arrives: byte i must be i % 251 (the period continues across the blocks since 251 KiB
/// is a multiple of 251).
final class PatternCheck: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    private var offset = 0
    private var good = true
    private let done: EventLoopPromise<(Int, Bool)>

    init(done: EventLoopPromise<(Int, Bool)>) { self.done = done }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let buffer = unwrapInboundIn(data)
        buffer.withUnsafeReadableBytes { bytes in
            var position = offset % 251
            for byte in bytes {
                if byte != UInt8(position) { good = false }
                position = position == 250 ? 0 : position + 1
            }
        }
        offset += buffer.readableBytes
    }

    func channelInactive(context: ChannelHandlerContext) { done.succeed((offset, good)) }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        done.fail(error)
        context.close(promise: nil)
    }
}

/// Whether the Python `kubernetes` client is installed (`make deps` installs it).
let pythonClientInstalled: Bool = {
    let result: TestNamespace.CommandResult? = try? TestNamespace.run(["env", "python3", "-c", "import kubernetes"])
    return result?.status == 0
}()

@Suite(.serialized, .enabled(if: TestNamespace.unavailableReason == nil)) struct KtlabTests {
    /// ktlab refuses to run as anyone but root, and says so.
    @Test func refusesWithoutRoot() throws {
        let built = try #require(builtExecutable("ktlab"))
        // A copy that an unprivileged user may execute (the checkout may be private to root).
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("ktlab-noroot-\(getpid())").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        chmod(directory, 0o755)
        let ktlab = "\(directory)/ktlab"
        try FileManager.default.copyItem(atPath: built, toPath: ktlab)
        let result = try TestNamespace.run([
            "setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", ktlab, "up", "--name", "ktnoroot",
        ])
        #expect(result.status != 0)
        #expect((result.output + result.error).contains("must run as root"))
        #expect(!Host.namespaces().contains { $0.hasPrefix("ktnoroot") })
    }

    /// KubeKit's port-forward through ktlab's API server to a process in a pod's namespace: 1 GiB byte-exact;
    /// `ktlab down` then leaves no namespace, state directory or process behind.
    @Test func portForwardGibibyteToAPodAndACleanDown() async throws {
        let name = try await RunningLab.with { lab in
            _ = try await lab.client.create(patternPod("source", bytes: 1 << 30))
            let pod = try await lab.waitReady("source")
            #expect(pod.status?.podIP?.hasPrefix("10.244.0.") == true)
            #expect(pod.spec?.nodeName == "\(lab.name)-node")
            let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
            let eventLoop = group.next()
            let started = ContinuousClock.now
            let channel = try await PortForwarder(client: lab.client, pod: "source", port: 9000).connect(on: eventLoop)
            let done = eventLoop.makePromise(of: (Int, Bool).self)
            try await eventLoop.submit {
                try channel.pipeline.syncOperations.addHandler(PatternCheck(done: done))
                channel.setOption(.autoRead, value: true).whenComplete { _ in }
                channel.read()
            }.get()
            let (count, good) = try await done.futureResult.get()
            let elapsed = ContinuousClock.now - started
            print("ktlab port-forward: \(count) bytes in \(elapsed)")
            #expect(count == 1 << 30)
            #expect(good)
            try await group.shutdownGracefully()
            // Deleting the pod removes its namespace (python ends at once on SIGTERM).
            try await lab.client.delete(Pod.self, name: "source")
            let deadline = ContinuousClock.now + .seconds(5)
            while Host.namespaces().contains(where: { $0.hasPrefix("\(lab.name)-pod-") }),
                ContinuousClock.now < deadline
            {
                try await Task.sleep(for: .milliseconds(100))
            }
            #expect(!Host.namespaces().contains { $0.hasPrefix("\(lab.name)-pod-") })
        }
        #expect(!Host.namespaces().contains { $0.hasPrefix("\(name)-") })
        // The host's own network was never touched: no ktlab interface or nftables table in the root namespace.
        let links = try await TestNamespace.run(["ip", "-br", "link"]).output
        #expect(
            !links.split(separator: "\n").contains {
                $0.hasPrefix("kt-br") || $0.hasPrefix("ws0") || $0.hasPrefix("vp")
            })
        #expect(!(try await TestNamespace.run(["nft", "list", "tables"]).output.contains("ktlab")))
        #expect(!FileManager.default.fileExists(atPath: "\(LabLayout.stateRoot)/\(name)"))
        #expect(!FileManager.default.fileExists(atPath: "/etc/netns/\(name)-ws"))
        let leftovers = try await TestNamespace.run(["pgrep", "-f", "serve --name \(name)"])
        #expect(leftovers.output.isEmpty)
    }

    /// Real clients nobody here wrote: the Python `kubernetes` client lists, watches and port-forwards to the
    /// tomcat pod; from another pod the page is served; from the workstation namespace pods are unreachable.
    @Test(.enabled(if: pythonClientInstalled))
    func pythonClientAndPodNetwork() async throws {
        try await RunningLab.with { lab in
            var tomcat = Container(name: "tomcat", image: "tomcat:9")
            tomcat.ports = [ContainerPort(containerPort: 8080)]
            _ = try await lab.client.create(
                Pod(
                    metadata: ObjectMeta(name: "tomcat", labels: ["app": "tomcat"]), spec: PodSpec(containers: [tomcat])
                ))
            let pod = try await lab.waitReady("tomcat")
            let ip = try #require(pod.status?.podIP)
            let root = "\(LabLayout.stateRoot)/\(lab.name)/pods/default_tomcat/tomcat/usr/local/tomcat/webapps/ROOT"
            try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
            try "kt-connect demo v1\n".write(toFile: "\(root)/index.html", atomically: true, encoding: .utf8)
            var client = Container(name: "client", image: "busybox")
            client.command = ["sleep", "infinity"]
            _ = try await lab.client.create(
                Pod(metadata: ObjectMeta(name: "client"), spec: PodSpec(containers: [client])))
            _ = try await lab.waitReady("client")
            let fromPod = try await TestNamespace.run([
                "ip", "netns", "exec", "\(lab.name)-pod-2", "curl", "-s", "-m", "5", "http://\(ip):8080/",
            ])
            #expect(fromPod.output == "kt-connect demo v1\n")
            let fromWorkstation = try await TestNamespace.run([
                "ip", "netns", "exec", "\(lab.name)-ws", "curl", "-s", "-m", "2", "http://\(ip):8080/",
            ])
            #expect(fromWorkstation.status != 0)

            let script = """
                import json
                from kubernetes import client, config, watch
                from kubernetes.stream import portforward
                config.load_kube_config(config_file="\(lab.kubeconfig)")
                v1 = client.CoreV1Api()
                pods = v1.list_namespaced_pod("default", label_selector="app=tomcat")
                out = {"pods": [(p.metadata.name, p.status.phase, p.status.pod_ip, p.status.container_statuses[0].ready) for p in pods.items]}
                w = watch.Watch()
                seen = []
                for event in w.stream(v1.list_namespaced_pod, "default", resource_version=pods.metadata.resource_version, timeout_seconds=5):
                    seen.append((event["type"], event["object"].metadata.name))
                    if len(seen) == 1: break
                out["watch"] = seen
                pf = portforward(v1.connect_get_namespaced_pod_portforward, "tomcat", "default", ports="8080")
                s = pf.socket(8080)
                s.sendall(b"GET / HTTP/1.0\\r\\n\\r\\n")
                data = b""
                while True:
                    chunk = s.recv(65536)
                    if not chunk: break
                    data += chunk
                out["page"] = data.split(b"\\r\\n\\r\\n", 1)[-1].decode()
                print(json.dumps(out))
                """
            let scriptPath = "\(LabLayout.stateRoot)/\(lab.name)/check.py"
            try script.write(toFile: scriptPath, atomically: true, encoding: .utf8)
            // The watch needs a change to report: label the pod while the script waits.
            let finished = LockedFlag()
            async let python: TestNamespace.CommandResult = {
                defer { finished.set() }
                return try await TestNamespace.run(["env", "python3", scriptPath], timeout: 60)
            }()
            // Change the pod every half second until the script is done, however long it takes to start.
            var round = 0
            while !finished.isSet {
                round += 1
                try await Task.sleep(for: .milliseconds(500))
                _ = try? await lab.client.patch(
                    Pod.self, name: "tomcat", .merge(["metadata": ["labels": ["seen": .string(String(round))]]]))
                if round > 100 { break }
            }
            let result = try await python
            #expect(result.status == 0, "\(result.error)")
            let output = try JSONValue(json: Data(result.output.utf8))
            #expect(output["pods"] == [["tomcat", "Running", .string(ip), true]])
            #expect(output["watch"] == [["MODIFIED", "tomcat"]])
            #expect(output["page"] == "kt-connect demo v1\n")
        }
    }
}

/// The seed quick start's kubectl commands against ktlab, with kubectl 1.33 (`make deps` puts it in
/// .build/tools), then the cluster network from a pod and from the workstation.
@Suite(.serialized, .enabled(if: TestNamespace.unavailableReason == nil)) struct KtlabKubectlTests {
    static var kubectl: String? { RunningLab.tool("kubectl") }

    @Test(.enabled(if: kubectl != nil)) func seedCommandsServicesAndDNS() async throws {
        let kubectl = try #require(Self.kubectl)
        try await RunningLab.with { lab in
            let (podIP, clusterIP) = try await lab.deploySeedTomcat(kubectl)
            let failing = try await lab.kubectl(
                kubectl, ["exec", "deployment/tomcat", "--", "sh", "-c", "echo out; echo err >&2; exit 3"])
            #expect(failing.status == 3)
            #expect(failing.output == "out\n")
            #expect(failing.error.contains("err\n") && failing.error.contains("command terminated with exit code 3"))

            let wide = try await lab.kubectl(kubectl, ["get", "pod", "-o", "wide", "--selector", "app=tomcat"]).output
            let lines = wide.split(separator: "\n")
            #expect(
                lines.first?.split(separator: " ", omittingEmptySubsequences: true).map(String.init)
                    == [
                        "NAME", "READY", "STATUS", "RESTARTS", "AGE", "IP", "NODE", "NOMINATED", "NODE", "READINESS",
                        "GATES",
                    ])
            #expect(
                lines.count == 2 && lines[1].contains("1/1") && lines[1].contains("Running") && lines[1].contains(podIP)
                    && lines[1].contains("\(lab.name)-node"), "\(wide)")
            let svc = try await lab.kubectl(kubectl, ["get", "svc", "tomcat"]).output
            #expect(svc.contains("ClusterIP") && svc.contains(clusterIP) && svc.contains("8080/TCP"), "\(svc)")

            // A pod to look from, created while `kubectl get pods -w` streams; it writes a line to its log.
            let kubeconfig = lab.kubeconfig
            let home = "\(LabLayout.stateRoot)/\(lab.name)/home"
            async let watching = TestNamespace.run(
                ["env", "HOME=\(home)", "KUBECONFIG=\(kubeconfig)", "timeout", "4", kubectl, "get", "pods", "-w"],
                timeout: 10)
            try await Task.sleep(for: .milliseconds(1500))
            var client = Container(name: "client", image: "busybox")
            client.command = ["sh", "-c", "echo hello from the pod; sleep infinity"]
            _ = try await lab.client.create(
                Pod(metadata: ObjectMeta(name: "client"), spec: PodSpec(containers: [client])))
            _ = try await lab.waitReady("client")
            let watched = try await watching.output
            #expect(watched.split(separator: "\n").filter { $0.hasPrefix("client ") }.count >= 2, "\(watched)")
            #expect(try await lab.kubectl(kubectl, ["logs", "client"]).output == "hello from the pod\n")
            let clientNamespace = "\(lab.name)-pod-2"
            func bridgeMAC() async throws -> String {
                try await TestNamespace.run(["ip", "-n", "\(lab.name)-node", "-j", "link", "show", "kt-br0"]).output
            }
            let mac = try await bridgeMAC()
            // Give the service rules a moment to follow the endpoints.
            try await Task.sleep(for: .milliseconds(300))
            for url in [
                "http://\(podIP):8080", "http://\(clusterIP):8080", "http://tomcat:8080", "http://tomcat.default:8080",
                "http://tomcat.default.svc.cluster.local:8080",
            ] {
                let fromPod = try await TestNamespace.run([
                    "ip", "netns", "exec", clientNamespace, "curl", "-s", "-m", "5", url,
                ])
                #expect(fromPod.output == "kt-connect demo v1\n", "from a pod: \(url)")
                let fromWorkstation = try await TestNamespace.run(
                    ["ip", "netns", "exec", "\(lab.name)-ws", "curl", "-s", "-m", "1", url])
                #expect(fromWorkstation.status != 0, "the workstation must not reach \(url)")
            }
            // Hairpin: the tomcat pod through its own Service.
            let hairpin = try await TestNamespace.run(
                ["ip", "netns", "exec", "\(lab.name)-pod-1", "curl", "-s", "-m", "5", "http://\(clusterIP):8080"])
            #expect(hairpin.output == "kt-connect demo v1\n")
            // Cluster DNS from the pod: A, PTR; the workstation's upstream knows no cluster names.
            let answer = try await TestNamespace.run([
                "ip", "netns", "exec", clientNamespace, "dig", "+short", "tomcat.default.svc.cluster.local",
            ])
            #expect(answer.output == "\(clusterIP)\n")
            let reverse = try await TestNamespace.run([
                "ip", "netns", "exec", clientNamespace, "dig", "+short", "-x", clusterIP,
            ])
            #expect(reverse.output == "tomcat.default.svc.cluster.local.\n")
            let upstream = try await TestNamespace.run([
                "ip", "netns", "exec", "\(lab.name)-ws", "dig", "+short", "tomcat.default.svc.cluster.local",
            ])
            #expect(upstream.output.isEmpty)

            // Scale to 3 and back to 1: the Endpoints and a headless service's DNS answers follow within 2 s of
            // the pods (becoming ready; being deleted).
            #expect(
                try await lab.kubectl(
                    kubectl,
                    ["create", "service", "clusterip", "tomcat-headless", "--clusterip=None", "--tcp=8080:8080"]
                ).status == 0)
            #expect(
                try await lab.kubectl(
                    kubectl, ["patch", "service", "tomcat-headless", "-p", #"{"spec":{"selector":{"app":"tomcat"}}}"#]
                ).status == 0)
            func endpoints() async throws -> Int {
                try await lab.client.get(Endpoints.self, name: "tomcat").raw["subsets"]?.arrayValue?
                    .first?["addresses"]?.arrayValue?.count ?? 0
            }
            func dns() async throws -> Int {
                try await TestNamespace.run([
                    "ip", "netns", "exec", clientNamespace, "dig", "+short", "+time=1", "+tries=1",
                    "tomcat-headless.default.svc.cluster.local",
                ]).output.split(separator: "\n").count
            }
            // How long the lab takes to follow is measured on the Endpoints object (cheap to read); the cluster DNS
            // answers from the same store, so it agrees at once: checked after, with time for dig itself, which
            // under the full suite's load took seconds to start.
            func following(_ count: Int) async throws -> Duration {
                let since = ContinuousClock.now
                while try await endpoints() != count, ContinuousClock.now < since + .seconds(10) {
                    try await Task.sleep(for: .milliseconds(20))
                }
                let took = ContinuousClock.now - since
                #expect(try await endpoints() == count)
                var answers = 0
                let deadline = ContinuousClock.now + .seconds(10)
                repeat {
                    answers = try await dns()
                } while answers != count && ContinuousClock.now < deadline
                #expect(answers == count)
                return took
            }
            func readyPods() async throws -> Int {
                try await lab.client.list(Pod.self, options: ListOptions(labelSelector: "app=tomcat")).items.filter {
                    $0.status?.isReady == true && $0.raw["metadata"]?["deletionTimestamp"] == nil
                }.count
            }
            #expect(
                try await lab.kubectl(kubectl, ["scale", "deployment", "tomcat", "--replicas=3"]).output
                    == "deployment.apps/tomcat scaled\n")
            let deadline = ContinuousClock.now + .seconds(20)
            while try await readyPods() != 3, ContinuousClock.now < deadline {
                try await Task.sleep(for: .milliseconds(50))
            }
            #expect(try await readyPods() == 3)
            let up = try await following(3)
            #expect(up < .seconds(2))
            print("ktlab: endpoints followed 3 ready pods in \(up); DNS agreed")
            #expect(
                try await lab.kubectl(kubectl, ["scale", "deployment", "tomcat", "--replicas=1"]).output
                    == "deployment.apps/tomcat scaled\n")
            let down = try await following(1)
            #expect(down < .seconds(2))
            print("ktlab: endpoints followed the scale to 1 in \(down); DNS agreed")
            // Pods came and went: the pods' gateway kept its MAC (a bridge with a kernel-chosen one takes its lowest
            // port's, which left every pod's ARP entry for the gateway stale for ~10 s), and answers at once.
            #expect(try await bridgeMAC() == mac)
            let afterChurn = try await TestNamespace.run([
                "ip", "netns", "exec", clientNamespace, "curl", "-s", "-m", "2", "http://tomcat:8080",
            ])
            #expect(afterChurn.output == "kt-connect demo v1\n", "\(afterChurn.error)")
            #expect(try await lab.client.get(Deployment.self, name: "tomcat").spec?.replicas == 1)
            #expect(
                try await lab.kubectl(
                    kubectl, ["patch", "deployment", "tomcat", "-p", #"{"metadata":{"labels":{"tier":"web"}}}"#]
                ).output
                    == "deployment.apps/tomcat patched\n")
            #expect(
                try await lab.kubectl(kubectl, ["delete", "deployment", "tomcat"]).output
                    == "deployment.apps \"tomcat\" deleted\n")
            // Its pods terminate gracefully: tomcat's server ends on SIGTERM, well inside the grace period.
            let gone = ContinuousClock.now + .seconds(5)
            while try await !lab.client.list(Pod.self, options: ListOptions(labelSelector: "app=tomcat")).items.isEmpty,
                ContinuousClock.now < gone
            {
                try await Task.sleep(for: .milliseconds(100))
            }
            #expect(
                try await lab.client.list(Pod.self, options: ListOptions(labelSelector: "app=tomcat")).items.isEmpty)
        }
    }
}

final class LockedFlag: @unchecked Sendable {
    private let lock = NSLock()
    private var value = false
    func set() { lock.withLock { value = true } }
    var isSet: Bool { lock.withLock { value } }
}

/// Debian's kubectl 1.20 (`kubernetes-client`, unpacked by `make deps`): JSON bodies, legacy discovery; create,
/// expose, get, scale, patch and delete. (Its exec and port-forward speak only SPDY, which ktlab does not serve.)
@Suite(.serialized, .enabled(if: TestNamespace.unavailableReason == nil)) struct KtlabOldKubectlTests {
    static var kubectl: String? { RunningLab.tool("kubectl-1.20") }

    @Test(.enabled(if: kubectl != nil)) func kubectl120() async throws {
        let kubectl = try #require(Self.kubectl)
        try await RunningLab.with { lab in
            #expect(try await lab.kubectl(kubectl, ["version", "--short"]).output.contains("Client Version: v1.20"))
            #expect(
                try await lab.kubectl(kubectl, ["create", "deployment", "web", "--image=tomcat:9"]).output
                    == "deployment.apps/web created\n")
            #expect(
                try await lab.kubectl(kubectl, ["expose", "deployment", "web", "--port=8080"]).output
                    == "service/web exposed\n")
            let pods = try await lab.client.list(Pod.self, options: ListOptions(labelSelector: "app=web")).items
            _ = try await lab.waitReady(try #require(pods.first).name)
            let get = try await lab.kubectl(kubectl, ["get", "deployment", "web"]).output
            #expect(get.contains("web") && get.contains("1/1"), "\(get)")
            #expect(try await lab.kubectl(kubectl, ["get", "svc", "web"]).output.contains("8080/TCP"))
            #expect(
                try await lab.kubectl(kubectl, ["scale", "deployment", "web", "--replicas=2"]).output
                    == "deployment.apps/web scaled\n")
            #expect(try await lab.client.get(Deployment.self, name: "web").spec?.replicas == 2)
            #expect(
                try await lab.kubectl(
                    kubectl,
                    [
                        "patch", "deployment", "web", "-p",
                        #"{"spec":{"template":{"spec":{"containers":[{"name":"tomcat","env":[{"name":"A","value":"1"}]}]}}}}"#,
                    ]
                )
                .output == "deployment.apps/web patched\n")
            let patched = try await lab.client.get(Deployment.self, name: "web")
            #expect(patched.spec?.template.spec?.containers.first?.image == "tomcat:9")
            #expect(patched.spec?.template.spec?.containers.first?.env?.first?.value == "1")
            #expect(
                try await lab.kubectl(kubectl, ["delete", "deployment", "web"]).output
                    == "deployment.apps \"web\" deleted\n")
            #expect(try await lab.kubectl(kubectl, ["delete", "svc", "web"]).output == "service \"web\" deleted\n")
        }
    }
}
