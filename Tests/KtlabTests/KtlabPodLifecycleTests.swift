import Foundation
import KubeKit
import LabKit
import LabTestSupport
import NamespaceTestSupport
import Testing

/// What is left of a lab after `down`: nothing (namespaces, resolv.conf directories, state, server processes,
/// interfaces and nftables tables in the host's namespace).
func expectLabGone(_ name: String, sourceLocation: SourceLocation = #_sourceLocation) throws {
    #expect(!Host.namespaces().contains { $0.hasPrefix("\(name)-") }, sourceLocation: sourceLocation)
    let netns = (try? FileManager.default.contentsOfDirectory(atPath: "/etc/netns")) ?? []
    #expect(!netns.contains { $0.hasPrefix("\(name)-") }, sourceLocation: sourceLocation)
    #expect(!FileManager.default.fileExists(atPath: "\(LabLayout.stateRoot)/\(name)"), sourceLocation: sourceLocation)
    #expect(
        try TestNamespace.run(["pgrep", "-f", "--name \(name)$"]).output.isEmpty, sourceLocation: sourceLocation)
    let links = try TestNamespace.run(["ip", "-br", "link"]).output
    #expect(
        !links.split(separator: "\n").contains { $0.hasPrefix("kt-br") || $0.hasPrefix("ws0") || $0.hasPrefix("vp") },
        sourceLocation: sourceLocation)
    #expect(
        !(try TestNamespace.run(["nft", "list", "tables"]).output.contains("ktlab")), sourceLocation: sourceLocation)
}

/// `ktlab down` after crashes: of `up` while it sets the lab up, and of the lab's server with pods running.
@Suite(.serialized, .enabled(if: TestNamespace.unavailableReason == nil)) struct KtlabCrashTests {
    @Test func downCleansUpAfterKilledUpAndKilledServer() async throws {
        let ktlab = try #require(builtExecutable("ktlab"))
        RunningLab.reapStaleLabs(ktlab)

        // 1. `up` killed (-9) as soon as its node namespace exists, before its API answers.
        let name = RunningLab.uniqueName()
        let up = Process()
        up.executableURL = URL(fileURLWithPath: ktlab)
        up.arguments = ["up", "--name", name]
        up.standardOutput = FileHandle.nullDevice
        up.standardError = FileHandle.nullDevice
        try up.run()
        let deadline = ContinuousClock.now + .seconds(30)
        while !Host.namespaces().contains("\(name)-node"), up.isRunning, ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(5))
        }
        kill(up.processIdentifier, SIGKILL)
        up.waitUntilExit()
        #expect(Host.namespaces().contains("\(name)-node"), "up was killed before it made its namespaces")
        let down = try await TestNamespace.run(["env", ktlab, "down", "--name", name], timeout: 60)
        #expect(down.status == 0, "\(down.output) \(down.error)")
        try expectLabGone(name)

        // 2. The server killed (-9) with a pod running: the pod's process outlives it until `down`.
        let lab = try await RunningLab()
        _ = try await lab.client.create(patternPod("source", bytes: 1))
        _ = try await lab.waitReady("source")
        let podProcesses = try await TestNamespace.run(["ip", "netns", "pids", "\(lab.name)-pod-1"]).output
            .split(separator: "\n").compactMap { Int32($0) }
        #expect(!podProcesses.isEmpty)
        let server = try #require(LabState.read(lab.name)?.serverPID)
        kill(server, SIGKILL)
        try await Task.sleep(for: .milliseconds(200))
        #expect(podProcesses.allSatisfy { kill($0, 0) == 0 })
        let result = await lab.down()
        #expect(result?.status == 0)
        try expectLabGone(lab.name)
        // Killed; gone once whoever inherited them has reaped them.
        func ended(_ pid: Int32) -> Bool {
            kill(pid, 0) != 0 || Kubelet.isZombie(pid)
        }
        #expect(podProcesses.allSatisfy(ended))
    }
}

