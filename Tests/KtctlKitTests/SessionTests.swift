import Foundation
import Glibc
import KubeKit
import LabKit
import LabTestSupport
import NamespaceTestSupport
import Testing

/// Sessions that never hurt anyone, end to end against ktlab with the real binaries: every way a connect can end
/// (signals at each step, `kill -9` at each step and `ktctl clean`) leaves the machine and the cluster as they were;
/// laptop clocks an hour apart do not let one `clean` take another's live session; two connects on one state
/// directory never both run; the shadow cannot be reached from other pods or impersonated; socks mode serves its
/// owner only.
@Suite(.serialized, .enabled(if: TestNamespace.unavailableReason == nil)) struct SessionTests {
    static var kubectl: String? { RunningLab.tool("kubectl") }
    /// Debian's faketime, and the shim that keeps timers working under it (`scripts/faketime-timerfd.c`).
    static var faketime: String? { TestNamespace.findExecutable("faketime") }
    static var timerShim: String? { RunningLab.tool("faketime-timerfd.so") }

    /// A command prefix for a program whose wall clock is an hour ahead: Debian's `faketime` (its shared-memory
    /// setup included), with the shim loaded before libfaketime so the program's timers still run on the real
    /// monotonic clock, as a laptop's with a wrong clock do.
    static func hourAhead() throws -> [String] {
        [
            try #require(faketime), "-f", "+1h", "sh", "-c",
            #"LD_PRELOAD="\#(try #require(timerShim)) $LD_PRELOAD" FAKETIME_DONT_FAKE_MONOTONIC=1 exec "$@""#, "sh",
        ]
    }

    // MARK: - Helpers

    /// What a session may change, as comparable text: the workstation's routes and links, its resolv.conf, and
    /// `kubectl get all,secrets,leases -A -o json` without resourceVersions and times.
    struct Snapshot: Equatable {
        var routes: String
        var links: String
        var resolvConf: String
        var cluster: [String]

        /// The lines of `other` that differ, for a failure message.
        func difference(from other: Snapshot) -> String {
            var lines: [String] = []
            if routes != other.routes { lines.append("routes: \(other.routes) -> \(routes)") }
            if links != other.links { lines.append("links: \(other.links) -> \(links)") }
            if resolvConf != other.resolvConf { lines.append("resolv.conf: \(other.resolvConf) -> \(resolvConf)") }
            let added = cluster.filter { !other.cluster.contains($0) }
            let removed = other.cluster.filter { !cluster.contains($0) }
            if !added.isEmpty { lines.append("objects added or changed: \(added.joined(separator: "\n"))") }
            if !removed.isEmpty { lines.append("objects removed or changed: \(removed.joined(separator: "\n"))") }
            return lines.joined(separator: "\n")
        }
    }

    static func snapshot(_ lab: RunningLab, _ kubectl: String) async throws -> Snapshot {
        let workstation = TestNamespace(existing: "\(lab.name)-ws")
        let get = try await lab.kubectl(kubectl, ["get", "all,secrets,leases", "-A", "-o", "json"])
        guard get.status == 0 else { throw TestNamespaceError("kubectl get: \(get.error)") }
        let items = try JSONValue(json: Data(get.output.utf8))["items"]?.arrayValue ?? []
        return Snapshot(
            routes: try await workstation.run(["ip", "-j", "route", "show", "table", "all"]).output,
            links: try await workstation.run(["ip", "-j", "link"]).output,
            resolvConf: try String(contentsOfFile: "/etc/netns/\(lab.name)-ws/resolv.conf", encoding: .utf8),
            cluster: items.map(canonical).sorted())
    }

    /// An object as canonical text (sorted keys), without what changes on its own: resourceVersion, managedFields,
    /// and every time.
    static func canonical(_ value: JSONValue) -> String {
        switch value {
        case .object(let members):
            let kept = members.filter { key, _ in
                !["resourceVersion", "managedFields", "startedAt", "time"].contains(key) && !key.hasSuffix("Time")
                    && !key.hasSuffix("Timestamp")
            }
            return "{" + kept.keys.sorted().map { "\"\($0)\":" + canonical(kept[$0]!) }.joined(separator: ",") + "}"
        case .array(let elements):
            return "[" + elements.map(canonical).joined(separator: ",") + "]"
        default:
            return String(decoding: (try? value.jsonData()) ?? Data(), as: UTF8.self)
        }
    }

    /// Polls until the snapshot equals `before` (a pod deleted a moment ago may still be on its way out); returns
    /// the last one taken.
    static func settle(_ lab: RunningLab, _ kubectl: String, to before: Snapshot) async throws -> Snapshot {
        let deadline = ContinuousClock.now + .seconds(15)
        var now = try await snapshot(lab, kubectl)
        while now != before, ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(250))
            now = try await snapshot(lab, kubectl)
        }
        return now
    }

    static func connect(
        _ lab: RunningLab, _ ktctl: String, state: String, _ extra: [String] = [], kubeconfig: String? = nil
    ) -> [String] {
        [
            ktctl, "connect", "--kubeconfig", kubeconfig ?? "\(LabLayout.stateRoot)/\(lab.name)/kubeconfig-ws", "-n",
            "default", "--image", "kt-shadow:dev", "--state-dir", state,
        ] + extra
    }

    static func clean(_ lab: RunningLab, _ ktctl: String, state: String, _ extra: [String] = []) -> [String] {
        [
            ktctl, "clean", "--kubeconfig", "\(LabLayout.stateRoot)/\(lab.name)/kubeconfig-ws", "-n", "default",
            "--state-dir", state,
        ] + extra
    }

    static func managed<T: KubeResource>(_ lab: RunningLab, _ type: T.Type) async throws -> [T] {
        try await lab.client.list(type, options: ListOptions(labelSelector: "app.kubernetes.io/managed-by=ktctl"))
            .items
    }

    /// The session id a connect printed (`session    abcde (lease ...`).
    static func sessionID(_ output: String) -> String? {
        output.split(separator: "\n").first { $0.hasPrefix("  session ") }?.split(separator: " ").dropFirst().first
            .map(String.init)
    }

    /// Entries left in a state directory's `pid/` and `journal/`.
    static func leftovers(_ state: String) -> [String] {
        ["pid", "journal"].flatMap { folder in
            ((try? FileManager.default.contentsOfDirectory(atPath: "\(state)/\(folder)")) ?? []).map {
                "\(folder)/\($0)"
            }
        }
    }

    // MARK: - Every way a connect can end

    /// SIGINT while waiting for the pod; SIGHUP once connected; `kill -9` while waiting for the pod, right after the
    /// TUN is up, and while connected (then `ktctl clean`): each time the workstation's routes, links and resolv.conf
    /// and every object in the cluster are as they were before the session.
    @Test(.enabled(if: kubectl != nil)) func everyEndLeavesTheMachineAndTheClusterAsTheyWere() async throws {
        let kubectl = try #require(Self.kubectl)
        let ktctl = try #require(builtExecutable("ktctl"))
        try await RunningLab.with { lab in
            _ = try await lab.deploySeedTomcat(kubectl)
            let workstation = TestNamespace(existing: "\(lab.name)-ws")
            let state = "\(LabLayout.stateRoot)/\(lab.name)/kt"
            // The baseline once the lab is still: the kernel adds the workstation's IPv6 link-local route only when
            // duplicate address detection is over, a second or two after the link came up.
            for _ in 0..<50 {
                if try await workstation.run(["ip", "-6", "addr", "show", "tentative"]).output.isEmpty { break }
                try await Task.sleep(for: .milliseconds(200))
            }
            let before = try await Self.snapshot(lab, kubectl)
            // A slow image pull, so that there is a wait to interrupt.
            let slowPod = ["--with-annotation", "\(Kubelet.startDelayAnnotation)=30"]

            struct Scenario {
                var name: String
                var flags: [String]
                /// Waits for the moment, then delivers the blow.
                var strike: @Sendable (BackgroundProcess) async throws -> Void
                var signal: Int32
            }
            let scenarios: [Scenario] = [
                Scenario(
                    name: "SIGINT while waiting for the pod", flags: slowPod,
                    strike: { connect in
                        try #require(await connect.waitForOutput("waiting for pod", timeout: 30), "\(connect.output)")
                    }, signal: SIGINT),
                Scenario(
                    name: "SIGHUP once connected", flags: [],
                    strike: { connect in
                        try #require(await connect.waitForOutput("ktctl: connected", timeout: 60), "\(connect.output)")
                    }, signal: SIGHUP),
                Scenario(
                    name: "kill -9 while waiting for the pod", flags: slowPod,
                    strike: { connect in
                        try #require(await connect.waitForOutput("waiting for pod", timeout: 30), "\(connect.output)")
                    }, signal: SIGKILL),
                Scenario(
                    name: "kill -9 right after the TUN is up", flags: [],
                    strike: { _ in
                        // `ip monitor` in the workstation namespace sees kt0 appear.
                        let monitor = try BackgroundProcess(workstation, ["ip", "monitor", "link"])
                        defer { monitor.stop() }
                        try #require(await monitor.waitForOutput("kt0", timeout: 60), "\(monitor.output)")
                    }, signal: SIGKILL),
                Scenario(
                    name: "kill -9 while connected", flags: [],
                    strike: { connect in
                        try #require(await connect.waitForOutput("ktctl: connected", timeout: 60), "\(connect.output)")
                    }, signal: SIGKILL),
            ]
            for scenario in scenarios {
                let connect = try BackgroundProcess(workstation, Self.connect(lab, ktctl, state: state, scenario.flags))
                defer { connect.stop() }
                try await scenario.strike(connect)
                let struck = ContinuousClock.now
                connect.signalProgram(scenario.signal)
                let status = await connect.waitForExit(timeout: 20)
                var cleaned = ""
                if scenario.signal == SIGKILL {
                    #expect(status == 137, "\(scenario.name): exit \(String(describing: status))")
                    let clean = try await workstation.run(Self.clean(lab, ktctl, state: state), timeout: 60)
                    #expect(clean.status == 0, "\(scenario.name): \(clean.output) \(clean.error)")
                    cleaned = clean.output
                } else {
                    #expect(status == 0, "\(scenario.name): exit \(String(describing: status)): \(connect.output)")
                    #expect(connect.output.contains("ktctl: disconnected"), "\(scenario.name): \(connect.output)")
                }
                let after = try await Self.settle(lab, kubectl, to: before)
                print("session fault matrix: \(scenario.name): as before after \(ContinuousClock.now - struck)")
                #expect(
                    after == before,
                    "\(scenario.name): \(after.difference(from: before))\nktctl: \(connect.output)\nclean: \(cleaned)")
                #expect(Self.leftovers(state).isEmpty, "\(scenario.name): \(Self.leftovers(state))")
            }
        }
    }

    /// A second Ctrl-C while the undoing waits (here on an API server that is frozen) stops waiting: ktctl says what
    /// is left and that `ktctl clean` finishes it, and exits; the journal keeps it, and `clean` does finish it.
    @Test(.enabled(if: kubectl != nil)) func aSecondInterruptLeavesTheRestToClean() async throws {
        let ktctl = try #require(builtExecutable("ktctl"))
        try await RunningLab.with { lab in
            let workstation = TestNamespace(existing: "\(lab.name)-ws")
            let state = "\(LabLayout.stateRoot)/\(lab.name)/kt"
            let connect = try BackgroundProcess(
                workstation, Self.connect(lab, ktctl, state: state, ["--mode", "socks", "--proxy-port", "2291"]))
            defer { connect.stop() }
            try #require(await connect.waitForOutput("ktctl: connected", timeout: 60), "\(connect.output)")
            let id = try #require(Self.sessionID(connect.output))
            let server = try #require(LabState.read(lab.name)?.serverPID)
            kill(server, SIGSTOP)
            connect.signalProgram(SIGINT)
            #expect(await connect.waitForOutput("interrupt (Ctrl-C): stopping", timeout: 10), "\(connect.output)")
            try await Task.sleep(for: .seconds(1))
            connect.signalProgram(SIGINT)
            let status = await connect.waitForExit(timeout: 10)
            kill(server, SIGCONT)
            #expect(status == 130, "\(connect.output)")
            #expect(
                connect.output.contains("interrupt (Ctrl-C) again: not waiting for the clean-up"), "\(connect.output)")
            for object in ["pod/kt-connect-shadow-\(id)", "secret/kt-connect-shadow-\(id)", "lease/kt-connect-\(id)"] {
                #expect(connect.output.contains("create \(object) in default"), "\(object): \(connect.output)")
            }
            #expect(connect.output.contains("Run `ktctl clean` to finish it"), "\(connect.output)")
            #expect(Self.leftovers(state).contains { $0.hasPrefix("journal/") })
            let clean = try await workstation.run(Self.clean(lab, ktctl, state: state), timeout: 60)
            #expect(clean.status == 0, "\(clean.output) \(clean.error)")
            #expect(try await Self.managed(lab, Lease.self).isEmpty, "\(clean.output)")
            #expect(try await Self.managed(lab, Secret.self).isEmpty, "\(clean.output)")
            #expect(try await Self.managed(lab, Pod.self).isEmpty, "\(clean.output)")
            #expect(Self.leftovers(state).isEmpty, "\(Self.leftovers(state))")
        }
    }

    /// Deleting a session's Lease takes its objects with it (garbage collection by ownerReference), and the session
    /// notices at its next renewal, says why, and ends.
    @Test(.enabled(if: kubectl != nil)) func aDeletedLeaseTakesTheSessionWithIt() async throws {
        let ktctl = try #require(builtExecutable("ktctl"))
        try await RunningLab.with { lab in
            let workstation = TestNamespace(existing: "\(lab.name)-ws")
            let state = "\(LabLayout.stateRoot)/\(lab.name)/kt"
            let connect = try BackgroundProcess(
                workstation,
                Self.connect(
                    lab, ktctl, state: state, ["--mode", "socks", "--proxy-port", "2292", "--lease-duration", "6"]))
            defer { connect.stop() }
            try #require(await connect.waitForOutput("ktctl: connected", timeout: 60), "\(connect.output)")
            let id = try #require(Self.sessionID(connect.output))
            try await lab.client.delete(Lease.self, name: "kt-connect-\(id)")
            // Garbage collection: the Secret at once, the pod once it has terminated.
            #expect(try await Self.managed(lab, Secret.self).isEmpty)
            let status = await connect.waitForExit(timeout: 20)
            #expect(status == 1, "\(connect.output)")
            #expect(
                connect.output.contains("the session's Lease kt-connect-\(id) in default was deleted"),
                "\(connect.output)")
            let deadline = ContinuousClock.now + .seconds(20)
            while try await !Self.managed(lab, Pod.self).isEmpty, ContinuousClock.now < deadline {
                try await Task.sleep(for: .milliseconds(200))
            }
            #expect(try await Self.managed(lab, Pod.self).isEmpty)
            #expect(Self.leftovers(state).isEmpty, "\(Self.leftovers(state))")
        }
    }

    // MARK: - Clocks

    /// Two sessions whose laptops' clocks differ by an hour (Debian's faketime on one ktctl): each writes its Lease
    /// in the API server's clock, neither's `clean` touches the other's live objects, and a session killed with
    /// `kill -9` is cleaned from a third machine once its Lease is stale, not before.
    @Test(.enabled(if: kubectl != nil && faketime != nil && timerShim != nil))
    func clocksAnHourApartHurtNobody() async throws {
        let ktctl = try #require(builtExecutable("ktctl"))
        let skewed = try Self.hourAhead()
        try await RunningLab.with { lab in
            let workstation = TestNamespace(existing: "\(lab.name)-ws")
            let root = "\(LabLayout.stateRoot)/\(lab.name)"
            // Leases of 9 s (renewed every 3 s): staleness shows within seconds.
            let lease = ["--mode", "socks", "--lease-duration", "9"]
            let alice = try BackgroundProcess(
                workstation, Self.connect(lab, ktctl, state: "\(root)/alice", lease + ["--proxy-port", "2231"]))
            defer { alice.stop() }
            let bob = try BackgroundProcess(
                workstation, skewed + Self.connect(lab, ktctl, state: "\(root)/bob", lease + ["--proxy-port", "2232"]))
            defer { bob.stop() }
            try #require(await alice.waitForOutput("ktctl: connected", timeout: 60), "\(alice.output)")
            try #require(await bob.waitForOutput("ktctl: connected", timeout: 60), "\(bob.output)")
            let aliceID = try #require(Self.sessionID(alice.output))
            let bobID = try #require(Self.sessionID(bob.output))
            // Bob's laptop is an hour ahead, yet his Lease says the server's time.
            let bobsClock = try #require(Int(try await workstation.run(skewed + ["date", "+%s"]).output.dropLast()))
            #expect(abs(bobsClock - Int(Date().timeIntervalSince1970) - 3600) < 5, "bob's clock: \(bobsClock)")
            for lease in try await Self.managed(lab, Lease.self) {
                let renewed = try #require(lease.spec?.renewTime.flatMap(MicroTime.parse))
                #expect(abs(renewed.timeIntervalSinceNow) < 10, "\(lease.name) renewed at \(renewed)")
            }

            // Longer than a Lease's duration: a wrongly judged age would show now.
            try await Task.sleep(for: .seconds(12))
            for (who, command) in [
                ("alice", Self.clean(lab, ktctl, state: "\(root)/alice")),
                ("bob", skewed + Self.clean(lab, ktctl, state: "\(root)/bob")),
            ] {
                let clean = try await workstation.run(command, timeout: 60)
                #expect(clean.status == 0, "\(who): \(clean.output) \(clean.error)")
                #expect(!clean.output.contains("removed"), "\(who)'s clean removed something: \(clean.output)")
            }
            #expect(try await Self.managed(lab, Lease.self).count == 2)
            #expect(try await Self.managed(lab, Pod.self).count == 2)
            #expect(try await Self.managed(lab, Secret.self).count == 2)

            // Bob's ktctl is killed; from a third machine (its own state directory) his session is left alone until
            // its Lease is stale by the server's clock, then removed; alice's is untouched.
            // (faketime runs ktctl as its child and waits for it.)
            bob.signalDescendants(named: "ktctl", SIGKILL)
            #expect(await bob.waitForExit(timeout: 10) != nil, "\(bob.output)")
            // Killed: it never got to undo anything.
            #expect(!bob.output.contains("ktctl: disconnected"), "\(bob.output)")
            let early = try await workstation.run(Self.clean(lab, ktctl, state: "\(root)/carol"), timeout: 60)
            #expect(early.status == 0, "\(early.output) \(early.error)")
            #expect(early.output.contains("left alone: session \(bobID)"), "\(early.output)")
            #expect(!early.output.contains("removed"), "\(early.output)")
            try await Task.sleep(for: .seconds(11))
            let late = try await workstation.run(Self.clean(lab, ktctl, state: "\(root)/carol"), timeout: 60)
            #expect(late.status == 0, "\(late.output) \(late.error)")
            for object in [
                "lease/kt-connect-\(bobID)", "pod/kt-connect-shadow-\(bobID)", "secret/kt-connect-shadow-\(bobID)",
            ] {
                #expect(
                    late.output.contains("removed \(object) in default (session \(bobID)"), "\(object): \(late.output)")
            }
            #expect(
                !late.output.split(separator: "\n").contains { $0.contains("removed") && $0.contains(aliceID) },
                "\(late.output)")
            #expect(late.output.contains("left alone: session \(aliceID)"), "\(late.output)")
            let leases = try await Self.managed(lab, Lease.self).map(\.name)
            #expect(leases == ["kt-connect-\(aliceID)"])
            // Bob's own machine still has his journal; its clean finds nothing left to undo but the journal itself.
            let bobs = try await workstation.run(skewed + Self.clean(lab, ktctl, state: "\(root)/bob"), timeout: 60)
            #expect(bobs.status == 0, "\(bobs.output) \(bobs.error)")
            #expect(Self.leftovers("\(root)/bob").isEmpty, "\(Self.leftovers("\(root)/bob"))")

            alice.signalProgram(SIGINT)
            #expect(await alice.waitForExit(timeout: 20) == 0, "\(alice.output)")
            #expect(try await Self.managed(lab, Lease.self).isEmpty)
            #expect(try await Self.managed(lab, Pod.self).isEmpty)
            #expect(try await Self.managed(lab, Secret.self).isEmpty)
        }
    }

    // MARK: - One session per state directory

    /// Two connects started 10 ms apart on one state directory: exactly one runs; the other exits at once with the
    /// holder's pid and leaves nothing, on this machine or in the cluster.
    @Test(.enabled(if: kubectl != nil)) func twoConnectsTenMillisecondsApart() async throws {
        let ktctl = try #require(builtExecutable("ktctl"))
        try await RunningLab.with { lab in
            let workstation = TestNamespace(existing: "\(lab.name)-ws")
            let state = "\(LabLayout.stateRoot)/\(lab.name)/kt"
            let first = try BackgroundProcess(
                workstation, Self.connect(lab, ktctl, state: state, ["--mode", "socks", "--proxy-port", "2241"]))
            defer { first.stop() }
            usleep(10_000)
            let second = try BackgroundProcess(
                workstation, Self.connect(lab, ktctl, state: state, ["--mode", "socks", "--proxy-port", "2242"]))
            defer { second.stop() }
            // One of them is refused at once.
            let deadline = ContinuousClock.now + .seconds(10)
            while first.isRunning && second.isRunning && ContinuousClock.now < deadline {
                try await Task.sleep(for: .milliseconds(20))
            }
            let (winner, loser) = first.isRunning ? (first, second) : (second, first)
            #expect(await loser.waitForExit(timeout: 5) == 1, "\(loser.output)")
            let holder = try #require(winner.programPID)
            #expect(
                loser.output.contains("another ktctl connect is running (pid \(holder)) with this state directory"),
                "\(loser.output)")
            #expect(loser.output.contains("nothing was changed"), "\(loser.output)")
            #expect(!loser.output.contains("creating"), "\(loser.output)")
            try #require(await winner.waitForOutput("ktctl: connected", timeout: 60), "\(winner.output)")
            #expect(try await Self.managed(lab, Lease.self).count == 1)
            #expect(try await Self.managed(lab, Pod.self).count == 1)
            #expect(Self.leftovers(state).sorted() == ["journal/connect-\(holder).json", "pid/connect-\(holder).pid"])
            winner.signalProgram(SIGINT)
            #expect(await winner.waitForExit(timeout: 20) == 0, "\(winner.output)")
            #expect(try await Self.managed(lab, Lease.self).isEmpty)
            #expect(try await Self.managed(lab, Pod.self).isEmpty)
            #expect(try await Self.managed(lab, Secret.self).isEmpty)
            #expect(Self.leftovers(state).isEmpty, "\(Self.leftovers(state))")
        }
    }

    // MARK: - The shadow

    /// kt-shadow listens on the pod's loopback: another pod cannot reach its SSH port (port-forward still can). A
    /// look-alike pod put in place of the shadow under the same name is refused, with why; Ctrl-C then leaves that
    /// pod alone (it is not the session's) and removes the rest.
    @Test(.enabled(if: kubectl != nil)) func theShadowIsUnreachableAndCannotBeImpersonated() async throws {
        let kubectl = try #require(Self.kubectl)
        let ktctl = try #require(builtExecutable("ktctl"))
        try await RunningLab.with { lab in
            _ = try await lab.deploySeedTomcat(kubectl)
            let workstation = TestNamespace(existing: "\(lab.name)-ws")
            let state = "\(LabLayout.stateRoot)/\(lab.name)/kt"
            let connect = try BackgroundProcess(
                workstation, Self.connect(lab, ktctl, state: state, ["--mode", "socks", "--proxy-port", "2261"]))
            defer { connect.stop() }
            try #require(await connect.waitForOutput("ktctl: connected", timeout: 60), "\(connect.output)")
            let shadow = try #require(try await Self.managed(lab, Pod.self).first)
            let shadowIP = try #require(shadow.status?.podIP)
            let through = ["curl", "-s", "-m", "10", "--socks5-hostname", "127.0.0.1:2261", "http://tomcat:8080"]
            #expect(try await workstation.run(through).output == "kt-connect demo v1\n")

            // From another pod: nothing listens on the shadow's address.
            let probe = try await lab.kubectl(
                kubectl,
                ["exec", "deployment/tomcat", "--", "/bin/bash", "-c", "echo > /dev/tcp/\(shadowIP)/2222"])
            #expect(probe.status != 0, "\(probe.output)")
            #expect(probe.error.contains("Connection refused"), "\(probe.error)")

            // A look-alike: the same name, kt-shadow with the session's authorized key (read from its Secret, as
            // anyone who may read Secrets could) but its own host key. ktctl is frozen while it is put in place.
            connect.signalProgram(SIGSTOP)
            try await lab.client.delete(Pod.self, name: shadow.name, options: DeleteOptions(gracePeriodSeconds: 0))
            let labels = JSONValue.object((shadow.metadata.labels ?? [:]).mapValues { .string($0) })
            let impostor: JSONValue = [
                "apiVersion": "v1", "kind": "Pod",
                "metadata": ["name": .string(shadow.name), "labels": labels],
                "spec": [
                    "containers": [
                        [
                            "name": "shadow", "image": "kt-shadow:dev", "args": ["--listen", "127.0.0.1:2222"],
                            "env": [
                                [
                                    "name": "KT_AUTHORIZED_KEYS",
                                    "valueFrom": [
                                        "secretKeyRef": ["name": .string(shadow.name), "key": "authorized_keys"]
                                    ],
                                ]
                            ],
                        ]
                    ]
                ],
            ]
            let lookAlike = try await lab.client.create(try Pod.decoding(impostor))
            _ = try await lab.waitReady(shadow.name)
            connect.signalProgram(SIGCONT)
            #expect(
                await connect.waitForOutput("is not the shadow this session created", timeout: 30), "\(connect.output)")
            #expect(connect.output.contains("ktctl will not send traffic through it"), "\(connect.output)")
            #expect(try await workstation.run(through).output != "kt-connect demo v1\n")

            connect.signalProgram(SIGINT)
            #expect(await connect.waitForExit(timeout: 20) == 0, "\(connect.output)")
            #expect(
                connect.output.contains("is another object now (not this session's); left alone"), "\(connect.output)")
            let left = try await lab.client.get(Pod.self, name: shadow.name)
            #expect(left.metadata.uid == lookAlike.metadata.uid)
            #expect(try await Self.managed(lab, Lease.self).isEmpty)
            #expect(try await Self.managed(lab, Secret.self).isEmpty)
            #expect(Self.leftovers(state).isEmpty)
        }
    }

    // MARK: - Least privilege

    /// A user bound only to `deploy/rbac/`'s Role: socks mode works, tun mode falls back to its namespace's addresses
    /// with a note; with the ClusterRole too, tun mode works whole; with `patch` taken out of the Role, connect
    /// refuses before creating anything and names the missing verb and the file that grants it.
    @Test(.enabled(if: kubectl != nil)) func aUserBoundToTheRBACFilesHasWhatConnectNeeds() async throws {
        let kubectl = try #require(Self.kubectl)
        let ktctl = try #require(builtExecutable("ktctl"))
        try await RunningLab.with { lab in
            let (podIP, _) = try await lab.deploySeedTomcat(kubectl)
            let workstation = TestNamespace(existing: "\(lab.name)-ws")
            let state = "\(LabLayout.stateRoot)/\(lab.name)/dev"
            let rbac = "\(repositoryRoot)/deploy/rbac"
            func admin(_ arguments: [String]) async throws {
                let result = try await lab.kubectl(kubectl, arguments)
                #expect(result.status == 0, "kubectl \(arguments.joined(separator: " ")): \(result.error)")
            }
            try await admin(["apply", "-n", "default", "-f", "\(rbac)/ktctl-session.yaml"])
            try await admin([
                "create", "rolebinding", "ktctl-dev", "-n", "default", "--role=ktctl-session", "--user=dev",
            ])
            let made = try await TestNamespace.run([
                "env", lab.ktlab, "kubeconfig", "--name", lab.name, "--user", "dev", "--workstation",
            ])
            #expect(made.status == 0, "\(made.error)")
            let kubeconfig = made.output.trimmingCharacters(in: .whitespacesAndNewlines)
            let page = "kt-connect demo v1\n"

            func session(_ flags: [String], check: (BackgroundProcess) async throws -> Void) async throws {
                let connect = try BackgroundProcess(
                    workstation, Self.connect(lab, ktctl, state: state, flags, kubeconfig: kubeconfig))
                defer { connect.stop() }
                try #require(await connect.waitForOutput("ktctl: connected", timeout: 60), "\(connect.output)")
                try await check(connect)
                connect.signalProgram(SIGINT)
                #expect(await connect.waitForExit(timeout: 20) == 0, "\(connect.output)")
                #expect(try await Self.managed(lab, Lease.self).isEmpty)
                #expect(try await Self.managed(lab, Pod.self).isEmpty)
                #expect(Self.leftovers(state).isEmpty)
            }

            // The Role alone: socks mode.
            try await session(["--mode", "socks", "--proxy-port", "2281"]) { _ in
                let curl = try await workstation.run([
                    "curl", "-s", "-m", "10", "--socks5-hostname", "127.0.0.1:2281", "http://tomcat:8080",
                ])
                #expect(curl.output == page)
            }
            // The Role alone, tun mode: the namespace's addresses, and a note saying so.
            try await session([]) { connect in
                #expect(
                    connect.output.contains(
                        "without the cluster-wide permissions of deploy/rbac/ktctl-cluster.yaml, the ranges are inferred"
                    ),
                    "\(connect.output)")
                let byAddress = try await workstation.run(["curl", "-s", "-m", "10", "http://\(podIP):8080"])
                #expect(byAddress.output == page)
                let byName = try await workstation.run(["curl", "-s", "-m", "10", "http://tomcat:8080"])
                #expect(byName.output == page)
            }
            // With the ClusterRole: the cluster's own ranges.
            try await admin(["apply", "-f", "\(rbac)/ktctl-cluster.yaml"])
            try await admin([
                "create", "clusterrolebinding", "ktctl-dev-cluster", "--clusterrole=ktctl-cluster-ranges", "--user=dev",
            ])
            try await session([]) { connect in
                #expect(!connect.output.contains("without the cluster-wide permissions"), "\(connect.output)")
                #expect(
                    connect.output.contains("(services: ServiceCIDR API; pods: the nodes' podCIDRs)"),
                    "\(connect.output)")
                let byName = try await workstation.run(["curl", "-s", "-m", "10", "http://tomcat.default:8080"])
                #expect(byName.output == page)
            }

            // Without patch on leases (the Lease could not be renewed): refused before anything is made.
            try await admin([
                "patch", "role", "ktctl-session", "-n", "default", "--type=json", "-p",
                #"[{"op":"replace","path":"/rules/0/verbs","value":["create","delete","list"]}]"#,
            ])
            let refused = try await workstation.run(
                Self.connect(
                    lab, ktctl, state: state, ["--mode", "socks", "--proxy-port", "2282"], kubeconfig: kubeconfig),
                timeout: 60)
            #expect(refused.status == 1)
            #expect(
                refused.error.contains(
                    "patch leases.coordination.k8s.io in namespace default  — granted by deploy/rbac/ktctl-session.yaml"
                ),
                "\(refused.error)")
            #expect(refused.error.contains("nothing was changed"), "\(refused.error)")
            #expect(!refused.output.contains("creating"), "\(refused.output)")
            #expect(try await Self.managed(lab, Lease.self).isEmpty)
            #expect(try await Self.managed(lab, Secret.self).isEmpty)
            #expect(try await Self.managed(lab, Pod.self).isEmpty)
            #expect(Self.leftovers(state).isEmpty)
        }
    }

    // MARK: - socks mode's owner

    /// A root-owned socks-mode ktctl refuses `nobody` (SOCKS and HTTP alike) and serves root; one started with
    /// `--proxy-allow-users nobody --proxy-auth` serves nobody only with the right username and password.
    @Test(.enabled(if: kubectl != nil)) func socksModeServesOnlyItsOwner() async throws {
        let kubectl = try #require(Self.kubectl)
        let ktctl = try #require(builtExecutable("ktctl"))
        try await RunningLab.with { lab in
            _ = try await lab.deploySeedTomcat(kubectl)
            let workstation = TestNamespace(existing: "\(lab.name)-ws")
            let root = "\(LabLayout.stateRoot)/\(lab.name)"
            let nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
            let page = "kt-connect demo v1\n"

            let owned = try BackgroundProcess(
                workstation, Self.connect(lab, ktctl, state: "\(root)/a", ["--mode", "socks", "--proxy-port", "2251"]))
            defer { owned.stop() }
            try #require(await owned.waitForOutput("ktctl: connected", timeout: 60), "\(owned.output)")
            #expect(owned.output.contains("for local users root (0)"), "\(owned.output)")
            let socks = ["curl", "-s", "-m", "10", "--socks5-hostname", "127.0.0.1:2251", "http://tomcat:8080"]
            let http = ["curl", "-s", "-m", "10", "-x", "http://127.0.0.1:2251", "http://tomcat:8080"]
            #expect(try await workstation.run(socks).output == page)
            let refused = try await workstation.run(nobody + socks)
            #expect(refused.status != 0 && refused.output.isEmpty, "\(refused.output)")
            let forbidden = try await workstation.run(nobody + http)
            #expect(forbidden.output.contains("nobody (65534) may not use this proxy"), "\(forbidden.output)")
            #expect(owned.output.contains("nobody (65534) may not use this proxy"), "\(owned.output)")

            let shared = try BackgroundProcess(
                workstation,
                Self.connect(
                    lab, ktctl, state: "\(root)/b",
                    [
                        "--mode", "socks", "--proxy-port", "2252", "--proxy-allow-users", "nobody", "--proxy-auth",
                        "dev:s3cret",
                    ]))
            defer { shared.stop() }
            try #require(await shared.waitForOutput("ktctl: connected", timeout: 60), "\(shared.output)")
            func curl(_ proxy: String) async throws -> String {
                try await workstation.run(nobody + ["curl", "-s", "-m", "10", "-x", proxy, "http://tomcat:8080"]).output
            }
            #expect(try await curl("socks5h://dev:s3cret@127.0.0.1:2252") == page)
            #expect(try await curl("http://dev:s3cret@127.0.0.1:2252") == page)
            #expect(try await curl("socks5h://127.0.0.1:2252") != page)
            #expect(try await curl("socks5h://dev:wrong@127.0.0.1:2252") != page)
            #expect(try await curl("http://127.0.0.1:2252") != page)

            for session in [owned, shared] {
                session.signalProgram(SIGINT)
                #expect(await session.waitForExit(timeout: 20) == 0, "\(session.output)")
            }
        }
    }
}

