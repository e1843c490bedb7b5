import Foundation
import KubeKit
import LabKit
import LabTestSupport
import NamespaceTestSupport
import Testing

/// `ktctl connect` in a lab's workstation namespace, against the seed's tomcat: every address form reaches the page,
/// cluster DNS answers through the tunnel, other names go to the upstream, and Ctrl-C leaves nothing behind.
@Suite(.serialized, .enabled(if: TestNamespace.unavailableReason == nil)) struct ConnectTests {
    static var kubectl: String? { RunningLab.tool("kubectl") }

    @Test(.enabled(if: kubectl != nil)) func tunModeReachesPodsServicesAndNames() async throws {
        let kubectl = try #require(Self.kubectl)
        let ktctl = try #require(builtExecutable("ktctl"))
        try await RunningLab.with { lab in
            // The seed's commands.
            let (podIP, clusterIP) = try await lab.deploySeedTomcat(kubectl)

            let workstation = TestNamespace(existing: "\(lab.name)-ws")
            let resolvConf = "/etc/netns/\(lab.name)-ws/resolv.conf"
            let originalResolvConf = try String(contentsOfFile: resolvConf, encoding: .utf8)
            let state = "\(LabLayout.stateRoot)/\(lab.name)/kt"
            let connect = try BackgroundProcess(
                workstation,
                [
                    ktctl, "connect", "--kubeconfig", "\(LabLayout.stateRoot)/\(lab.name)/kubeconfig-ws", "-n",
                    "default",
                    "--image", "kt-shadow:dev", "--state-dir", state,
                ])
            defer { connect.stop() }
            let connected = connect.waitForOutput("ktctl: connected", timeout: 60)
            #expect(connected, "\(connect.output)")
            guard connected else { return }

            for url in [
                "http://\(podIP):8080", "http://\(clusterIP):8080", "http://tomcat:8080", "http://tomcat.default:8080",
                "http://tomcat.default.svc.cluster.local:8080",
            ] {
                let curl = try await workstation.run(["curl", "-s", "-m", "10", url])
                #expect(curl.output == "kt-connect demo v1\n", "\(url): \(curl.error)")
            }
            // Cluster DNS through the resolver; a name the upstream knows still goes there.
            let dig = try await workstation.run(["dig", "+short", "+time=3", "tomcat.default.svc.cluster.local"])
            #expect(dig.output == "\(clusterIP)\n")
            let upstream = try await workstation.run(["dig", "+short", "+time=3", "api.lab.test"])
            #expect(
                upstream.output == "\(LabLayout(name: lab.name, slot: 0).nodeLinkAddress)\n" || !upstream.output.isEmpty
            )
            // A service created after connect resolves within 5 s.
            #expect(
                try await lab.kubectl(
                    kubectl, ["expose", "deployment", "tomcat", "--name=late", "--port=8081", "--target-port=8080"]
                )
                .status == 0)
            let late = try #require(try await lab.client.get(Service.self, name: "late").spec?.clusterIP)
            let started = ContinuousClock.now
            var answer = ""
            while answer != "\(late)\n", ContinuousClock.now - started < .seconds(5) {
                answer = try await workstation.run(["dig", "+short", "+time=1", "late.default.svc.cluster.local"])
                    .output
                if answer != "\(late)\n" { try await Task.sleep(for: .milliseconds(200)) }
            }
            #expect(answer == "\(late)\n")
            #expect(
                try await workstation.run(["curl", "-s", "-m", "10", "http://late:8081"]).output
                    == "kt-connect demo v1\n")

            // Ctrl-C: the TUN, routes and resolv.conf are back as they were; the pod and secret are gone.
            let shadowPods = try await lab.client.list(
                Pod.self, options: ListOptions(labelSelector: "app.kubernetes.io/managed-by=ktctl")
            ).items
            #expect(shadowPods.count == 1)
            let interrupted = ContinuousClock.now
            connect.signalProgram(SIGINT)
            #expect(connect.waitForOutput("ktctl: disconnected", timeout: 10))
            let took = ContinuousClock.now - interrupted
            print("ktctl connect: Ctrl-C to clean in \(took)")
            #expect(took < .seconds(5))
            try await Task.sleep(for: .milliseconds(300))
            // ktctl itself has exited (the line starts with its path; its supervising shell's starts with sh).
            #expect(try await TestNamespace.run(["pgrep", "-f", "^\(ktctl) connect .*\(state)"]).output.isEmpty)
            let output = connect.stop()
            #expect(output.contains("ktctl: disconnected"), "\(output)")
            #expect(try await workstation.run(["ip", "link", "show", "kt0"]).status != 0)
            #expect(try String(contentsOfFile: resolvConf, encoding: .utf8) == originalResolvConf)
            #expect(
                try await lab.client.list(
                    Pod.self, options: ListOptions(labelSelector: "app.kubernetes.io/managed-by=ktctl")
                ).items.isEmpty)
            #expect(
                try await lab.client.list(
                    Secret.self, options: ListOptions(labelSelector: "app.kubernetes.io/managed-by=ktctl")
                ).items.isEmpty)
        }
    }
}
