import Foundation
import Glibc
import KtctlKit
import KubeKit
import LabKit
import LabTestSupport
import NamespaceTestSupport
import Testing

/// Cluster traffic to the laptop, end to end against ktlab with the real binaries: the seed's exchange (from a pod and
/// through `ktctl connect`), both modes, with a pod sending ~100 requests a second across the switches; one holder of
/// a Service at a time; a `kill -9`ed exchange put back by `ktctl recover` at once and by `ktctl clean` once its Lease
/// is stale; a UDP Service; preview and forward.
@Suite(.serialized, .enabled(if: TestNamespace.unavailableReason == nil)) struct ExchangeTests {
    static var kubectl: String? { RunningLab.tool("kubectl") }
    static let localPage = "kt-connect local v2\n"
    static let clusterPage = "kt-connect demo v1\n"

    // MARK: - Helpers

    /// A ktctl command against the lab from the workstation namespace: sessions keep their state in the lab's
    /// directory and use the lab's shadow image.
    static func ktctl(
        _ lab: RunningLab, _ ktctl: String, _ command: String, state: String, _ arguments: [String],
        kubeconfig: String? = nil
    ) -> [String] {
        let sessions = ["exchange", "preview", "clean", "mesh", "forward"]
        return [
            ktctl, command, "--kubeconfig", kubeconfig ?? "\(LabLayout.stateRoot)/\(lab.name)/kubeconfig-ws", "-n",
            "default",
        ]
            + (sessions.contains(command) ? ["--state-dir", "\(LabLayout.stateRoot)/\(lab.name)/\(state)"] : [])
            + (["exchange", "preview", "mesh"].contains(command) ? ["--image", "kt-shadow:dev"] : [])
            + (command == "mesh" ? ["--router-image", "kt-router:dev"] : []) + arguments
    }

    /// The local tomcat of the seed: Python's HTTP server on the workstation's 127.0.0.1:`port`, serving
    /// "kt-connect local v2"; returns once it answers.
    static func localServer(_ lab: RunningLab, port: Int = 8080, page: String = localPage) async throws
        -> BackgroundProcess
    {
        let directory = "\(LabLayout.stateRoot)/\(lab.name)/local-\(port)"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        try page.write(toFile: "\(directory)/index.html", atomically: true, encoding: .utf8)
        let workstation = TestNamespace(existing: "\(lab.name)-ws")
        let server = try BackgroundProcess(
            workstation,
            ["python3", "-m", "http.server", String(port), "--bind", "127.0.0.1", "--directory", directory])
        let deadline = ContinuousClock.now + .seconds(10)
        while ContinuousClock.now < deadline {
            let probe = try await workstation.run(["curl", "-s", "-m", "2", "http://127.0.0.1:\(port)/"])
            if probe.output == page { return server }
            try await Task.sleep(for: .milliseconds(100))
        }
        server.stop()
        throw TestNamespaceError("the local HTTP server did not answer: \(server.output)")
    }

    /// Waits until something listens on TCP `port` in `namespace`.
    static func waitListening(_ namespace: TestNamespace, port: Int) async throws {
        let deadline = ContinuousClock.now + .seconds(10)
        while ContinuousClock.now < deadline {
            let listening = try await namespace.run(["ss", "-Htln", "sport = :\(port)"])
            if !listening.output.isEmpty { return }
            try await Task.sleep(for: .milliseconds(50))
        }
        throw TestNamespaceError("nothing listens on port \(port) in \(namespace.name)")
    }

    /// A pod to send requests from (Python, as the seed's curl stands in for any client in the cluster).
    static func clientPod(_ lab: RunningLab, _ kubectl: String) async throws {
        let run = try await lab.kubectl(
            kubectl, ["run", "client", "--image=python:3", "--command", "--", "sleep", "infinity"])
        #expect(run.status == 0, "\(run.error)")
        _ = try await lab.waitReady("client")
    }

    /// Expects a pod's `curl url` to print `page`; says what it printed instead.
    static func expectPage(
        _ lab: RunningLab, _ kubectl: String, _ url: String, _ page: String, header: String? = nil,
        sourceLocation: SourceLocation = #_sourceLocation
    ) async throws {
        let got = try await curlFromPod(lab, kubectl, url, header: header)
        #expect(got == page, "\(url) \(header ?? "") printed \(got)", sourceLocation: sourceLocation)
    }

    /// What a pod gets for `url` (curl's output, or its error).
    static func curlFromPod(_ lab: RunningLab, _ kubectl: String, _ url: String, header: String? = nil) async throws
        -> String
    {
        let curl = try await lab.kubectl(
            kubectl, ["exec", "client", "--", "curl", "-s", "-m", "10"] + (header.map { ["-H", $0] } ?? []) + [url])
        return curl.status == 0 ? curl.output : "curl failed (\(curl.status)): \(curl.error)"
    }

    /// `kubectl get <kind> <name> -o json` without metadata.resourceVersion.
    static func json(_ lab: RunningLab, _ kubectl: String, _ kind: String, _ name: String) async throws -> String {
        let get = try await lab.kubectl(kubectl, ["get", kind, name, "-o", "json"])
        try #require(get.status == 0, "\(get.error)")
        var value = try JSONValue(json: Data(get.output.utf8))
        value["metadata"]?["resourceVersion"] = nil
        return SessionTests.canonical(value)
    }

    static func podUIDs(_ lab: RunningLab, _ selector: String) async throws -> [String: String] {
        let pods = try await lab.client.list(Pod.self, options: ListOptions(labelSelector: selector)).items
        return Dictionary(uniqueKeysWithValues: pods.map { ($0.name, $0.metadata.uid ?? "") })
    }

    /// Sequential requests from the client pod, a new connection each, ~100 a second, until `stop()`: what answered,
    /// what failed (connection errors and 5xx), and the largest gap between two answers. The name is resolved once,
    /// as an HTTP client with a DNS cache does: what is measured is the Service's switch.
    final class Load: Sendable {
        struct Result: Decodable {
            var ok: Int
            var errors: [String]
            var maxgap: Double
            var bodies: [String: Int]
        }

        let stopFile: String
        let task: Task<TestNamespace.CommandResult, any Error>

        init(_ lab: RunningLab, _ kubectl: String, url host: String, port: Int, header: (String, String)? = nil) throws
        {
            let root = "\(LabLayout.stateRoot)/\(lab.name)"
            let script = "\(root)/load.py"
            stopFile = "\(root)/load-\(UInt32.random(in: 0..<UInt32.max)).stop"
            try Self.script.write(toFile: script, atomically: true, encoding: .utf8)
            task = Task { [stopFile] in
                try await lab.kubectl(
                    kubectl,
                    ["exec", "client", "--", "python3", script, host, String(port), stopFile, "300"]
                        + (header.map { [$0.0, $0.1] } ?? []),
                    timeout: 330)
            }
        }

        /// Waits until the pod's loop has had its first answer (`kubectl exec` and Python's start took over 10 s once
        /// on the loaded machine, and the loop then missed the whole exchange).
        func waitUntilRunning(timeout: Duration = .seconds(60)) async throws {
            let deadline = ContinuousClock.now + timeout
            while access(stopFile + ".started", F_OK) != 0 {
                guard ContinuousClock.now < deadline else {
                    throw TestNamespaceError("the load in the client pod did not start within \(timeout)")
                }
                try await Task.sleep(for: .milliseconds(50))
            }
            unlink(stopFile + ".started")
        }

        func stop() async throws -> Result {
            FileManager.default.createFile(atPath: stopFile, contents: nil)
            let run = try await task.value
            unlink(stopFile)
            let line = try #require(run.output.split(separator: "\n").last, "load: \(run.output) \(run.error)")
            return try JSONDecoder().decode(Result.self, from: Data(line.utf8))
        }

        static let script = #"""
            import http.client, json, os, socket, sys, time
            name, port, stop, limit = sys.argv[1], int(sys.argv[2]), sys.argv[3], float(sys.argv[4])
            headers = {sys.argv[5]: sys.argv[6]} if len(sys.argv) > 6 else {}
            host = socket.getaddrinfo(name, port, socket.AF_INET, socket.SOCK_STREAM)[0][4][0]
            start = time.time(); last = start; gap = 0.0; ok = 0; errors = []; bodies = {}
            while not os.path.exists(stop) and time.time() - start < limit:
                t = time.time()
                try:
                    c = http.client.HTTPConnection(host, port, timeout=5)
                    c.request("GET", "/", headers=headers)
                    r = c.getresponse()
                    body = r.read().decode(errors="replace").strip()
                    c.close()
                    if r.status >= 500:
                        errors.append("%.3f s: HTTP %d" % (t - start, r.status))
                    else:
                        ok += 1
                        key = body if r.status == 200 else "HTTP %d" % r.status
                        bodies[key] = bodies.get(key, 0) + 1
                        now = time.time(); gap = max(gap, now - last); last = now
                        if ok == 1:
                            open(stop + ".started", "w").close()
                except Exception as e:
                    errors.append("%.3f s: %s" % (t - start, e))
                time.sleep(0.008)
            print(json.dumps({"ok": ok, "errors": errors[:20], "maxgap": gap, "bodies": bodies}))
            """#
    }

    // MARK: - The seed's exchange

    /// The seed's exchange in selector mode: a pod's `curl http://tomcat:8080` and the workstation's through `ktctl
    /// connect` print the local page while `ktctl exchange tomcat --expose 8080` runs and the cluster's after Ctrl-C,
    /// which restores everything within 5 s. No pod restarted (same UIDs); the Service's JSON is the one from before
    /// (but for resourceVersion); a pod sending ~100 requests a second across both switches saw no error.
    @Test(.enabled(if: kubectl != nil)) func theSeedExchangeInSelectorMode() async throws {
        let kubectl = try #require(Self.kubectl)
        let ktctl = try #require(builtExecutable("ktctl"))
        try await RunningLab.with { lab in
            _ = try await lab.deploySeedTomcat(kubectl)
            try await Self.clientPod(lab, kubectl)
            let workstation = TestNamespace(existing: "\(lab.name)-ws")
            let local = try await Self.localServer(lab)
            defer { local.stop() }
            let service = try await Self.json(lab, kubectl, "service", "tomcat")
            let uids = try await Self.podUIDs(lab, "app=tomcat")
            try await Self.expectPage(lab, kubectl, "http://tomcat:8080", Self.clusterPage)

            let load = try Load(lab, kubectl, url: "tomcat", port: 8080)
            try await load.waitUntilRunning()
            let exchange = try BackgroundProcess(
                workstation, Self.ktctl(lab, ktctl, "exchange", state: "ex", ["tomcat", "--expose", "8080"]))
            defer { exchange.stop() }
            try #require(
                await exchange.waitForOutput("ktctl: exchanging service tomcat", timeout: 60), "\(exchange.output)")
            #expect(exchange.output.contains("waiting for pod tomcat-kt-exchange-"), "\(exchange.output)")
            #expect(exchange.output.contains("tomcat:8080/TCP → 127.0.0.1:8080"), "\(exchange.output)")
            try await Self.expectPage(lab, kubectl, "http://tomcat:8080", Self.localPage)
            // kt-connect's names and labels, and the original selector where its recover looks for it.
            let shadows = try await lab.client.list(
                Pod.self, options: ListOptions(labelSelector: "kt-role=shadow-exchange")
            ).items
            #expect(shadows.count == 1 && shadows[0].name.hasPrefix("tomcat-kt-exchange-"))
            #expect(shadows.first?.metadata.annotations?["kt-config"] == "service=tomcat")
            let taken = try await lab.client.get(Service.self, name: "tomcat")
            #expect(taken.metadata.annotations?["kt-selector"] == #"{"app":"tomcat"}"#)
            #expect(taken.spec?.selector?["kt-target"] == shadows.first?.metadata.labels?["kt-target"])

            // From the workstation through ktctl connect: the same Service, the same laptop.
            let connect = try BackgroundProcess(
                workstation, SessionTests.connect(lab, ktctl, state: "\(LabLayout.stateRoot)/\(lab.name)/co"))
            defer { connect.stop() }
            try #require(await connect.waitForOutput("ktctl: connected", timeout: 60), "\(connect.output)")
            let through = try await workstation.run(["curl", "-s", "-m", "10", "http://tomcat:8080"])
            #expect(through.output == Self.localPage, "\(through.error)")
            try await Task.sleep(for: .seconds(1))

            exchange.signalProgram(SIGINT)
            let stopping = ContinuousClock.now
            let status = await exchange.waitForExit(timeout: 20)
            let took = ContinuousClock.now - stopping
            #expect(status == 0, "\(exchange.output)")
            #expect(took < .seconds(5), "the exchange took \(took) to stop")
            print("selector mode: Ctrl-C to exit, the Service back and the shadow gone: \(took)")
            #expect(exchange.output.contains("the service is as it was"), "\(exchange.output)")
            try await Self.expectPage(lab, kubectl, "http://tomcat:8080", Self.clusterPage)
            let back = try await workstation.run(["curl", "-s", "-m", "10", "http://tomcat:8080"])
            #expect(back.output == Self.clusterPage, "\(back.error)")
            try await Task.sleep(for: .seconds(1))
            let result = try await load.stop()
            print("selector mode: \(result.ok) answers, largest gap \(Int(result.maxgap * 1000)) ms, \(result.bodies)")
            #expect(result.errors.isEmpty, "\(result.errors)")
            #expect(result.bodies[Self.localPage.trimmingCharacters(in: .newlines), default: 0] > 0, "\(result.bodies)")
            #expect(result.bodies.keys.sorted() == ["kt-connect demo v1", "kt-connect local v2"], "\(result.bodies)")

            connect.signalProgram(SIGINT)
            #expect(await connect.waitForExit(timeout: 20) == 0, "\(connect.output)")
            #expect(try await Self.podUIDs(lab, "app=tomcat") == uids)
            #expect(try await Self.json(lab, kubectl, "service", "tomcat") == service)
            #expect(try await SessionTests.managed(lab, Pod.self).isEmpty)
            #expect(try await SessionTests.managed(lab, Lease.self).isEmpty)
            #expect(SessionTests.leftovers("\(LabLayout.stateRoot)/\(lab.name)/ex").isEmpty)
        }
    }

    /// Scale mode: the shadow carries the workload's labels and the Deployment goes to 0; after Ctrl-C it is back at
    /// its two replicas, Ready, and its annotations are as before. No request of a pod's ~100 a second failed.
    @Test(.enabled(if: kubectl != nil)) func scaleModeBringsTheReplicasBack() async throws {
        let kubectl = try #require(Self.kubectl)
        let ktctl = try #require(builtExecutable("ktctl"))
        try await RunningLab.with { lab in
            _ = try await lab.deploySeedTomcat(kubectl)
            try await Self.clientPod(lab, kubectl)
            let workstation = TestNamespace(existing: "\(lab.name)-ws")
            let local = try await Self.localServer(lab)
            defer { local.stop() }
            #expect(try await lab.kubectl(kubectl, ["scale", "deployment", "tomcat", "--replicas=2"]).status == 0)
            let ready = try await lab.kubectl(
                kubectl, ["rollout", "status", "deployment/tomcat", "--timeout=60s"], timeout: 70)
            #expect(ready.status == 0, "\(ready.output) \(ready.error)")
            let annotations = try await lab.client.get(Deployment.self, name: "tomcat").metadata.annotations

            let load = try Load(lab, kubectl, url: "tomcat", port: 8080)
            try await load.waitUntilRunning()
            let exchange = try BackgroundProcess(
                workstation,
                Self.ktctl(
                    lab, ktctl, "exchange", state: "ex", ["deploy/tomcat", "--mode", "scale", "--expose", "8080"]))
            defer { exchange.stop() }
            try #require(
                await exchange.waitForOutput("ktctl: exchanging service tomcat", timeout: 60), "\(exchange.output)")
            #expect(exchange.output.contains("deployment tomcat scaled from 2 to 0"), "\(exchange.output)")
            let scaled = try await lab.client.get(Deployment.self, name: "tomcat")
            #expect(scaled.spec?.replicas == 0)
            #expect(scaled.metadata.annotations?["ktctl.io/replicas"] == "2")
            // Once the workload's pods are gone, every answer is the laptop's.
            let deadline = ContinuousClock.now + .seconds(30)
            while try await !lab.client.list(Pod.self, options: ListOptions(labelSelector: "app=tomcat")).items
                .allSatisfy({ $0.name.contains("-kt-exchange-") }), ContinuousClock.now < deadline
            {
                try await Task.sleep(for: .milliseconds(200))
            }
            try await Self.expectPage(lab, kubectl, "http://tomcat:8080", Self.localPage)

            exchange.signalProgram(SIGINT)
            #expect(await exchange.waitForExit(timeout: 60) == 0, "\(exchange.output)")
            let back = try await lab.client.get(Deployment.self, name: "tomcat")
            #expect(back.spec?.replicas == 2)
            #expect(back.status?.readyReplicas == 2, "\(back.raw["status"] ?? .null)")
            #expect(back.metadata.annotations == annotations)
            try await Task.sleep(for: .seconds(1))
            let result = try await load.stop()
            print("scale mode: \(result.ok) answers, largest gap \(Int(result.maxgap * 1000)) ms, \(result.bodies)")
            #expect(result.errors.isEmpty, "\(result.errors)")
            #expect(result.bodies["kt-connect local v2", default: 0] > 0, "\(result.bodies)")
            #expect(try await SessionTests.managed(lab, Pod.self).isEmpty)
        }
    }

    /// Scale mode's way out waits for the workload's replicas (pods here slow to start, as after a slow image
    /// pull); a second Ctrl-C skips only that wait: the shadow still goes, and the replicas go on starting.
    @Test(.enabled(if: kubectl != nil)) func aSecondInterruptSkipsTheWaitForReplicas() async throws {
        let kubectl = try #require(Self.kubectl)
        let ktctl = try #require(builtExecutable("ktctl"))
        try await RunningLab.with { lab in
            _ = try await lab.deploySeedTomcat(kubectl)
            let workstation = TestNamespace(existing: "\(lab.name)-ws")
            let local = try await Self.localServer(lab)
            defer { local.stop() }
            let exchange = try BackgroundProcess(
                workstation,
                Self.ktctl(
                    lab, ktctl, "exchange", state: "ex", ["deploy/tomcat", "--mode", "scale", "--expose", "8080"]))
            defer { exchange.stop() }
            try #require(
                await exchange.waitForOutput("ktctl: exchanging service tomcat", timeout: 60), "\(exchange.output)")
            // While it runs, the workload's next pods become slow to start (a template change is not a rollout at 0).
            let slow = try await lab.kubectl(
                kubectl,
                [
                    "patch", "deployment", "tomcat", "--type=merge", "-p",
                    #"{"spec":{"template":{"metadata":{"annotations":{"ktlab.io/start-delay":"60"}}}}}"#,
                ])
            #expect(slow.status == 0, "\(slow.error)")
            exchange.signalProgram(SIGINT)
            try await Task.sleep(for: .seconds(2))
            #expect(exchange.isRunning, "the exchange did not wait for the replicas: \(exchange.output)")
            let skipped = ContinuousClock.now
            exchange.signalProgram(SIGINT)
            #expect(await exchange.waitForExit(timeout: 15) == 0, "\(exchange.output)")
            #expect(ContinuousClock.now - skipped < .seconds(10))
            #expect(
                exchange.output.contains("interrupt (Ctrl-C) again: not waiting for deployment/tomcat"),
                "\(exchange.output)")
            #expect(try await lab.client.get(Deployment.self, name: "tomcat").spec?.replicas == 1)
            #expect(try await SessionTests.managed(lab, Pod.self).isEmpty)
            #expect(try await SessionTests.managed(lab, Lease.self).isEmpty)
            #expect(SessionTests.leftovers("\(LabLayout.stateRoot)/\(lab.name)/ex").isEmpty)
        }
    }

    // MARK: - One holder; crashes

    /// With only the Role of deploy/rbac: a second exchange of the Service is refused and names the holder; after
    /// the first one's `kill -9`, `ktctl recover tomcat` restores the Service at once; after another `kill -9`,
    /// `ktctl clean` leaves the Service alone while the Lease is fresh and restores it once the Lease is stale. Each
    /// time the Service's JSON is the one from before (but for resourceVersion), and the cluster answers again.
    @Test(.enabled(if: kubectl != nil)) func oneHolderAndCrashesPutBack() async throws {
        let kubectl = try #require(Self.kubectl)
        let ktctl = try #require(builtExecutable("ktctl"))
        try await RunningLab.with { lab in
            _ = try await lab.deploySeedTomcat(kubectl)
            try await Self.clientPod(lab, kubectl)
            let workstation = TestNamespace(existing: "\(lab.name)-ws")
            let local = try await Self.localServer(lab)
            defer { local.stop() }
            let rbac = "\(repositoryRoot)/deploy/rbac"
            #expect(
                try await lab.kubectl(kubectl, ["apply", "-n", "default", "-f", "\(rbac)/ktctl-session.yaml"]).status
                    == 0)
            #expect(
                try await lab.kubectl(
                    kubectl,
                    ["create", "rolebinding", "ktctl-dev", "-n", "default", "--role=ktctl-session", "--user=dev"]
                ).status == 0)
            let made = try await TestNamespace.run([
                "env", lab.ktlab, "kubeconfig", "--name", lab.name, "--user", "dev", "--workstation",
            ])
            let dev = made.output.trimmingCharacters(in: .whitespacesAndNewlines)
            let service = try await Self.json(lab, kubectl, "service", "tomcat")

            func exchange(_ state: String, _ extra: [String] = []) throws -> BackgroundProcess {
                try BackgroundProcess(
                    workstation,
                    Self.ktctl(
                        lab, ktctl, "exchange", state: state, ["tomcat", "--expose", "8080"] + extra, kubeconfig: dev))
            }

            // The holder, and a second user refused.
            let first = try exchange("a", ["--lease-duration", "10"])
            defer { first.stop() }
            try #require(await first.waitForOutput("ktctl: exchanging service tomcat", timeout: 60), "\(first.output)")
            let id = try #require(SessionTests.sessionID(first.output))
            let second = try await workstation.run(
                Self.ktctl(lab, ktctl, "exchange", state: "b", ["tomcat", "--expose", "8080"], kubeconfig: dev),
                timeout: 60)
            #expect(second.status == 1)
            #expect(second.error.contains("service tomcat is exchanged by"), "\(second.error)")
            #expect(second.error.contains("session \(id)"), "\(second.error)")
            #expect(second.error.contains("nothing was changed"), "\(second.error)")
            #expect(second.error.contains("ktctl recover tomcat"), "\(second.error)")

            // Something else rewrites the selector while the exchange runs: the watch puts the shadow's back.
            let rewrite = try await lab.kubectl(
                kubectl,
                [
                    "patch", "service", "tomcat", "--type=json", "-p",
                    #"[{"op":"replace","path":"/spec/selector","value":{"app":"tomcat"}}]"#,
                ])
            #expect(rewrite.status == 0, "\(rewrite.error)")
            #expect(await first.waitForOutput("it selects the shadow again", timeout: 10), "\(first.output)")
            #expect(
                try await lab.client.get(Service.self, name: "tomcat").spec?.selector?.keys.sorted() == ["kt-target"])

            // kill -9, then recover at once.
            first.signalProgram(SIGKILL)
            _ = await first.waitForExit(timeout: 10)
            #expect(try await Self.curlFromPod(lab, kubectl, "http://tomcat:8080") != Self.clusterPage)
            let recover = try await workstation.run(
                Self.ktctl(lab, ktctl, "recover", state: "r", ["tomcat"], kubeconfig: dev), timeout: 60)
            #expect(recover.status == 0, "\(recover.output) \(recover.error)")
            #expect(recover.output.contains("restored the selector of service/tomcat"), "\(recover.output)")
            #expect(recover.output.contains("ended the session of lease/kt-exchange-\(id)"), "\(recover.output)")
            #expect(try await Self.json(lab, kubectl, "service", "tomcat") == service)
            try await Self.expectPage(lab, kubectl, "http://tomcat:8080", Self.clusterPage)
            let again = try await workstation.run(
                Self.ktctl(lab, ktctl, "recover", state: "r", ["tomcat"], kubeconfig: dev), timeout: 60)
            #expect(again.output.contains("is neither exchanged nor meshed; nothing to do"), "\(again.output)")

            // kill -9, then clean: nothing while the Lease is fresh, the Service once it is stale.
            let third = try exchange("c", ["--lease-duration", "10"])
            defer { third.stop() }
            try #require(await third.waitForOutput("ktctl: exchanging service tomcat", timeout: 60), "\(third.output)")
            third.signalProgram(SIGKILL)
            _ = await third.waitForExit(timeout: 10)
            let early = try await workstation.run(
                Self.ktctl(lab, ktctl, "clean", state: "d", [], kubeconfig: dev),
                timeout: 60)
            #expect(early.status == 0, "\(early.output) \(early.error)")
            #expect(early.output.contains("left alone"), "\(early.output)")
            #expect(try await lab.client.get(Service.self, name: "tomcat").metadata.annotations?["kt-selector"] != nil)
            try await Task.sleep(for: .seconds(22))
            let late = try await workstation.run(
                Self.ktctl(lab, ktctl, "clean", state: "d", [], kubeconfig: dev),
                timeout: 60)
            #expect(late.status == 0, "\(late.output) \(late.error)")
            #expect(late.output.contains("restored the selector of service/tomcat"), "\(late.output)")
            #expect(try await Self.json(lab, kubectl, "service", "tomcat") == service)
            try await Self.expectPage(lab, kubectl, "http://tomcat:8080", Self.clusterPage)
            #expect(try await SessionTests.managed(lab, Lease.self).isEmpty)

            // A Service that kt-connect holds (its kt-selector, no ktctl lease) is refused; `ktctl recover` puts it
            // back from kt-connect's annotation.
            let ktConnect = try await lab.kubectl(
                kubectl,
                [
                    "patch", "service", "tomcat", "--type=merge", "-p",
                    #"{"metadata":{"annotations":{"kt-selector":"{\"app\":\"tomcat\"}"}},"spec":{"selector":{"kt-role":"shadow-exchange","kt-target":"abcdefghijklmnopqrst"}}}"#,
                ])
            #expect(ktConnect.status == 0, "\(ktConnect.error)")
            let refusedByKtConnect = try await workstation.run(
                Self.ktctl(lab, ktctl, "exchange", state: "e", ["tomcat", "--expose", "8080"], kubeconfig: dev),
                timeout: 60)
            #expect(refusedByKtConnect.status == 1)
            #expect(
                refusedByKtConnect.error.contains("is exchanged or meshed by kt-connect"), "\(refusedByKtConnect.error)"
            )
            #expect(try await SessionTests.managed(lab, Pod.self).isEmpty)
            let fromKtConnect = try await workstation.run(
                Self.ktctl(lab, ktctl, "recover", state: "r", ["tomcat"], kubeconfig: dev), timeout: 60)
            #expect(fromKtConnect.output.contains("restored the selector of service/tomcat"), "\(fromKtConnect.output)")
            #expect(try await Self.json(lab, kubectl, "service", "tomcat") == service)
        }
    }

    // MARK: - Nothing listening locally

    /// Nothing on the local port: the exchange says so and changes nothing; with --skip-port-checking it runs, and a
    /// cluster client gets an immediate reset (not a hang) until the local server starts, then the page; SIGHUP puts
    /// the Service back.
    @Test(.enabled(if: kubectl != nil)) func nothingListeningLocallyIsSaidAndReset() async throws {
        let kubectl = try #require(Self.kubectl)
        let ktctl = try #require(builtExecutable("ktctl"))
        try await RunningLab.with { lab in
            _ = try await lab.deploySeedTomcat(kubectl)
            try await Self.clientPod(lab, kubectl)
            let workstation = TestNamespace(existing: "\(lab.name)-ws")
            let service = try await Self.json(lab, kubectl, "service", "tomcat")
            let refused = try await workstation.run(
                Self.ktctl(lab, ktctl, "exchange", state: "ex", ["tomcat", "--expose", "8080"]), timeout: 60)
            #expect(refused.status == 1)
            #expect(
                refused.error.contains("nothing listens on 127.0.0.1:8080 for service tomcat's port 8080"),
                "\(refused.error)")
            #expect(refused.error.contains("--skip-port-checking"), "\(refused.error)")
            #expect(refused.error.contains("nothing was changed"), "\(refused.error)")
            #expect(try await Self.json(lab, kubectl, "service", "tomcat") == service)
            #expect(try await SessionTests.managed(lab, Pod.self).isEmpty)

            let exchange = try BackgroundProcess(
                workstation,
                Self.ktctl(lab, ktctl, "exchange", state: "ex", ["tomcat", "--expose", "8080", "--skip-port-checking"]))
            defer { exchange.stop() }
            try #require(
                await exchange.waitForOutput("ktctl: exchanging service tomcat", timeout: 60), "\(exchange.output)")
            let asked = ContinuousClock.now
            let reset = try await lab.kubectl(
                kubectl, ["exec", "client", "--", "curl", "-sS", "-m", "10", "http://tomcat:8080"])
            let took = ContinuousClock.now - asked
            #expect(reset.status != 0)
            #expect(reset.error.contains("Connection reset by peer"), "\(reset.error)")
            #expect(took < .seconds(2), "the refused connection took \(took)")
            let local = try await Self.localServer(lab)
            defer { local.stop() }
            try await Self.expectPage(lab, kubectl, "http://tomcat:8080", Self.localPage)
            exchange.signalProgram(SIGHUP)
            #expect(await exchange.waitForExit(timeout: 20) == 0, "\(exchange.output)")
            #expect(try await Self.json(lab, kubectl, "service", "tomcat") == service)
        }
    }

    // MARK: - A gibibyte

    /// 1 GiB from a cluster pod through an exchanged Service to a process on the laptop, byte-exact (SHA-256 of both
    /// ends); its time is printed (bench/lab-transfer.sh sets it beside the same transfer through `ktctl connect`).
    @Test(.enabled(if: kubectl != nil)) func aGibibyteFromAPodReachesTheLaptop() async throws {
        let kubectl = try #require(Self.kubectl)
        let ktctl = try #require(builtExecutable("ktctl"))
        try await RunningLab.with { lab in
            try await Self.clientPod(lab, kubectl)
            let workstation = TestNamespace(existing: "\(lab.name)-ws")
            _ = try await lab.client.create(
                Service(
                    metadata: ObjectMeta(name: "sink"),
                    spec: Service.Spec(
                        selector: ["app": "sink"], ports: [ServicePort(port: 7000, targetPort: .int(7000))])))
            let sink = try BackgroundProcess(workstation, ["python3", "-c", Self.sink, "127.0.0.1", "7000"])
            defer { sink.stop() }
            try await Self.waitListening(workstation, port: 7000)
            let exchange = try BackgroundProcess(
                workstation, Self.ktctl(lab, ktctl, "exchange", state: "ex", ["sink", "--expose", "7000"]))
            defer { exchange.stop() }
            try #require(
                await exchange.waitForOutput("ktctl: exchanging service sink", timeout: 60), "\(exchange.output)")
            let send = try await lab.kubectl(
                kubectl, ["exec", "client", "--", "python3", "-c", Self.source, "sink", "7000", String(1 << 30)],
                timeout: 300)
            #expect(send.status == 0, "\(send.output) \(send.error)")
            print("1 GiB pod → exchanged service → laptop: \(send.output)")
            #expect(send.output.hasPrefix("ok 1073741824 bytes"), "\(send.output) \(send.error)")
            exchange.signalProgram(SIGINT)
            #expect(await exchange.waitForExit(timeout: 20) == 0, "\(exchange.output)")
        }
    }

    /// Receives each connection to the end and answers "<bytes> <sha256>" (argv: address, port).
    static let sink = """
        import hashlib, socket, sys
        server = socket.create_server((sys.argv[1], int(sys.argv[2])), reuse_port=True)
        while True:
            connection, _ = server.accept()
            digest, count = hashlib.sha256(), 0
            while True:
                chunk = connection.recv(1 << 20)
                if not chunk:
                    break
                digest.update(chunk)
                count += len(chunk)
            connection.sendall(("%d %s\\n" % (count, digest.hexdigest())).encode())
            connection.close()
        """

    /// Sends argv[3] pseudo-random bytes to argv[1]:argv[2], half-closes, and checks the sink's count and digest;
    /// prints "ok <bytes> bytes in <seconds> s (<MB/s>)" or what differed.
    static let source = """
        import hashlib, random, socket, sys, time
        total = int(sys.argv[3])
        block = random.Random(7).randbytes(1 << 20)
        digest = hashlib.sha256()
        start = time.time()
        connection = socket.create_connection((sys.argv[1], int(sys.argv[2])))
        sent = 0
        while sent < total:
            # Each mebibyte starts with its number: a lost, repeated or reordered one changes the digest.
            piece = ((sent >> 20).to_bytes(8, "big") + block[8:])[: min(len(block), total - sent)]
            connection.sendall(piece)
            digest.update(piece)
            sent += len(piece)
        connection.shutdown(socket.SHUT_WR)
        answer = b""
        while not answer.endswith(b"\\n"):
            chunk = connection.recv(256)
            if not chunk:
                break
            answer += chunk
        seconds = time.time() - start
        expected = "%d %s" % (total, digest.hexdigest())
        if answer.decode().strip() == expected:
            print("ok %d bytes in %.2f s (%.0f MB/s)" % (total, seconds, total / seconds / 1e6))
        else:
            print("differs: sent %s, the sink saw %r" % (expected, answer))
        """

    // MARK: - UDP, preview, forward

    /// A UDP echo Service exchanged to a local UDP echo server: a pod's datagram is answered by the laptop, and by the
    /// cluster again after SIGTERM.
    @Test(.enabled(if: kubectl != nil)) func aUDPServiceIsExchanged() async throws {
        let kubectl = try #require(Self.kubectl)
        let ktctl = try #require(builtExecutable("ktctl"))
        try await RunningLab.with { lab in
            try await Self.clientPod(lab, kubectl)
            let workstation = TestNamespace(existing: "\(lab.name)-ws")
            var echo = Container(name: "echo", image: "python:3")
            echo.command = ["python3", "-c", Self.udpEcho, "cluster"]
            _ = try await lab.client.create(
                Pod(
                    metadata: ObjectMeta(name: "udpecho", labels: ["app": "udpecho"]), spec: PodSpec(containers: [echo])
                ))
            _ = try await lab.client.create(
                Service(
                    metadata: ObjectMeta(name: "udpecho"),
                    spec: Service.Spec(
                        selector: ["app": "udpecho"],
                        ports: [ServicePort(name: "echo", port: 9999, targetPort: .int(9999), protocol: "UDP")])))
            _ = try await lab.waitReady("udpecho")
            let local = try BackgroundProcess(
                workstation, ["python3", "-c", Self.udpEcho, "local", "127.0.0.1"])
            defer { local.stop() }
            func ask() async throws -> String {
                let run = try await lab.kubectl(
                    kubectl, ["exec", "client", "--", "python3", "-c", Self.udpAsk, "udpecho"])
                return run.output.trimmingCharacters(in: .whitespacesAndNewlines)
            }
            #expect(try await ask() == "cluster:ping")
            let exchange = try BackgroundProcess(
                workstation, Self.ktctl(lab, ktctl, "exchange", state: "ex", ["udpecho", "--expose", "9999"]))
            defer { exchange.stop() }
            try #require(
                await exchange.waitForOutput("ktctl: exchanging service udpecho", timeout: 60), "\(exchange.output)")
            #expect(exchange.output.contains("udpecho:9999/UDP → 127.0.0.1:9999"), "\(exchange.output)")
            #expect(try await ask() == "local:ping")
            exchange.signalProgram(SIGTERM)
            #expect(await exchange.waitForExit(timeout: 20) == 0, "\(exchange.output)")
            #expect(try await ask() == "cluster:ping")
        }
    }

    /// A UDP echo server: answers "<name>:<datagram>"; binds argv[2] (default every address) port 9999.
    static let udpEcho = """
        import socket, sys
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind((sys.argv[2] if len(sys.argv) > 2 else "0.0.0.0", 9999))
        while True:
            data, peer = s.recvfrom(2048)
            s.sendto(sys.argv[1].encode() + b":" + data, peer)
        """

    /// Sends "ping" to argv[1]:9999 until an answer comes (the Service's rules follow its Endpoints a moment later).
    static let udpAsk = """
        import socket, sys
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.settimeout(1)
        for _ in range(15):
            s.sendto(b"ping", (sys.argv[1], 9999))
            try:
                print(s.recvfrom(2048)[0].decode())
                break
            except socket.timeout:
                pass
        """

    /// preview publishes the laptop's page as tomcat-v2 and removes it on exit; forward maps it to the workstation's
    /// port 6060, and follows the tomcat Service to its new pod within 10 s of the old one's deletion.
    @Test(.enabled(if: kubectl != nil)) func previewAndForward() async throws {
        let kubectl = try #require(Self.kubectl)
        let ktctl = try #require(builtExecutable("ktctl"))
        try await RunningLab.with { lab in
            _ = try await lab.deploySeedTomcat(kubectl)
            try await Self.clientPod(lab, kubectl)
            let workstation = TestNamespace(existing: "\(lab.name)-ws")
            let local = try await Self.localServer(lab)
            defer { local.stop() }

            let preview = try BackgroundProcess(
                workstation, Self.ktctl(lab, ktctl, "preview", state: "pv", ["tomcat-v2", "--expose", "8080"]))
            defer { preview.stop() }
            try #require(
                await preview.waitForOutput("ktctl: previewing service tomcat-v2", timeout: 60), "\(preview.output)")
            try await Self.expectPage(lab, kubectl, "http://tomcat-v2:8080", Self.localPage)

            let forward = try BackgroundProcess(
                workstation, Self.ktctl(lab, ktctl, "forward", state: "fw", ["tomcat-v2", "6060:8080"]))
            defer { forward.stop() }
            try #require(
                await forward.waitForOutput("ktctl: forwarding 127.0.0.1:6060", timeout: 30), "\(forward.output)")
            let page = try await workstation.run(["curl", "-s", "-m", "10", "http://localhost:6060"])
            #expect(page.output == Self.localPage, "\(page.error) \(forward.output)")
            // Many connections at once, each its own stream.
            let many = try await workstation.run(
                ["sh", "-c", "for i in 1 2 3 4 5 6 7 8; do curl -s -m 10 http://localhost:6060 & done; wait"],
                timeout: 30)
            #expect(many.output == String(repeating: Self.localPage, count: 8), "\(many.output)")
            // `ktctl status` shows the forward (no session, but a status file) and the preview it reached.
            try await Task.sleep(for: .seconds(1))
            struct Listing: Decodable { var sessions: [SessionStatus] }
            func status(_ state: String) async throws -> SessionStatus {
                let shown = try await TestNamespace.run([
                    ktctl, "status", "-o", "json", "--state-dir", "\(LabLayout.stateRoot)/\(lab.name)/\(state)",
                ])
                let listing = try SessionStatus.decoder.decode(Listing.self, from: Data(shown.output.utf8))
                return try #require(listing.sessions.first, "\(shown.output)")
            }
            let forwarding = try await status("fw")
            #expect(forwarding.command == "forward" && forwarding.services.first?.state == "forwarded")
            let carried = try #require(forwarding.traffic)
            #expect(carried.flowsOpened == 9 && carried.flowsOpen == 0 && carried.flowsRefused == 0, "\(carried)")
            #expect(carried.bytesFromCluster >= 9 * Self.localPage.utf8.count && carried.bytesToCluster > 0)
            let previewing = try await status("pv")
            #expect((previewing.services.first?.incoming?.accepted ?? 0) >= 9, "\(previewing)")

            preview.signalProgram(SIGINT)
            #expect(await preview.waitForExit(timeout: 20) == 0, "\(preview.output)")
            #expect((try? await lab.client.get(Service.self, name: "tomcat-v2")) == nil)
            #expect(try await SessionTests.managed(lab, Pod.self).isEmpty)
            forward.signalProgram(SIGINT)
            #expect(await forward.waitForExit(timeout: 10) == 0, "\(forward.output)")

            // --external: a LoadBalancer Service.
            let external = try BackgroundProcess(
                workstation,
                Self.ktctl(lab, ktctl, "preview", state: "pv", ["tomcat-ext", "--external", "--expose", "8080"]))
            defer { external.stop() }
            try #require(
                await external.waitForOutput("ktctl: previewing service tomcat-ext", timeout: 60), "\(external.output)")
            #expect(try await lab.client.get(Service.self, name: "tomcat-ext").spec?.type == "LoadBalancer")
            try await Self.expectPage(lab, kubectl, "http://tomcat-ext:8080", Self.localPage)
            external.signalProgram(SIGINT)
            #expect(await external.waitForExit(timeout: 20) == 0, "\(external.output)")
            #expect((try? await lab.client.get(Service.self, name: "tomcat-ext")) == nil)

            // A Deployment's Service: its pod deleted, the next curl is answered by the new pod.
            let follow = try BackgroundProcess(
                workstation, Self.ktctl(lab, ktctl, "forward", state: "fw", ["svc/tomcat", "6061:8080"]))
            defer { follow.stop() }
            try #require(
                await follow.waitForOutput("ktctl: forwarding 127.0.0.1:6061", timeout: 30), "\(follow.output)")
            #expect(
                try await workstation.run(["curl", "-s", "-m", "10", "http://localhost:6061"]).output
                    == Self.clusterPage)
            let deleted = try await lab.kubectl(kubectl, ["delete", "pod", "-l", "app=tomcat", "--wait=false"])
            #expect(deleted.status == 0, "\(deleted.error)")
            let asked = ContinuousClock.now
            let next = try await workstation.run(
                ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-m", "10", "http://localhost:6061"],
                timeout: 15)
            let took = ContinuousClock.now - asked
            print("forward: the deleted pod's successor answered after \(took)")
            // The new pod is the image's (no page written into it: tomcat's 404), answering.
            #expect(next.status == 0 && next.output == "404", "\(next.output) \(next.error) \(follow.output)")
            #expect(took < .seconds(10))
            #expect(follow.output.contains("forward: now pod tomcat-"), "\(follow.output)")
            follow.signalProgram(SIGINT)
            #expect(await follow.waitForExit(timeout: 10) == 0, "\(follow.output)")
        }
    }
}