/// `ktctl clean` 200 s into a live session, from another state directory (another machine), removes nothing of it:
/// the session's Lease is renewed, whatever the age of its Secret and pod. Its own suite, so that its long wait runs
/// beside the other suites.
@Suite(.enabled(if: TestNamespace.unavailableReason == nil)) struct LongSessionTests {
    @Test(.enabled(if: RunningLab.tool("kubectl") != nil)) func cleanTwoHundredSecondsIntoALiveSession() async throws {
        let kubectl = try #require(RunningLab.tool("kubectl"))
        let ktctl = try #require(builtExecutable("ktctl"))
        try await RunningLab.with { lab in
            _ = try await lab.deploySeedTomcat(kubectl)
            let workstation = TestNamespace(existing: "\(lab.name)-ws")
            let root = "\(LabLayout.stateRoot)/\(lab.name)"
            let connect = try BackgroundProcess(
                workstation,
                SessionTests.connect(lab, ktctl, state: "\(root)/alice", ["--mode", "socks", "--proxy-port", "2271"]))
            defer { connect.stop() }
            try #require(await connect.waitForOutput("ktctl: connected", timeout: 60), "\(connect.output)")
            let before =
                try await SessionTests.managed(lab, Pod.self).map(\.metadata.uid)
                + SessionTests.managed(lab, Secret.self).map(\.metadata.uid)
                + SessionTests.managed(lab, Lease.self).map(\.metadata.uid)
            #expect(before.count == 3)
            try await Task.sleep(for: .seconds(200))
            let clean = try await workstation.run(SessionTests.clean(lab, ktctl, state: "\(root)/bob"), timeout: 60)
            #expect(clean.status == 0, "\(clean.output) \(clean.error)")
            #expect(!clean.output.contains("removed"), "\(clean.output)")
            #expect(clean.output.contains("left alone: session"), "\(clean.output)")
            let after =
                try await SessionTests.managed(lab, Pod.self).map(\.metadata.uid)
                + SessionTests.managed(lab, Secret.self).map(\.metadata.uid)
                + SessionTests.managed(lab, Lease.self).map(\.metadata.uid)
            #expect(after == before)
            let page = try await workstation.run([
                "curl", "-s", "-m", "10", "--socks5-hostname", "127.0.0.1:2271", "http://tomcat:8080",
            ])
            #expect(page.output == "kt-connect demo v1\n")
            connect.signalProgram(SIGINT)
            #expect(await connect.waitForExit(timeout: 20) == 0, "\(connect.output)")
        }
    }
}
