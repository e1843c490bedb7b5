import Foundation
import Glibc
import KtctlKit
import KubeKit
import LabKit
import LabTestSupport
import NamespaceTestSupport
import Testing

/// `ktctl birdseye` and `ktctl status` against ktlab with the real binaries: alice exchanges `tomcat`, bob and carol
/// mesh `orders`, dave is connected (socks mode); a fifth user's birdseye shows exactly those holders and marks, each
/// session's `ktctl status` shows its own Service, and once carol's ktctl is killed her mesh drops out of the view when
/// her Lease expires (10 s here), not before.
@Suite(.serialized, .enabled(if: TestNamespace.unavailableReason == nil)) struct BirdseyeTests {
    static var kubectl: String? { RunningLab.tool("kubectl") }
    typealias X = ExchangeTests

    struct Listing: Decodable { var sessions: [SessionStatus] }

    @Test(.enabled(if: kubectl != nil)) func threeDevelopersAConnectorAndOneKilled() async throws {
        let kubectl = try #require(Self.kubectl)
        let ktctl = try #require(builtExecutable("ktctl"))
        try await RunningLab.with { lab in
            _ = try await lab.deploySeedTomcat(kubectl)
            for command in [
                ["create", "deployment", "orders", "--image=tomcat:9", "--port=8080"],
                ["expose", "deployment", "orders", "--port=8080", "--target-port=8080"],
            ] {
                let made = try await lab.kubectl(kubectl, command)
                #expect(made.status == 0, "\(made.error)")
            }
            let dev = try await MeshTests.grant(lab, kubectl)
            let workstation = TestNamespace(existing: "\(lab.name)-ws")
            var servers: [BackgroundProcess] = []
            defer { for server in servers { server.stop() } }
            for (port, page) in [(8080, X.localPage), (8081, "bob local\n"), (8082, "carol local\n")] {
                servers.append(try await X.localServer(lab, port: port, page: page))
            }
            func state(_ who: String) -> String { "\(LabLayout.stateRoot)/\(lab.name)/\(who)" }
            func session(_ who: String, _ command: String, _ arguments: [String]) throws -> BackgroundProcess {
                try BackgroundProcess(
                    workstation,
                    ["env", "SUDO_USER=\(who)"] + X.ktctl(lab, ktctl, command, state: who, arguments, kubeconfig: dev))
            }
            let alice = try session("alice", "exchange", ["tomcat", "--expose", "8080"])
            defer { alice.stop() }
            let bob = try session(
                "bob", "mesh", ["orders", "--expose", "8081:8080", "--version-mark", "bob1", "--lease-duration", "10"])
            defer { bob.stop() }
            let carol = try session(
                "carol", "mesh",
                ["orders", "--expose", "8082:8080", "--version-mark", "carol1", "--lease-duration", "10"])
            defer { carol.stop() }
            let dave = try BackgroundProcess(
                workstation,
                [
                    "env", "SUDO_USER=dave", ktctl, "connect", "--mode", "socks", "--proxy-port", "2291",
                    "--kubeconfig",
                    dev, "-n", "default", "--image", "kt-shadow:dev", "--state-dir", state("dave"),
                ])
            defer { dave.stop() }
            try #require(await alice.waitForOutput("ktctl: exchanging service tomcat", timeout: 90), "\(alice.output)")
            try #require(await bob.waitForOutput("ktctl: meshing service orders", timeout: 90), "\(bob.output)")
            try #require(await carol.waitForOutput("ktctl: meshing service orders", timeout: 90), "\(carol.output)")
            try #require(await dave.waitForOutput("ktctl: connected", timeout: 90), "\(dave.output)")

            // erin looks.
            func birdseye(_ extra: [String] = []) async throws -> (BirdseyeCommand.View, String) {
                let base = ["env", "SUDO_USER=erin", ktctl, "birdseye", "--kubeconfig", dev, "-n", "default"]
                let json = try await workstation.run(base + extra + ["-o", "json"])
                #expect(json.status == 0, "\(json.error)")
                let view = try JSONDecoder().decode(BirdseyeCommand.View.self, from: Data(json.output.utf8))
                let text = try await workstation.run(base + extra)
                return (view, text.output)
            }
            func holders(_ view: BirdseyeCommand.View, _ service: String) -> [String] {
                (view.services.first { $0.service == service }?.holders ?? []).map {
                    "\($0.user) \($0.mode) \($0.mark ?? "-")"
                }.sorted()
            }
            let (view, text) = try await birdseye(["--show-connectors"])
            print("birdseye:\n\(text)")
            #expect(view.services.first { $0.service == "tomcat" }?.state == "exchanged", "\(text)")
            #expect(holders(view, "tomcat") == ["alice selector -"], "\(text)")
            #expect(view.services.first { $0.service == "orders" }?.state == "meshed", "\(text)")
            #expect(holders(view, "orders") == ["bob auto VERSION: bob1", "carol auto VERSION: carol1"], "\(text)")
            // Nothing else is held, and ktctl's own plumbing (the stuntman) is not listed as a Service.
            let others = view.services.filter { !["tomcat", "orders"].contains($0.service) }
            #expect(others.allSatisfy { $0.state == "normal" && $0.holders.isEmpty }, "\(text)")
            #expect(!view.services.contains { $0.service.hasSuffix("-kt-stuntman") }, "\(text)")
            #expect((view.connectors ?? []).map(\.user) == ["dave"], "\(text)")
            #expect(text.contains("exchanged by alice@") && text.contains("(VERSION: carol1)"), "\(text)")

            // Each session's own status names its Service, and dave's counts his proxy's traffic.
            let aliceStatus = try await TestNamespace.run([
                ktctl, "status", "-o", "json", "--state-dir", state("alice"),
            ])
            let aliceSession = try #require(
                try SessionStatus.decoder.decode(Listing.self, from: Data(aliceStatus.output.utf8)).sessions.first)
            #expect(aliceSession.user == "alice" && aliceSession.phase == "ready" && aliceSession.mode == "selector")
            #expect(
                aliceSession.services.map(\.name) == ["tomcat"] && aliceSession.services.first?.state == "exchanged")
            // bob's status counts the request his mesh brings him (the router may have asked before: a difference).
            func incoming() async throws -> SessionStatus.Incoming {
                let shown = try await TestNamespace.run([ktctl, "status", "-o", "json", "--state-dir", state("bob")])
                let listing = try SessionStatus.decoder.decode(Listing.self, from: Data(shown.output.utf8))
                return try #require(listing.sessions.first?.services.first?.incoming, "\(shown.output)")
            }
            let before = try await incoming()
            let page = try await workstation.run([
                "curl", "-s", "-m", "10", "-x", "socks5h://127.0.0.1:2291", "http://orders:8080", "-H",
                "VERSION: bob1",
            ])
            #expect(page.output == "bob local\n", "\(page.error)")
            try await Task.sleep(for: .seconds(1))
            let bobStatus = try await TestNamespace.run([ktctl, "status", "--state-dir", state("bob")])
            #expect(bobStatus.output.contains("orders in default: meshed, auto mode, header VERSION: bob1"))
            #expect(bobStatus.output.contains(": ready for "), "\(bobStatus.output)")
            let after = try await incoming()
            #expect(after.accepted - before.accepted == 1 && after.open == 0, "\(before) → \(after)")
            #expect(after.bytesToLocal - before.bytesToLocal > 0, "\(before) → \(after)")
            #expect(after.bytesFromLocal - before.bytesFromLocal >= "bob local\n".utf8.count, "\(before) → \(after)")
            let daveStatus = try await TestNamespace.run([ktctl, "status", "-o", "json", "--state-dir", state("dave")])
            let daveTraffic = try #require(
                try SessionStatus.decoder.decode(Listing.self, from: Data(daveStatus.output.utf8)).sessions.first?
                    .traffic)
            #expect(daveTraffic.flowsOpened == 1 && daveTraffic.bytesFromCluster > 0, "\(daveStatus.output)")

            // carol's ktctl killed: she stays in the view while her Lease is fresh, and drops out when it expires.
            carol.signalProgram(SIGKILL)
            _ = await carol.waitForExit(timeout: 10)
            let killed = ContinuousClock.now
            #expect(holders(try await birdseye().0, "orders").count == 2, "carol left before her Lease expired")
            var gone: Duration?
            while ContinuousClock.now - killed < .seconds(40) {
                if holders(try await birdseye().0, "orders") == ["bob auto VERSION: bob1"] {
                    gone = ContinuousClock.now - killed
                    break
                }
                try await Task.sleep(for: .milliseconds(500))
            }
            let dropped = try #require(gone, "carol was still shown 40 s after her ktctl was killed")
            print("birdseye: carol dropped out \(dropped) after kill -9 (her Lease lasts 10 s)")
            #expect(dropped >= .seconds(5), "carol dropped out before her Lease could have expired")
            #expect(holders(try await birdseye().0, "tomcat") == ["alice selector -"])

            // Everyone stops; carol's leftovers go with `ktctl clean`.
            for process in [alice, bob, dave] {
                process.signalProgram(SIGINT)
                #expect(await process.waitForExit(timeout: 30) != nil, "\(process.output)")
            }
            let leftByCarol = try await TestNamespace.run([ktctl, "status", "--state-dir", state("carol")])
            #expect(leftByCarol.output.contains("1 status file of sessions that are gone"), "\(leftByCarol.output)")
            let clean = try await workstation.run(X.ktctl(lab, ktctl, "clean", state: "carol", [], kubeconfig: dev))
            #expect(clean.status == 0, "\(clean.output) \(clean.error)")
            for who in ["alice", "bob", "carol", "dave"] {
                let left = try await TestNamespace.run([ktctl, "status", "--state-dir", state(who)])
                // carol's file, left by `kill -9`, went with `ktctl clean`; the others' with their sessions.
                #expect(
                    left.output.hasPrefix("no ktctl session is running") && !left.output.contains("status file"),
                    "\(who): \(left.output)")
            }
            let (final, finalText) = try await birdseye()
            #expect(final.services.allSatisfy { $0.state == "normal" }, "\(finalText)")
            try await MeshTests.expectNothingLeft(lab)
        }
    }
}
