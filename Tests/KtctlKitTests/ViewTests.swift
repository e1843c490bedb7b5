import Foundation
import KubeKit
import NamespaceTestSupport
import Testing

@testable import KtctlKit

/// The pure parts of `ktctl birdseye` and `ktctl status`: what a view says for each kind of Lease and Service, judged
/// at a given server time, and how a status is printed. The end-to-end test is `BirdseyeTests` (ktlab).
@Suite struct ViewTests {
    static let now = Date(timeIntervalSince1970: 1_800_000_000)

    /// A session Lease renewed `age` seconds before `now`.
    static func lease(
        _ role: String, id: String, user: String, service: String?, mode: String, mark: String? = nil,
        age: TimeInterval = 5, duration: Int = 90, route: String? = nil
    ) -> Lease {
        var labels = [
            SessionLabels.managedBy: SessionLabels.manager, SessionLabels.role: role, SessionLabels.session: id,
        ]
        if let service { labels[SessionTarget.serviceLabel] = service }
        var annotations = [
            SessionLabels.user: user, SessionLabels.host: "laptop", SessionTarget.modeAnnotation: mode,
        ]
        if let mark { annotations[SessionTarget.markAnnotation] = mark }
        if let route { annotations["ktctl.io/mesh-route"] = route }
        let renewed = MicroTime.format(now.addingTimeInterval(-age))
        return Lease(
            metadata: ObjectMeta(
                name: "kt-\(role)-\(id)", namespace: "default", labels: labels, annotations: annotations),
            spec: Lease.Spec(
                holderIdentity: "\(user)@laptop", leaseDurationSeconds: duration,
                acquireTime: MicroTime.format(now.addingTimeInterval(-600)), renewTime: renewed))
    }

    static func service(_ name: String, labels: [String: String]? = nil, annotations: [String: String]? = nil)
        -> Service
    {
        Service(
            metadata: ObjectMeta(name: name, namespace: "default", labels: labels, annotations: annotations),
            spec: Service.Spec(selector: ["app": name]))
    }