/// A pod's life as a kubelet runs it: configMap, secret, downwardAPI and emptyDir volumes (waiting for a missing
/// ConfigMap with a FailedMount event), strict field validation, graceful deletion (SIGTERM, Terminating, SIGKILL at
/// the end of the grace period), with kubectl 1.33.
@Suite(.serialized, .enabled(if: TestNamespace.unavailableReason == nil)) struct KtlabPodLifecycleTests {
    static var kubectl: String? { RunningLab.tool("kubectl") }

    static let volumePod = """
        apiVersion: v1
        kind: Pod
        metadata:
          name: vol
          labels: {a: b}
        spec:
          containers:
          - name: main
            image: busybox
            command: ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 0.2; done"]
            volumeMounts:
            - {name: cfg, mountPath: /etc/cfg}
            - {name: cfg, mountPath: /etc/one.conf, subPath: one}
            - {name: sec, mountPath: /etc/sec, readOnly: true}
            - {name: scratch, mountPath: /scratch}
            - {name: info, mountPath: /etc/info}
          - name: side
            image: busybox
            command: ["sh", "-c", "echo shared > scratch/x; sleep 1000"]
            volumeMounts:
            - {name: scratch, mountPath: /scratch}
          volumes:
          - name: cfg
            configMap: {name: app}
          - name: sec
            secret: {secretName: creds, items: [{key: password, path: pw/file, mode: 0400}]}
          - name: scratch
            emptyDir: {}
          - name: info
            downwardAPI:
              items:
              - {path: labels, fieldRef: {fieldPath: metadata.labels}}
              - {path: name, fieldRef: {fieldPath: metadata.name}}
        """

    @Test(.enabled(if: kubectl != nil)) func volumesStrictFieldsAndGracefulDeletion() async throws {
        let kubectl = try #require(Self.kubectl)
        try await RunningLab.with { lab in
            let files = "\(LabLayout.stateRoot)/\(lab.name)/test"
            try FileManager.default.createDirectory(atPath: files, withIntermediateDirectories: true)
            try Self.volumePod.write(toFile: "\(files)/vol.yaml", atomically: true, encoding: .utf8)
            let created = try await lab.kubectl(kubectl, ["create", "-f", "\(files)/vol.yaml"])
            #expect(created.output == "pod/vol created\n", "\(created.error)")

            // The ConfigMap does not exist yet: ContainerCreating, with the kubelet's message and event.
            var waiting: String?
            for _ in 0..<50 where waiting == nil {
                let pod = try await lab.client.get(Pod.self, name: "vol")
                waiting =
                    pod.raw["status"]?["containerStatuses"]?.arrayValue?.first?["state"]?["waiting"]?["message"]?
                    .stringValue
                try await Task.sleep(for: .milliseconds(100))
            }
            #expect(waiting?.contains("configmap \"app\" not found") == true, "\(waiting ?? "no waiting state")")
            let events = try await lab.kubectl(kubectl, ["get", "events"]).output
            #expect(events.contains("FailedMount") && events.contains("pod/vol"), "\(events)")

            _ = try await lab.kubectl(
                kubectl, ["create", "configmap", "app", "--from-literal=one=1", "--from-literal=two=2"])
            _ = try await lab.kubectl(
                kubectl, ["create", "secret", "generic", "creds", "--from-literal=password=s3cret"])
            _ = try await lab.waitReady("vol", timeout: .seconds(15))
            let read = try await lab.kubectl(
                kubectl,
                [
                    "exec", "vol", "-c", "main", "--", "cat", "etc/one.conf", "etc/cfg/two", "etc/sec/pw/file",
                    "etc/info/name",
                ])
            #expect(read.output == "12s3cretvol", "\(read.error)")
            #expect(
                try await lab.kubectl(kubectl, ["exec", "vol", "-c", "main", "--", "cat", "etc/info/labels"]).output
                    == "a=\"b\"")
            // emptyDir: what one container wrote, the other reads.
            #expect(
                try await lab.kubectl(kubectl, ["exec", "vol", "-c", "main", "--", "cat", "scratch/x"]).output
                    == "shared\n")
            let secretFile = "\(LabLayout.stateRoot)/\(lab.name)/pods/default_vol/volumes/sec/pw/file"
            let mode = try FileManager.default.attributesOfItem(atPath: secretFile)[.posixPermissions] as? Int
            #expect(mode == 0o400)

            // Strict field validation (kubectl's default): the server names the unknown field and stores nothing.
            try """
            apiVersion: v1
            kind: ConfigMap
            metadata: {name: bad}
            data: {a: b}
            bogus: 1
            """.write(toFile: "\(files)/bad.yaml", atomically: true, encoding: .utf8)
            let bad = try await lab.kubectl(kubectl, ["create", "-f", "\(files)/bad.yaml"])
            #expect(bad.status != 0)
            #expect(bad.error.contains("strict decoding error: unknown field \"bogus\""), "\(bad.error)")
            #expect(try await lab.kubectl(kubectl, ["get", "configmap", "bad"]).status != 0)

            // Graceful deletion of a pod whose containers end on SIGTERM: gone at once, processes and all.
            let started = ContinuousClock.now
            let deleted = try await lab.kubectl(kubectl, ["delete", "pod", "vol"])
            #expect(deleted.output == "pod \"vol\" deleted\n", "\(deleted.error)")
            #expect(ContinuousClock.now - started < .seconds(3))
            #expect(try await TestNamespace.run(["pgrep", "-f", "echo shared > scratch/x"]).output.isEmpty)
            #expect(try await TestNamespace.run(["pgrep", "-x", "-f", "sleep 1000"]).output.isEmpty)
            #expect(!FileManager.default.fileExists(atPath: "\(LabLayout.stateRoot)/\(lab.name)/pods/default_vol"))

            // One that ignores SIGTERM: Terminating until its grace period ends, then killed.
            let run = try await lab.kubectl(
                kubectl,
                [
                    "run", "stubborn", "--image=busybox", "--", "sh", "-c",
                    "trap '' TERM; while true; do sleep 0.2; done",
                ])
            #expect(run.status == 0, "\(run.error)")
            _ = try await lab.waitReady("stubborn")
            let marked = ContinuousClock.now
            #expect(
                try await lab.kubectl(kubectl, ["delete", "pod", "stubborn", "--grace-period=3", "--wait=false"]).status
                    == 0)
            try await Task.sleep(for: .seconds(1))
            let terminating = try await lab.kubectl(kubectl, ["get", "pod", "stubborn"]).output
            #expect(terminating.contains("Terminating"), "\(terminating)")
            let stubborn = try await lab.client.get(Pod.self, name: "stubborn")
            #expect(stubborn.raw["metadata"]?["deletionGracePeriodSeconds"] == 3)
            let wait = try await lab.kubectl(kubectl, ["wait", "--for=delete", "pod/stubborn", "--timeout=20s"])
            #expect(wait.status == 0, "\(wait.error)")
            let took = ContinuousClock.now - marked
            #expect(took > .milliseconds(2500) && took < .seconds(8), "deletion took \(took)")
            #expect(try await TestNamespace.run(["pgrep", "-f", "trap '' TERM"]).output.isEmpty)
        }
    }
}
