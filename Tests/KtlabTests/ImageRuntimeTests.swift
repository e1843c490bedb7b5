import Foundation
import KubeKit
import LabKit
import LabTestSupport
import NamespaceTestSupport
import Testing

/// `make images` and ktlab's crun runtime: the archives hold only what the binary needs, and a pod naming a local
/// image runs it under crun as the pod says (user, read-only root, capabilities, volumes, env), `kubectl exec` runs
/// inside it, and nothing of it is left after `ktlab down`, even when the lab's server was killed.
@Suite(.serialized, .enabled(if: TestNamespace.unavailableReason == nil)) struct ImageRuntimeTests {
    static var kubectl: String? { RunningLab.tool("kubectl") }

    /// Runs a shell script (bash) and returns its output, failing the test with its errors.
    static func sh(_ script: String, sourceLocation: SourceLocation = #_sourceLocation) async throws -> String {
        let result = try await TestNamespace.run(["bash", "-euo", "pipefail", "-c", script], timeout: 120)
        #expect(result.status == 0, "\(script)\n\(result.error)", sourceLocation: sourceLocation)
        return result.output
    }

    @Test(arguments: [("kt-shadow", 40_000_000), ("kt-router", 60_000_000)])
    func makeImagesWritesMinimalArchives(name: String, limit: Int) async throws {
        let archive = try #require(builtImage(name), "no .build/images/\(name).tar: run `make images` first")
        let config = try JSONValue(
            json: Data(try await Self.sh("skopeo inspect --config oci-archive:\(archive)").utf8))
        #expect(config["config"]?["User"]?.stringValue == "65532:65532")
        #expect(config["config"]?["Entrypoint"] == .array([.string("/usr/local/bin/\(name)")]))
        let manifest = try JSONValue(json: Data(try await Self.sh("skopeo inspect --raw oci-archive:\(archive)").utf8))
        let layers = manifest["layers"]?.arrayValue ?? []
        #expect(layers.count == 1)
        let compressed = layers.reduce(0) { $0 + ($1["size"]?.intValue ?? 0) }
        print("\(name): \(compressed) bytes compressed")
        #expect(compressed > 1_000_000 && compressed <= limit)

        let work = "/tmp/ktimage-\(getpid())-\(name)"
        defer { _ = try? TestNamespace.run(["rm", "-rf", "--one-file-system", work]) }
        let listing = try await Self.sh(
            """
            mkdir -p \(work)/layout && tar -xf \(archive) -C \(work)/layout
            digest=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["layers"][0]["digest"][7:])' \
                \(work)/layout/blobs/sha256/$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["manifests"][0]["digest"][7:])' \(work)/layout/index.json))
            tar -tzf \(work)/layout/blobs/sha256/$digest
            """)
        let allowed = [
            "usr/local/bin/\(name)", "etc/passwd", "etc/group", "lib64/ld-linux-x86-64.so.2",
        ]
        let files = listing.split(separator: "\n").map { $0.hasPrefix("./") ? String($0.dropFirst(2)) : String($0) }
            .filter { !$0.isEmpty && $0 != "." && !$0.hasSuffix("/") }
        #expect(files.contains("usr/local/bin/\(name)"), "the layer does not hold the binary: \(files)")
        let unexpected = files.filter { path in
            !allowed.contains(path) && !(path.hasPrefix("lib/x86_64-linux-gnu/") && path.contains(".so"))
                && !(path.hasPrefix("usr/share/doc/") && path.hasSuffix("/copyright"))
        }
        #expect(unexpected.isEmpty, "files in the image beyond the binary, its libraries and licences: \(unexpected)")
        // umoci unpack, then ldd's own question to the image's loader inside the image: every library is there.
        let ref = try await Self.sh(
            "python3 -c 'import json; print(json.load(open(\"\(work)/layout/index.json\"))[\"manifests\"][0][\"annotations\"][\"org.opencontainers.image.ref.name\"])'"
        ).trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(ref == "\(name):0.1.0")
        _ = try await Self.sh("umoci unpack --image \(work)/layout:\(ref) \(work)/bundle >/dev/null")
        let ldd = try await Self.sh(
            "chroot \(work)/bundle/rootfs /lib64/ld-linux-x86-64.so.2 --list /usr/local/bin/\(name)")
        #expect(!ldd.contains("not found"), "\(ldd)")
        for line in ldd.split(separator: "\n") where line.contains("=>") {
            let path = String(line.split(separator: " ")[2])
            #expect(FileManager.default.fileExists(atPath: "\(work)/bundle/rootfs\(path)"), "\(line)")
        }
        let passwd = try String(contentsOfFile: "\(work)/bundle/rootfs/etc/passwd", encoding: .utf8)
        #expect(passwd == "nonroot:x:65532:65532:nonroot:/nonexistent:/usr/sbin/nologin\n")

        // The Dockerfile describes the same image: the same script makes its files, from scratch; the same user,
        // entrypoint, default arguments and port.
        let product = name.replacingOccurrences(of: "kt-", with: "")
        let dockerfile = try String(
            contentsOfFile: "\(repositoryRoot)/deploy/images/\(product)/Dockerfile", encoding: .utf8)
        let lines = dockerfile.split(separator: "\n").map(String.init).filter { !$0.hasPrefix("#") }
        #expect(dockerfile.contains("scripts/image-rootfs.sh \"$bin/\(name)\" \(name) /rootfs"))
        #expect(lines.contains("FROM scratch") && lines.contains("COPY --from=build /rootfs/ /"))
        #expect(lines.contains("USER \(config["config"]?["User"]?.stringValue ?? "")"))
        #expect(lines.contains("ENTRYPOINT [\"/usr/local/bin/\(name)\"]"))
        let command = (config["config"]?["Cmd"]?.arrayValue ?? []).compactMap(\.stringValue)
        let dockerCommand = lines.first { $0.hasPrefix("CMD ") }
        #expect(
            dockerCommand
                == (command.isEmpty ? nil : "CMD [" + command.map { "\"\($0)\"" }.joined(separator: ", ") + "]"))
        let ports = config["config"]?["ExposedPorts"]?.objectValue?.keys.map {
            $0.replacingOccurrences(of: "/tcp", with: "")
        }
        #expect(lines.filter { $0.hasPrefix("EXPOSE ") } == (ports ?? []).map { "EXPOSE \($0)" })
    }

    /// An image of a few coreutils (sleep, id, touch, cat, env), packed as `make images` packs ours, but with
    /// `User` unset so that pods choose. Returns the archive.
    static func toolsImage(in work: String) async throws -> String {
        let scripts = "\(repositoryRoot)/scripts"
        _ = try await sh(
            """
            mkdir -p \(work)
            umoci init --layout \(work)/layout
            umoci new --image \(work)/layout:ktlab-test/tools:1
            umoci unpack --image \(work)/layout:ktlab-test/tools:1 \(work)/bundle >/dev/null
            for tool in sleep id touch cat env; do
                \(scripts)/image-rootfs.sh /usr/bin/$tool $tool \(work)/bundle/rootfs
            done
            umoci repack --image \(work)/layout:ktlab-test/tools:1 \(work)/bundle
            umoci config --image \(work)/layout:ktlab-test/tools:1 --config.user nonroot \
                --config.entrypoint /usr/local/bin/sleep --config.cmd 600 --config.env PATH=/usr/local/bin
            umoci gc --layout \(work)/layout
            tar -C \(work)/layout -cf \(work)/tools.tar oci-layout index.json blobs
            """)
        return "\(work)/tools.tar"
    }

    @Test(.enabled(if: kubectl != nil)) func podsRunLocalImagesUnderCrun() async throws {
        let kubectl = try #require(Self.kubectl)
        let work = "/tmp/ktimage-\(getpid())-tools"
        defer { _ = try? TestNamespace.run(["rm", "-rf", "--one-file-system", work]) }
        let archive = try await Self.toolsImage(in: work)
        var serverPID: Int32 = 0
        let name = try await RunningLab.with { lab in
            // A bad archive is refused and changes nothing; the good one loads.
            let bad = try await TestNamespace.run([
                "env", lab.ktlab, "image", "load", "--name", lab.name, "/etc/hostname",
            ])
            #expect(bad.status != 0 && bad.error.contains("is not an OCI image archive"), "\(bad.error)")
            #expect(bad.error.contains("nothing was loaded"))
            let load = try await TestNamespace.run(["env", lab.ktlab, "image", "load", "--name", lab.name, archive])
            #expect(load.status == 0 && load.output.contains("loaded ktlab-test/tools:1 sha256:"), "\(load.error)")
            let list = try await TestNamespace.run(["env", lab.ktlab, "image", "list", "--name", lab.name])
            #expect(list.output.contains("ktlab-test/tools:1"), "\(list.output)")

            // 1. As the pod says: a user, a read-only root, no capabilities, no privilege escalation, an emptyDir.
            let locked = """
                {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "locked"},
                 "spec": {"securityContext": {"runAsUser": 4321, "runAsGroup": 4321, "supplementalGroups": [777]},
                  "volumes": [{"name": "data", "emptyDir": {}}],
                  "containers": [{"name": "main", "image": "ktlab-test/tools:1", "env": [{"name": "FOO", "value": "bar"}],
                   "volumeMounts": [{"name": "data", "mountPath": "/data"}],
                   "securityContext": {"readOnlyRootFilesystem": true, "allowPrivilegeEscalation": false,
                                       "capabilities": {"drop": ["ALL"]}}}]}}
                """
            // 2. As the image says: its user (by name), a writable root, the default capabilities.
            let open = """
                {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "open"},
                 "spec": {"containers": [{"name": "main", "image": "docker.io/ktlab-test/tools:1"}]}}
                """
            // 3. Root in a writable root, with one capability added to the default set.
            let rooted = """
                {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "rooted"},
                 "spec": {"securityContext": {"runAsUser": 0},
                  "containers": [{"name": "main", "image": "ktlab-test/tools:1",
                   "securityContext": {"capabilities": {"add": ["NET_ADMIN"], "drop": ["MKNOD"]}}}]}}
                """
            for (file, manifest) in [("locked", locked), ("open", open), ("rooted", rooted)] {
                try manifest.write(toFile: "\(work)/\(file).json", atomically: true, encoding: .utf8)
                let created = try await lab.kubectl(kubectl, ["apply", "-f", "\(work)/\(file).json"])
                #expect(created.status == 0, "\(created.error)")
            }
            _ = try await lab.waitReady("locked")
            _ = try await lab.waitReady("open")
            _ = try await lab.waitReady("rooted")
            func exec(_ pod: String, _ command: [String]) async throws -> TestNamespace.CommandResult {
                try await lab.kubectl(kubectl, ["exec", pod, "--"] + command)
            }
            #expect(try await exec("locked", ["/usr/local/bin/id"]).output == "uid=4321 gid=4321 groups=4321,777\n")
            let readOnly = try await exec("locked", ["/usr/local/bin/touch", "/x"])
            #expect(readOnly.status != 0 && readOnly.error.contains("Read-only file system"), "\(readOnly.error)")
            #expect(try await exec("locked", ["/usr/local/bin/touch", "/data/written"]).status == 0)
            let status = try await exec("locked", ["/usr/local/bin/cat", "/proc/1/status"]).output
            #expect(status.contains("CapEff:\t0000000000000000") && status.contains("NoNewPrivs:\t1"), "\(status)")
            #expect(status.contains("Uid:\t4321\t4321\t4321\t4321"), "\(status)")
            let env = try await exec("locked", ["/usr/local/bin/env"])
            let environment = env.output
            #expect(
                environment.contains("FOO=bar\n") && environment.contains("PATH=/usr/local/bin\n"),
                "\(environment) (status \(env.status), stderr \(env.error))")
            #expect(environment.contains("HOSTNAME=locked\n"), "\(environment)")
            let hostname = try await exec("locked", ["/usr/local/bin/cat", "/etc/hostname"]).output
            #expect(hostname == "locked\n")

            #expect(
                try await exec("open", ["/usr/local/bin/id"]).output
                    == "uid=65532(nonroot) gid=65532(nonroot) groups=65532(nonroot)\n")
            let openStatus = try await exec("open", ["/usr/local/bin/cat", "/proc/1/status"]).output
            // Non-root: the default set is bounding only; nothing effective.
            #expect(openStatus.contains("CapBnd:\t00000000a80425fb"), "\(openStatus)")
            #expect(openStatus.contains("CapEff:\t0000000000000000"), "\(openStatus)")
            #expect(try await exec("rooted", ["/usr/local/bin/touch", "/x"]).status == 0)
            let rootedStatus = try await exec("rooted", ["/usr/local/bin/cat", "/proc/1/status"]).output
            // The default set without CAP_MKNOD (bit 27), with CAP_NET_ADMIN (bit 12), effective for root.
            #expect(rootedStatus.contains("CapEff:\t00000000a00435fb"), "\(rootedStatus)")
            #expect(rootedStatus.contains("NoNewPrivs:\t0"), "\(rootedStatus)")

            // Which way each pod ran: events, and crun as the parent of the container's process.
            let described = try await lab.kubectl(kubectl, ["describe", "pod", "locked"]).output
            #expect(described.contains("under crun (OCI runtime) as uid 4321 gid 4321, root file system read-only"))
            #expect(described.contains("Container image \"ktlab-test/tools:1\" already present on machine"))
            let crun = try await TestNamespace.run(["pgrep", "-f", "^/usr/bin/crun --root /run/ktlab/\(lab.name)/crun"])
            let crunPIDs = crun.output.split(separator: "\n").compactMap { Int32($0) }
            #expect(crunPIDs.count == 3, "\(crun.output)")
            for pid in crunPIDs {
                let child = try await TestNamespace.run(["pgrep", "-P", "\(pid)"])
                let childPID = try #require(Int32(child.output.trimmingCharacters(in: .whitespacesAndNewlines)))
                #expect(
                    try String(contentsOfFile: "/proc/\(childPID)/cmdline", encoding: .utf8)
                        == "/usr/local/bin/sleep\u{0}600\u{0}")
            }
            let catalog = try await lab.kubectl(
                kubectl, ["run", "plain", "--image=debian", "--command", "--", "sleep", "600"])
            #expect(catalog.status == 0)
            _ = try await lab.waitReady("plain")
            #expect(
                try await lab.kubectl(kubectl, ["describe", "pod", "plain"]).output.contains(
                    "as a process from ktlab's catalog"))

            // An image that is neither local nor in the catalog: ErrImagePull that lists what the lab can run.
            _ = try await lab.kubectl(kubectl, ["run", "missing", "--image=example.com/nothing:1"])
            var waiting = ""
            let deadline = ContinuousClock.now + .seconds(10)
            while !waiting.contains("ErrImagePull"), ContinuousClock.now < deadline {
                waiting = try await lab.kubectl(
                    kubectl, ["get", "pod", "missing", "-o", "jsonpath={.status.containerStatuses[0].state.waiting}"]
                ).output
                try await Task.sleep(for: .milliseconds(100))
            }
            #expect(waiting.contains("ErrImagePull"), "\(waiting)")
            #expect(waiting.contains("local images: ktlab-test/tools:1"), "\(waiting)")
            #expect(waiting.contains("ktlab image load"), "\(waiting)")

            // A deleted pod's container is gone from crun (sleep, as PID 1, ignores SIGTERM: a short grace period).
            let lockedID = try await lab.kubectl(
                kubectl, ["get", "pod", "locked", "-o", "jsonpath={.status.containerStatuses[0].containerID}"]
            ).output
            #expect(lockedID.hasPrefix("crun://"), "\(lockedID)")
            #expect(try await lab.kubectl(kubectl, ["delete", "pod", "locked", "--grace-period=1"]).status == 0)
            let left = try await TestNamespace.run(["crun", "--root", "/run/ktlab/\(lab.name)/crun", "list", "-q"])
            #expect(!left.output.contains(lockedID.dropFirst("crun://".count)), "\(left.output)")
            #expect(left.output.split(separator: "\n").count == 2, "\(left.output)")

            // The server killed with a container running: `down` (in RunningLab.with) still removes it.
            serverPID = try #require(LabState.read(lab.name)?.serverPID)
            kill(serverPID, SIGKILL)
            try await Task.sleep(for: .milliseconds(300))
        }
        try expectLabGone(name)
        #expect(try await TestNamespace.run(["pgrep", "-f", "/run/ktlab/\(name)/"]).output.isEmpty)
        #expect(try await TestNamespace.run(["pgrep", "-x", "sleep", "-U", "4321,65532"]).output.isEmpty)
        let mounts = try String(contentsOfFile: "/proc/self/mountinfo", encoding: .utf8)
        #expect(!mounts.contains("/run/ktlab/\(name)"))
    }
}