    @Test func eachKindOfHoldAndOnlyLiveSessions() throws {
        let services = [
            Self.service("tomcat", annotations: [ServiceLock.lease: "kt-exchange-aaaaa"]),
            Self.service("orders", annotations: [MeshState.annotation: "orders-kt-router"]),
            Self.service("orders-kt-stuntman", labels: [SessionLabels.managedBy: SessionLabels.manager]),
            Self.service(
                "tomcat-v2",
                labels: [
                    SessionLabels.managedBy: SessionLabels.manager, SessionLabels.role: "preview",
                    SessionLabels.session: "ppppp",
                ]),
            Self.service("legacy", annotations: [ServiceLock.originalSelector: #"{"app":"legacy"}"#]),
            Self.service("abandoned", annotations: [ServiceLock.lease: "kt-exchange-zzzzz"]),
            Self.service("plain"),
            // Held by sessions whose Leases lack `ktctl.io/service` (a ktctl before it): found through the Service.
            Self.service("older", annotations: [ServiceLock.lease: "kt-exchange-ooooo"]),
            Self.service("older-mesh", annotations: [MeshState.annotation: "older-mesh-kt-router"]),
        ]
        let leases = [
            Self.lease("exchange", id: "aaaaa", user: "alice", service: "tomcat", mode: "selector"),
            Self.lease(
                "mesh", id: "bbbbb", user: "bob", service: "orders", mode: "auto", mark: "VERSION: b",
                route: #"{"header":"VERSION","value":"b","name":"orders-kt-mesh-b","host":"10.244.0.9"}"#),
            // Joining: no route yet, the mark from the Lease's own annotation.
            Self.lease("mesh", id: "ccccc", user: "carol", service: "orders", mode: "auto", mark: "VERSION: c"),
            // Stale: renewed 100 s ago with a 90 s duration.
            Self.lease("mesh", id: "ddddd", user: "dan", service: "orders", mode: "auto", mark: "VERSION: d", age: 100),
            Self.lease("preview", id: "ppppp", user: "pat", service: "tomcat-v2", mode: "preview"),
            Self.lease("connect", id: "kkkkk", user: "kim", service: nil, mode: "tun", age: 12),
            Self.lease("connect", id: "sssss", user: "sam", service: nil, mode: "tun", age: 400),
            Self.lease("exchange", id: "ooooo", user: "olga", service: nil, mode: "selector"),
            {
                var lease = Self.lease("mesh", id: "mmmmm", user: "mia", service: nil, mode: "auto", mark: "VERSION: m")
                lease.metadata.labels?["ktctl.io/mesh-service"] = "older-mesh"
                return lease
            }(),
        ]
        var options = BirdseyeOptions(cluster: ClusterOptions())
        options.showConnectors = true
        let view = BirdseyeCommand.view(
            services: services, leases: leases, deployments: [], serverNow: Self.now, options: options)
        let states = Dictionary(uniqueKeysWithValues: view.services.map { ($0.service, $0.state) })
        #expect(
            states == [
                "tomcat": "exchanged", "orders": "meshed", "tomcat-v2": "previewed", "legacy": "held by kt-connect",
                "abandoned": "left by a session that is gone", "plain": "normal", "older": "exchanged",
                "older-mesh": "meshed",
            ])
        #expect(view.services.first { $0.service == "older" }?.holders.map(\.user) == ["olga"])
        #expect(view.services.first { $0.service == "older-mesh" }?.holders.map(\.user) == ["mia"])
        let orders = try #require(view.services.first { $0.service == "orders" })
        #expect(orders.holders.map { "\($0.user) \($0.mark ?? "-")" } == ["bob VERSION: b", "carol VERSION: c"])
        #expect(view.connectors?.map(\.user) == ["kim"])
        #expect(view.connectors?.first?.renewedSecondsAgo == 12)
        // Services someone works on first, `normal` last.
        #expect(view.services.last?.service == "plain")
        let text = BirdseyeCommand.text(view, allNamespaces: false)
        #expect(text.contains("exchanged by alice@laptop since "), "\(text)")
        #expect(text.contains("(selector mode)") && text.contains("ktctl recover abandoned"), "\(text)")
        #expect(!text.contains("NAMESPACE   SERVICE") && text.contains("CONNECTED"), "\(text)")

        options.hideNaturalServices = true
        options.sort = .name
        let hidden = BirdseyeCommand.view(
            services: services, leases: leases, deployments: [], serverNow: Self.now, options: options)
        #expect(
            hidden.services.map(\.service) == [
                "abandoned", "legacy", "older", "older-mesh", "orders", "tomcat", "tomcat-v2",
            ])
    }

    @Test func aScaleModeExchangeIsFoundThroughItsDeployment() throws {
        let json: JSONValue = [
            "metadata": [
                "name": "tomcat", "namespace": "default",
                "annotations": [.init(ServiceLock.lease): "kt-exchange-aaaaa", .init(ScaleLock.replicas): "1"],
            ],
            "spec": [
                "selector": ["matchLabels": ["app": "tomcat"]],
                "template": ["metadata": ["labels": ["app": "tomcat", "pod-template-hash": "x"]]],
            ],
        ]
        let decoded = try JSONDecoder().decode(Deployment.self, from: JSONEncoder().encode(json))
        let view = BirdseyeCommand.view(
            services: [Self.service("tomcat")],
            leases: [Self.lease("exchange", id: "aaaaa", user: "alice", service: nil, mode: "scale")],
            deployments: [decoded], serverNow: Self.now, options: BirdseyeOptions(cluster: ClusterOptions()))
        #expect(view.services.first?.state == "exchanged")
        #expect(view.services.first?.holders.map(\.user) == ["alice"])
    }

    @Test func statusTextWithRatesAndServices() {
        var status = SessionStatus(
            command: "exchange", process: ProcessIdentity(pid: 42, startTime: 1), session: "abcde", user: "alice",
            host: "laptop", started: Self.now.addingTimeInterval(-75))
        status.phase = "ready"
        status.updated = Self.now
        status.mode = "selector"
        status.traffic = SessionStatus.Traffic()
        status.traffic?.bytesFromCluster = 3_000_000
        var previous = status
        previous.updated = Self.now.addingTimeInterval(-1)
        previous.traffic?.bytesFromCluster = 1_000_000
        var use = SessionStatus.ServiceUse(name: "tomcat", namespace: "default", state: "exchanged", detail: "x")
        use.ports = ["pod :8080 → 127.0.0.1:8080"]
        use.incoming = SessionStatus.Incoming()
        use.incoming?.accepted = 1
        use.incoming?.refused = 2
        status.services = [use]
        let text = StatusCommand.text(
            [status], gone: 1, state: StateDirectory("/nonexistent"), previous: [42: previous], now: Self.now)
        #expect(text.hasPrefix("exchange (pid 42, session abcde, alice@laptop): ready for 1 min 15 s"), "\(text)")
        #expect(text.contains("3.00 MB from the cluster (2.00 MB/s)"), "\(text)")
        #expect(text.contains("1 connection from the cluster, 0 open;"), "\(text)")
        #expect(text.contains("2 refused because nothing listened"), "\(text)")
        #expect(text.contains("1 status file of sessions that are gone"), "\(text)")
        let stuck = StatusCommand.text(
            [status], gone: 0, state: StateDirectory("/nonexistent"), previous: [:],
            now: Self.now.addingTimeInterval(30))
        #expect(stuck.contains("not updated for 30 s"), "\(stuck)")
        #expect(StatusCommand.bytes(999) == "999 B" && StatusCommand.bytes(1_073_741_890) == "1.07 GB")
    }

    /// The built ktctl's `status --watch` redraws once a second (plain blocks when not a terminal; one JSON document
    /// per line with `-o json`), from a status file whose process lives (this test's) and ignores one whose process
    /// is gone.
    @Test func watchRedrawsOnceASecond() async throws {
        let ktctl = try #require(builtExecutable("ktctl"))
        let root = NSTemporaryDirectory() + "ktctl-status-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        let state = StateDirectory(root)
        try state.prepare()
        defer {
            for path in state.statusFiles() { unlink(path) }
            for directory in [state.statusDirectory, state.pidDirectory, state.lockDirectory, state.journalDirectory] {
                rmdir(directory)
            }
            rmdir(root)
        }
        var live = SessionStatus(
            command: "connect", process: .current, session: "abcde", user: "alice", host: "laptop", started: Date())
        live.phase = "ready"
        live.mode = "socks"
        try SessionStatus.encoder.encode(live).write(
            to: URL(fileURLWithPath: state.statusFile(command: "connect", pid: getpid())))
        var gone = live
        gone.pid = 999_999_999
        try SessionStatus.encoder.encode(gone).write(
            to: URL(fileURLWithPath: state.statusFile(command: "connect", pid: gone.pid)))

        let text = try await TestNamespace.run(["timeout", "2.5", ktctl, "status", "--watch", "--state-dir", root])
        let blocks = text.output.components(separatedBy: "--- ktctl status, every 1 s: ").dropFirst()
        #expect(blocks.count >= 2, "\(text.output)")
        #expect(
            blocks.allSatisfy { $0.contains("connect (pid \(getpid()), session abcde, alice@laptop): ready") },
            "\(text.output)")
        #expect(blocks.allSatisfy { $0.contains("1 status file of sessions that are gone") }, "\(text.output)")
        let json = try await TestNamespace.run([
            "timeout", "2.5", ktctl, "status", "--watch", "-o", "json", "--state-dir", root,
        ])
        struct Listing: Decodable { var sessions: [SessionStatus] }
        let lines = json.output.split(separator: "\n")
        #expect(lines.count >= 2, "\(json.output)")
        for line in lines {
            let listing = try SessionStatus.decoder.decode(Listing.self, from: Data(line.utf8))
            #expect(listing.sessions.map(\.pid) == [getpid()])
        }
    }
}
