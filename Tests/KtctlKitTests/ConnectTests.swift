import Foundation
import KtctlKit
import KubeKit
import LabKit
import LabTestSupport
import NamespaceTestSupport
import Testing

/// `ktctl connect` in a lab's workstation namespace, against the seed's tomcat: every address form reaches the page,
/// cluster DNS answers through the tunnel, other names go to the upstream, and Ctrl-C leaves nothing behind.
@Suite(.serialized, .enabled(if: TestNamespace.unavailableReason == nil)) struct ConnectTests {
    static var kubectl: String? { RunningLab.tool("kubectl") }

    /// The shadow runs from the real image (`make images`), under crun: UID 65532, no capabilities, a read-only root.
    @Test(.enabled(if: kubectl != nil)) func tunModeReachesPodsServicesAndNames() async throws {
        let kubectl = try #require(Self.kubectl)
        let ktctl = try #require(builtExecutable("ktctl"))
        try #require(builtImage("kt-shadow") != nil, "no .build/images/kt-shadow.tar: run `make images` first")
        try await RunningLab.with { lab in
            // The seed's commands.
            let (podIP, clusterIP) = try await lab.deploySeedTomcat(kubectl)

            let workstation = TestNamespace(existing: "\(lab.name)-ws")
            let resolvConf = "/etc/netns/\(lab.name)-ws/resolv.conf"
            let originalResolvConf = try String(contentsOfFile: resolvConf, encoding: .utf8)
            let state = "\(LabLayout.stateRoot)/\(lab.name)/kt"
            // --dns-mode resolved where no systemd-resolved runs: refused before anything is made.
            let refused = try await workstation.run([
                ktctl, "connect", "--kubeconfig", "\(LabLayout.stateRoot)/\(lab.name)/kubeconfig-ws", "--image",
                "kt-shadow:dev", "--state-dir", state, "--dns-mode", "resolved",
            ])
            #expect(refused.status != 0 && refused.error.contains("systemd-resolved does not answer lookups here"))
            #expect(refused.error.contains("nothing was changed"), "\(refused.error)")
            #expect(
                try await lab.client.list(
                    Pod.self, options: ListOptions(labelSelector: "app.kubernetes.io/managed-by=ktctl")
                ).items.isEmpty)
            let connect = try BackgroundProcess(
                workstation,
                [
                    ktctl, "connect", "--kubeconfig", "\(LabLayout.stateRoot)/\(lab.name)/kubeconfig-ws", "-n",
                    "default", "--state-dir", state,
                ])
            defer { connect.stop() }
            try #require(await connect.waitForOutput("ktctl: connected", timeout: 60), "\(connect.output)")

            // ktctl's default image is the one `make images` builds; the lab ran it under crun.
            let shadow = try #require(
                try await lab.client.list(
                    Pod.self, options: ListOptions(labelSelector: "app.kubernetes.io/managed-by=ktctl")
                ).items.first)
            let status = try #require(shadow.raw["status"]?["containerStatuses"]?.arrayValue?.first)
            #expect(status["image"]?.stringValue == "kt-shadow:0.1.0")
            let containerID = try #require(status["containerID"]?.stringValue)
            #expect(containerID.hasPrefix("crun://"), "\(containerID)")
            #expect(status["imageID"]?.stringValue?.hasPrefix("docker.io/library/kt-shadow@sha256:") == true)
            let described = try await lab.kubectl(kubectl, ["describe", "pod", shadow.name])
            #expect(
                described.output.contains(
                    "under crun (OCI runtime) as uid 65532 gid 65532, root file system read-only"),
                "\(described.output)")
            let crunID = String(containerID.dropFirst("crun://".count))
            let crun = try await TestNamespace.run(["pgrep", "-f", "^/usr/bin/crun .* run --bundle .* \(crunID)$"])
            let crunPID = try #require(Int32(crun.output.trimmingCharacters(in: .whitespacesAndNewlines)))
            let child = try await TestNamespace.run(["pgrep", "-P", "\(crunPID)"])
            let shadowPID = try #require(Int32(child.output.trimmingCharacters(in: .whitespacesAndNewlines)))
            let processStatus = try String(contentsOfFile: "/proc/\(shadowPID)/status", encoding: .utf8)
            #expect(processStatus.contains("Uid:\t65532\t65532\t65532\t65532"), "\(processStatus)")
            #expect(processStatus.contains("Gid:\t65532\t65532\t65532\t65532"), "\(processStatus)")
            #expect(processStatus.contains("CapEff:\t0000000000000000"), "\(processStatus)")
            #expect(processStatus.contains("NoNewPrivs:\t1"), "\(processStatus)")
            #expect(
                try String(contentsOfFile: "/proc/\(shadowPID)/cmdline", encoding: .utf8).hasPrefix(
                    "/usr/local/bin/kt-shadow\u{0}"))
            // Its root, seen through its own mounts, refuses writes (even root's).
            let write = try await TestNamespace.run(["touch", "/proc/\(shadowPID)/root/written"])
            #expect(write.status != 0 && write.error.contains("Read-only file system"), "\(write.error)")

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
            #expect(upstream.output == "\(try lab.nodeLinkAddress)\n", "\(upstream.error)")
            // ICMP echo and UDP, answered from the cluster side through the shadow's image.
            let ping = try await workstation.run(["ping", "-c", "2", "-W", "3", podIP])
            #expect(ping.status == 0, "\(ping.output) \(ping.error)")
            var echo = Container(name: "echo", image: "python:3")
            echo.command = ["python3", "-c", Self.udpEchoServer]
            _ = try await lab.client.create(
                Pod(metadata: ObjectMeta(name: "udpecho"), spec: PodSpec(containers: [echo])))
            let echoIP = try #require(try await lab.waitReady("udpecho").status?.podIP)
            let udpClient = """
                import socket, sys
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                s.settimeout(1)
                for attempt in range(15):
                    s.sendto(b"through the image", (sys.argv[1], 9999))
                    try:
                        print(s.recvfrom(100)[0].decode()); break
                    except socket.timeout:
                        pass
                """
            let udp = try await workstation.run(["python3", "-c", udpClient, echoIP])
            #expect(udp.output == "echo through the image\n", "\(udp.error)")
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
            // The name may answer before the lab's service rules follow (kube-proxy lags the same way).
            var latePage = ""
            while latePage != "kt-connect demo v1\n", ContinuousClock.now - started < .seconds(10) {
                latePage = try await workstation.run(["curl", "-s", "-m", "5", "http://late:8081"]).output
                if latePage.isEmpty { try await Task.sleep(for: .milliseconds(200)) }
            }
            #expect(latePage == "kt-connect demo v1\n")

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

    /// `ktctl config set connect.mode socks` makes the next connect a socks one; `--mode tun` on the command line wins.
    @Test(.enabled(if: kubectl != nil)) func configDefaultsApplyAndFlagsWin() async throws {
        let ktctl = try #require(builtExecutable("ktctl"))
        let home = FileManager.default.temporaryDirectory.appendingPathComponent("ktconfig-\(getpid())-home").path
        try FileManager.default.createDirectory(atPath: home, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: home) }
        try await RunningLab.with { lab in
            let workstation = TestNamespace(existing: "\(lab.name)-ws")
            let set = try await workstation.run([
                "env", "HOME=\(home)", ktctl, "config", "set", "connect.mode", "socks",
            ])
            #expect(set.status == 0 && set.output == "connect.mode = socks\n", "\(set.error)")
            let base = [
                "env", "HOME=\(home)", ktctl, "connect", "--kubeconfig",
                "\(LabLayout.stateRoot)/\(lab.name)/kubeconfig-ws",
                "-n", "default", "--image", "kt-shadow:dev", "--state-dir", "\(LabLayout.stateRoot)/\(lab.name)/kt",
            ]
            for (extra, expected, unexpected) in [
                ([String](), "  proxy      SOCKS5 and HTTP on", "  routes "),
                (["--mode", "tun"], "  routes ", "  proxy  "),
            ] {
                let connect = try BackgroundProcess(workstation, base + extra)
                defer { connect.stop() }
                try #require(await connect.waitForOutput("ktctl: connected", timeout: 60), "\(connect.output)")
                #expect(connect.output.contains(expected), "\(extra): \(connect.output)")
                #expect(!connect.output.contains(unexpected), "\(extra): \(connect.output)")
                connect.signalProgram(SIGINT)
                #expect(connect.waitForOutput("ktctl: disconnected", timeout: 10), "\(connect.output)")
                _ = await connect.waitForExit(timeout: 10)
            }
        }
    }

    /// A shadow image the cluster cannot pull: ktctl stops, says how to build and push the image, and leaves nothing.
    @Test(.enabled(if: kubectl != nil)) func anImageThatCannotBePulledSaysHowToBuildIt() async throws {
        let ktctl = try #require(builtExecutable("ktctl"))
        try await RunningLab.with { lab in
            let workstation = TestNamespace(existing: "\(lab.name)-ws")
            let connect = try await workstation.run(
                [
                    ktctl, "connect", "--kubeconfig", "\(LabLayout.stateRoot)/\(lab.name)/kubeconfig-ws", "-n",
                    "default",
                    "--image", "registry.example.com/team/no-such-agent:9", "--state-dir",
                    "\(LabLayout.stateRoot)/\(lab.name)/kt",
                ], timeout: 60)
            #expect(connect.status != 0)
            #expect(
                connect.error.contains("cannot pull its image registry.example.com/team/no-such-agent:9 (ErrImagePull"),
                "\(connect.error)")
            #expect(connect.error.contains("make images"), "\(connect.error)")
            #expect(
                connect.error.contains(
                    "skopeo copy oci-archive:.build/images/kt-shadow.tar docker://REGISTRY/kt-shadow:9"),
                "\(connect.error)")
            #expect(connect.error.contains("ktctl connect --image REGISTRY/kt-shadow:9"), "\(connect.error)")
            for kind in ["pods", "secrets", "leases"] {
                let left = try await lab.kubectl(
                    Self.kubectl!, ["get", kind, "-l", "app.kubernetes.io/managed-by=ktctl", "-o", "name"])
                #expect(left.output.isEmpty, "\(kind): \(left.output)")
            }
            #expect(try await workstation.run(["ip", "link", "show", "kt0"]).status != 0)
        }
    }

    /// tun mode where systemd-resolved is in charge (a real resolved, unpacked by `make deps`, in a mount namespace of
    /// the test's own): `--dns-mode auto` gives kt0 per-link DNS with routing domains and leaves /etc/resolv.conf
    /// alone; short names, `svc.ns` and full names resolve through resolved; other names stay with resolved's own
    /// server; Ctrl-C and `kill -9` both leave resolved without kt0.
    @Test(
        .enabled(
            if: kubectl != nil
                && access("\(repositoryRoot)/.build/tools/resolved/lib/systemd/systemd-resolved", X_OK) == 0))
    func tunModeThroughSystemdResolved() async throws {
        let kubectl = try #require(Self.kubectl)
        let ktctl = try #require(builtExecutable("ktctl"))
        try await RunningLab.with { lab in
            let (_, clusterIP) = try await lab.deploySeedTomcat(kubectl)
            let workstation = TestNamespace(existing: "\(lab.name)-ws")
            let upstream = try #require(
                try String(contentsOfFile: "/etc/netns/\(lab.name)-ws/resolv.conf", encoding: .utf8)
                    .split(separator: "\n").first { $0.hasPrefix("nameserver ") }?.split(separator: " ").last)
            let state = "\(LabLayout.stateRoot)/\(lab.name)/kt"
            let connect =
                "\(ktctl) connect --kubeconfig \(LabLayout.stateRoot)/\(lab.name)/kubeconfig-ws -n default "
                + "--image kt-shadow:dev --state-dir \(state)"
            let scenario = """
                log="$KTRESOLVED_WORK/connect.log"
                cp /etc/resolv.conf "$KTRESOLVED_WORK/before"
                start() {
                    \(connect) >"$log" 2>&1 &
                    pid=$!
                    for _ in $(seq 1 600); do grep -q "ktctl: connected" "$log" && return 0; sleep 0.1; done
                    cat "$log"; return 1
                }
                start || exit 1
                grep "^  dns " "$log" | sed 's/^ */summary: /'
                echo "link dns: $(resolvectl dns kt0)"
                echo "link domains: $(COLUMNS=1000 resolvectl domain kt0 | tr -s ' \\n' ' ')"
                cmp -s /etc/resolv.conf "$KTRESOLVED_WORK/before" && echo "resolv.conf untouched"
                # What a resolv.conf symlinked to resolved's stub file shows now.
                mount --bind /run/systemd/resolve/stub-resolv.conf /etc/resolv.conf
                grep '^search' /etc/resolv.conf
                for name in tomcat.default.svc.cluster.local tomcat.default tomcat; do
                    echo "getent $name: $(getent ahostsv4 $name | awk 'NR==1{print $1}')"
                    echo "curl $name: $(curl -s -m 10 http://$name:8080)"
                done
                echo "upstream api.lab.test: $(getent ahostsv4 api.lab.test | awk 'NR==1{print $1}')"
                kill -INT $pid; wait $pid
                echo "after Ctrl-C: $(resolvectl dns kt0 2>&1 | head -1)"
                start || exit 1
                kill -KILL $pid; wait $pid 2>/dev/null
                sleep 0.5
                echo "after kill -9: $(resolvectl dns kt0 2>&1 | head -1)"
                \(ktctl) clean --state-dir \(state) --kubeconfig \(LabLayout.stateRoot)/\(lab.name)/kubeconfig-ws >/dev/null 2>&1
                echo "clean: $?"
                """
            let run = try await workstation.run(
                ["\(repositoryRoot)/scripts/with-resolved.sh", String(upstream), "--", "bash", "-c", scenario],
                timeout: 150)
            let lines = run.output
            print(lines.split(separator: "\n").map { "ktctl connect, systemd-resolved: \($0)" }.joined(separator: "\n"))
            #expect(run.status == 0, "\(lines) \(run.error)")
            #expect(lines.contains("summary: dns        198.18.20.1:53 on kt0 through systemd-resolved"), "\(lines)")
            #expect(lines.contains("link dns: Link ") && lines.contains("198.18.20.1"), "\(lines)")
            #expect(
                lines.contains(
                    #/link domains: Link \d+ \(kt0\): default.svc.cluster.local svc.cluster.local cluster.local ~svc ~default/#
                ),
                "\(lines)")
            #expect(lines.contains("resolv.conf untouched"), "\(lines)")
            #expect(lines.contains("search default.svc.cluster.local svc.cluster.local cluster.local"), "\(lines)")
            for name in ["tomcat.default.svc.cluster.local", "tomcat.default", "tomcat"] {
                #expect(lines.contains("getent \(name): \(clusterIP)\n"), "\(name): \(lines)")
                #expect(lines.contains("curl \(name): kt-connect demo v1\n"), "\(name): \(lines)")
            }
            #expect(lines.contains("upstream api.lab.test: \(try lab.nodeLinkAddress)\n"), "\(lines)")
            #expect(lines.contains("after Ctrl-C: Failed to resolve interface"), "\(lines)")
            #expect(lines.contains("after kill -9: Failed to resolve interface"), "\(lines)")
            #expect(lines.contains("clean: 0"), "\(lines)")
            // Both sessions' objects: the Secrets gone, the pods gone or terminating.
            #expect(
                try await lab.client.list(
                    Secret.self, options: ListOptions(labelSelector: "app.kubernetes.io/managed-by=ktctl")
                ).items.isEmpty)
            #expect(
                try await lab.client.list(
                    Pod.self, options: ListOptions(labelSelector: "app.kubernetes.io/managed-by=ktctl")
                ).items.allSatisfy { $0.metadata.deletionTimestamp != nil })
        }
    }

    /// tun mode under load and through failures: 1 GiB from a pod byte-exact, 500 concurrent curls, ping; the
    /// port-forward's TCP connection killed, then the shadow pod deleted: new connections work again within 15 s;
    /// then `kill -9` of ktctl and `ktctl clean` leave what Ctrl-C leaves.
    @Test(.enabled(if: kubectl != nil)) func tunModeUnderLoadThroughFailuresAndClean() async throws {
        let kubectl = try #require(Self.kubectl)
        let ktctl = try #require(builtExecutable("ktctl"))
        try await RunningLab.with { lab in
            let (podIP, _) = try await lab.deploySeedTomcat(kubectl)
            var bulk = Container(name: "bulk", image: "python:3")
            bulk.command = ["python3", "-c", Self.gibibyteServer]
            bulk.ports = [ContainerPort(containerPort: 9000)]
            _ = try await lab.client.create(Pod(metadata: ObjectMeta(name: "bulk"), spec: PodSpec(containers: [bulk])))
            let bulkIP = try #require(try await lab.waitReady("bulk").status?.podIP)

            let workstation = TestNamespace(existing: "\(lab.name)-ws")
            let resolvConf = "/etc/netns/\(lab.name)-ws/resolv.conf"
            let originalResolvConf = try String(contentsOfFile: resolvConf, encoding: .utf8)
            let state = "\(LabLayout.stateRoot)/\(lab.name)/kt"
            let kubeconfig = "\(LabLayout.stateRoot)/\(lab.name)/kubeconfig-ws"
            let connect = try BackgroundProcess(
                workstation,
                [
                    ktctl, "connect", "--kubeconfig", kubeconfig, "-n", "default", "--image", "kt-shadow:dev",
                    "--state-dir", state,
                ])
            defer { connect.stop() }
            try #require(await connect.waitForOutput("ktctl: connected", timeout: 60), "\(connect.output)")

            // 1 GiB, byte-exact, while `ktctl status -o json` is asked four times a second: its bytes from the
            // cluster rise with the flow open, and once the transfer is over they agree with it within 1 %.
            let expected = try await TestNamespace.run(["python3", "-c", Self.gibibyteDigest]).output
            func traffic() async throws -> SessionStatus.Traffic {
                let shown = try await TestNamespace.run([ktctl, "status", "-o", "json", "--state-dir", state])
                struct Listing: Decodable { var sessions: [SessionStatus] }
                let listing = try SessionStatus.decoder.decode(Listing.self, from: Data(shown.output.utf8))
                let session = try #require(listing.sessions.first { $0.command == "connect" }, "\(shown.output)")
                #expect(session.phase == "ready" && session.mode == "tun" && session.shadow?.tunnel == "connected")
                return try #require(session.traffic)
            }
            let before = try await traffic()
            let started = ContinuousClock.now
            // At most 400 MB/s, so that the transfer lasts long enough (2.7 s or more) to be watched.
            let transfer = Task {
                try await workstation.run(
                    [
                        "sh", "-c",
                        "curl -s -m 120 --limit-rate 400M http://\(bulkIP):9000 | sha256sum | cut -d' ' -f1",
                    ], timeout: 150)
            }
            var during: [SessionStatus.Traffic] = []
            while ContinuousClock.now - started < .seconds(150) {
                let now = try await traffic()
                if now.flowsOpen > 0 && now.bytesFromCluster > before.bytesFromCluster { during.append(now) }
                if now.flowsOpen == 0 && now.bytesFromCluster - before.bytesFromCluster >= 1 << 30 { break }
                try await Task.sleep(for: .milliseconds(250))
            }
            let download = try await transfer.value
            let took = ContinuousClock.now - started
            #expect(download.output == expected && expected.count == 65, "\(download.output) \(download.error)")
            let seconds = Double(took.components.seconds) + Double(took.components.attoseconds) / 1e18
            print("ktctl connect: 1 GiB from a pod through tun mode in \(took) (\(Int(1024 / seconds)) MiB/s)")
            // Never falling, and at least three different figures while the flow was open (the file is rewritten
            // twice a second and asked four times, so neighbours may repeat).
            let figures = during.map(\.bytesFromCluster)
            let rising = zip(figures, figures.dropFirst()).allSatisfy { $0 <= $1 } && Set(figures).count >= 3
            #expect(rising, "status during the transfer: \(figures)")
            // The status file is rewritten twice a second: after a second it holds the whole transfer.
            try await Task.sleep(for: .seconds(1))
            let after = try await traffic()
            let received = Double(after.bytesFromCluster - before.bytesFromCluster)
            let sent = after.bytesToCluster - before.bytesToCluster
            #expect(abs(received - Double(1 << 30)) <= Double(1 << 30) * 0.01, "\(received) bytes counted")
            #expect(sent > 0 && sent < 4096, "\(sent) bytes to the cluster counted for one request")
            #expect(after.flowsOpened - before.flowsOpened == 1 && after.flowsOpen == 0, "\(before) → \(after)")
            print(
                "ktctl status during the transfer: \(during.count) samples, \(Int(received)) bytes from the cluster "
                    + "counted for a 1 GiB body, \(sent) to it")

            // 500 concurrent curls by service name.
            let concurrent = try await workstation.run(
                [
                    "sh", "-c",
                    "seq 500 | xargs -P 500 -I{} curl -s -m 60 http://tomcat:8080 | grep -c 'kt-connect demo v1'",
                ], timeout: 120)
            #expect(concurrent.output == "500\n", "\(concurrent.output) \(concurrent.error)")

            // ICMP echo, answered from the cluster side.
            let ping = try await workstation.run(["ping", "-c", "2", "-W", "3", podIP])
            #expect(ping.status == 0, "\(ping.output) \(ping.error)")

            // The port-forward's TCP connection killed (ss -K in the workstation namespace), then the shadow pod
            // deleted: each time new connections work again within 15 s.
            let server = try #require(
                try String(contentsOfFile: kubeconfig, encoding: .utf8).split(separator: "\n")
                    .first { $0.contains("server: https://") }?.split(separator: "/").last?.split(separator: ":").first)
            let shadowPods = try await lab.client.list(
                Pod.self, options: ListOptions(labelSelector: "app.kubernetes.io/managed-by=ktctl")
            ).items
            let shadow = try #require(shadowPods.first).name
            let failures: [(String, () async throws -> Void)] = [
                (
                    "port-forward connection killed",
                    {
                        let killed = try await workstation.run([
                            "ss", "-K", "dst", String(server), "dport", "=", "6443",
                        ])
                        #expect(killed.output.contains("ESTAB"), "\(killed.output) \(killed.error)")
                    }
                ),
                (
                    "shadow pod deleted",
                    {
                        try await lab.client.delete(
                            Pod.self, name: shadow, options: DeleteOptions(gracePeriodSeconds: 0))
                    }
                ),
            ]
            for (what, fail) in failures {
                try await fail()
                let failed = ContinuousClock.now
                var page = ""
                while page != "kt-connect demo v1\n", ContinuousClock.now - failed < .seconds(15) {
                    page = try await workstation.run(["curl", "-s", "-m", "3", "http://tomcat:8080"]).output
                    if page.isEmpty { try await Task.sleep(for: .milliseconds(200)) }
                }
                let back = ContinuousClock.now - failed
                #expect(page == "kt-connect demo v1\n", "\(what): \(connect.output)")
                print("ktctl connect: \(what): new connections work again after \(back)")
            }

            // kill -9: the TUN and its routes go with the process; resolv.conf and the cluster objects stay until
            // `ktctl clean`.
            connect.signalProgram(SIGKILL)
            try await Task.sleep(for: .milliseconds(500))
            #expect(try await workstation.run(["ip", "link", "show", "kt0"]).status != 0)
            #expect(try String(contentsOfFile: resolvConf, encoding: .utf8) != originalResolvConf)
            let clean = try await workstation.run(
                [ktctl, "clean", "--kubeconfig", kubeconfig, "-n", "default", "--state-dir", state], timeout: 30)
            #expect(clean.status == 0, "\(clean.error)")
            #expect(clean.output.contains("restored /etc/resolv.conf"), "\(clean.output)")
            #expect(clean.output.contains("no process has pid"), "\(clean.output)")
            #expect(try String(contentsOfFile: resolvConf, encoding: .utf8) == originalResolvConf)
            #expect(try FileManager.default.contentsOfDirectory(atPath: "\(state)/pid").isEmpty)
            #expect(try FileManager.default.contentsOfDirectory(atPath: "\(state)/journal").isEmpty)
            // The pod terminates (its grace period), the Secret is gone at once.
            #expect(
                try await lab.client.list(
                    Secret.self, options: ListOptions(labelSelector: "app.kubernetes.io/managed-by=ktctl")
                ).items.isEmpty)
            let deadline = ContinuousClock.now + .seconds(40)
            var left = [Pod]()
            repeat {
                left = try await lab.client.list(
                    Pod.self, options: ListOptions(labelSelector: "app.kubernetes.io/managed-by=ktctl")
                ).items
                if !left.isEmpty { try await Task.sleep(for: .milliseconds(200)) }
            } while !left.isEmpty && ContinuousClock.now < deadline
            #expect(left.isEmpty)
            let again = try await workstation.run(
                [ktctl, "clean", "--kubeconfig", kubeconfig, "-n", "default", "--state-dir", state], timeout: 30)
            #expect(again.output.contains("nothing to clean"), "\(again.output)")
        }
    }

    /// Serves 1 GiB (a 1 MiB pattern 1024 times) on :9000 to every connection, after reading its request.
    static let gibibyteServer = """
        import socket, threading
        block = bytes((i * 7 + 13) % 251 for i in range(1 << 20))
        server = socket.socket()
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("0.0.0.0", 9000))
        server.listen(16)
        def serve(connection):
            connection.recv(65536)
            connection.sendall(b"HTTP/1.1 200 OK\\r\\nContent-Length: %d\\r\\nConnection: close\\r\\n\\r\\n" % (1 << 30))
            for _ in range(1024):
                connection.sendall(block)
            connection.close()
        while True:
            connection, _ = server.accept()
            threading.Thread(target=serve, args=(connection,), daemon=True).start()
        """

    /// The SHA-256 of what `gibibyteServer` sends as a body.
    static let gibibyteDigest = """
        import hashlib
        block = bytes((i * 7 + 13) % 251 for i in range(1 << 20))
        digest = hashlib.sha256()
        for _ in range(1024):
            digest.update(block)
        print(digest.hexdigest())
        """

    /// socks mode as an ordinary user (nobody): curl through SOCKS5 with cluster-side names, through the HTTP proxy
    /// (plain and CONNECT), a DNS query and an echo by service name through UDP ASSOCIATE; a second connect is refused
    /// with the first one's pid;
    /// Ctrl-C removes the pod and Secret.
    @Test(.enabled(if: kubectl != nil)) func socksModeAsAnOrdinaryUser() async throws {
        let kubectl = try #require(Self.kubectl)
        let ktctl = try #require(builtExecutable("ktctl"))
        try await RunningLab.with { lab in
            let (_, clusterIP) = try await lab.deploySeedTomcat(kubectl)
            let workstation = TestNamespace(existing: "\(lab.name)-ws")
            // A kubeconfig and a state directory that nobody can use.
            let home = "\(LabLayout.stateRoot)/\(lab.name)/nobody"
            try FileManager.default.createDirectory(atPath: home, withIntermediateDirectories: true)
            try FileManager.default.copyItem(
                atPath: "\(LabLayout.stateRoot)/\(lab.name)/kubeconfig-ws", toPath: "\(home)/config")
            for path in [home, "\(home)/config"] {
                try FileManager.default.setAttributes([.ownerAccountID: 65534], ofItemAtPath: path)
            }
            // The proxy serves only the user who runs ktctl: here nobody, so the clients run as nobody too (with
            // Debian's python3: a python under root's home is not nobody's to run).
            let asNobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
            func ktctlAsNobody(_ port: Int) -> [String] {
                asNobody + [
                    ktctl, "connect", "--mode", "socks",
                    "--kubeconfig", "\(home)/config", "-n", "default", "--image", "kt-shadow:dev", "--state-dir",
                    "\(home)/kt", "--proxy-port", "\(port)",
                ]
            }
            let connect = try BackgroundProcess(workstation, ktctlAsNobody(2223))
            defer { connect.stop() }
            try #require(await connect.waitForOutput("ktctl: connected", timeout: 60), "\(connect.output)")
            #expect(connect.output.contains("export ALL_PROXY=socks5h://127.0.0.1:2223"), "\(connect.output)")

            let page = "kt-connect demo v1\n"
            for (what, command) in [
                (
                    "SOCKS5, name resolved in the cluster",
                    ["curl", "-s", "-m", "10", "--socks5-hostname", "127.0.0.1:2223"]
                ),
                ("ALL_PROXY=socks5h", ["env", "ALL_PROXY=socks5h://127.0.0.1:2223", "curl", "-s", "-m", "10"]),
                ("http_proxy", ["env", "http_proxy=http://127.0.0.1:2223", "curl", "-s", "-m", "10"]),
                ("HTTP CONNECT", ["curl", "-s", "-m", "10", "-p", "-x", "http://127.0.0.1:2223"]),
            ] {
                for url in [
                    "http://tomcat:8080", "http://tomcat.default.svc.cluster.local:8080", "http://\(clusterIP):8080",
                ] {
                    let curl = try await workstation.run(asNobody + command + [url])
                    #expect(curl.output == page, "\(what) \(url): \(curl.output) \(curl.error)")
                }
            }
            // https_proxy: curl tunnels TLS through CONNECT, here to the API server as the cluster side sees it.
            let server = try #require(
                try String(contentsOfFile: "\(home)/config", encoding: .utf8).split(separator: "\n")
                    .first { $0.contains("server: https://") }?.split(separator: " ").last)
            let https = try await workstation.run(
                asNobody + [
                    "env", "https_proxy=http://127.0.0.1:2223", "curl", "-s", "-k", "-m", "10", "-o", "/dev/null", "-w",
                    "%{http_code}", "\(server)/version",
                ])
            #expect(["200", "401", "403"].contains(https.output), "https_proxy: \(https.output) \(https.error)")
            // An unknown name: the proxy says so (SOCKS "host unreachable", HTTP 502 with the reason).
            let missing = try await workstation.run(
                asNobody + ["curl", "-s", "-m", "10", "-x", "http://127.0.0.1:2223", "http://nothing-here:8080"])
            #expect(missing.output.contains("name not found"), "\(missing.output)")

            // DNS through UDP ASSOCIATE, to the nameserver the cluster's pods use (the tomcat pod's).
            let nameserver = try #require(
                try String(contentsOfFile: "/etc/netns/\(lab.name)-pod-1/resolv.conf", encoding: .utf8)
                    .split(separator: "\n").first { $0.hasPrefix("nameserver ") }?.split(separator: " ").last)
            let udp = try await workstation.run(
                asNobody + ["/usr/bin/python3", "-c", Self.socksUDPQuery, String(nameserver)])
            #expect(udp.output == "\(clusterIP)\n", "\(udp.error)")
            // UDP ASSOCIATE to a name (socks5h): a UDP echo service by its short name, resolved in the cluster; the
            // answer comes back "from" the name the client used.
            let none = try await workstation.run(asNobody + ["/usr/bin/python3", "-c", Self.socksUDPEcho, "udpecho"])
            #expect(none.status != 0 && none.error.contains("timed out"), "\(none.output) \(none.error)")
            var echo = Container(name: "echo", image: "python:3")
            echo.command = ["python3", "-c", Self.udpEchoServer]
            _ = try await lab.client.create(
                Pod(
                    metadata: ObjectMeta(name: "udpecho", labels: ["app": "udpecho"]), spec: PodSpec(containers: [echo])
                ))
            _ = try await lab.client.create(
                Service(
                    metadata: ObjectMeta(name: "udpecho"),
                    spec: Service.Spec(
                        selector: ["app": "udpecho"],
                        ports: [ServicePort(port: 9999, targetPort: .int(9999), protocol: "UDP")])))
            _ = try await lab.waitReady("udpecho")
            // Ready says only that the process runs (it declares no TCP port to probe): its UDP socket, and the lab's
            // rules for the new Service, follow within moments, as on a real cluster. A try that times out is
            // made again, for up to 15 s.
            let expected = "udpecho:9999 echo 1\nudpecho:9999 echo 2\n"
            let started = ContinuousClock.now
            var echoed = try await workstation.run(asNobody + ["/usr/bin/python3", "-c", Self.socksUDPEcho, "udpecho"])
            while echoed.output != expected, ContinuousClock.now - started < .seconds(15) {
                echoed = try await workstation.run(asNobody + ["/usr/bin/python3", "-c", Self.socksUDPEcho, "udpecho"])
            }
            #expect(echoed.output == expected, "\(echoed.output) \(echoed.error)")

            // One connect per state directory: the second names the first's pid and changes nothing.
            let second = try await workstation.run(ktctlAsNobody(2224), timeout: 30)
            #expect(second.status != 0)
            #expect(second.error.contains("another ktctl connect is running (pid"), "\(second.error)")

            connect.signalProgram(SIGINT)
            #expect(await connect.waitForOutput("ktctl: disconnected", timeout: 10), "\(connect.output)")
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

    /// Echoes UDP datagrams on :9999, prefixed with "echo ".
    static let udpEchoServer = """
        import socket
        server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        server.bind(("0.0.0.0", 9999))
        while True:
            data, peer = server.recvfrom(65535)
            server.sendto(b"echo " + data, peer)
        """

    /// The start of a SOCKS5 UDP ASSOCIATE client of the proxy on 127.0.0.1:2223: `control` is the TCP connection that
    /// keeps the association, `relay` the address its datagrams go to.
    static let socksUDPAssociate = """
        import socket, struct, sys
        control = socket.create_connection(("127.0.0.1", 2223), timeout=10)
        control.sendall(b"\\x05\\x01\\x00")
        assert control.recv(2) == b"\\x05\\x00"
        control.sendall(b"\\x05\\x03\\x00\\x01" + bytes(6))
        reply = control.recv(10)
        assert reply[1] == 0, reply
        relay = (socket.inet_ntoa(reply[4:8]), struct.unpack(">H", reply[8:10])[0])
        """

    /// A SOCKS5 UDP ASSOCIATE client sending "1" and "2" to the name argv[1], port 9999; prints each answer as
    /// `source:port payload`. Fails (socket timeout) when no answer comes within 3 s.
    static let socksUDPEcho = """
        \(socksUDPAssociate)
        name = sys.argv[1].encode()
        header = b"\\x00\\x00\\x00\\x03" + bytes([len(name)]) + name + struct.pack(">H", 9999)
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        udp.settimeout(3)
        for payload in (b"1", b"2"):
            udp.sendto(header + payload, relay)
            answer, _ = udp.recvfrom(4096)
            assert answer[:4] == b"\\x00\\x00\\x00\\x03", answer
            length = answer[4]
            source = answer[5:5 + length].decode()
            port = struct.unpack(">H", answer[5 + length:7 + length])[0]
            print("%s:%d %s" % (source, port, answer[7 + length:].decode()))
        """

    /// A SOCKS5 UDP ASSOCIATE client asking argv[1]:53 for tomcat.default.svc.cluster.local; prints the A record.
    static let socksUDPQuery = """
        \(socksUDPAssociate)
        name = b"".join(bytes([len(p)]) + p.encode() for p in "tomcat.default.svc.cluster.local".split("."))
        query = struct.pack(">HHHHHH", 0x4b54, 0x0100, 1, 0, 0, 0) + name + b"\\x00\\x00\\x01\\x00\\x01"
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        udp.settimeout(5)
        udp.sendto(b"\\x00\\x00\\x00\\x01" + socket.inet_aton(sys.argv[1]) + struct.pack(">H", 53) + query, relay)
        answer, _ = udp.recvfrom(4096)
        assert answer[:4] == b"\\x00\\x00\\x00\\x01", answer
        print(socket.inet_ntoa(answer[-4:]))
        """
}
