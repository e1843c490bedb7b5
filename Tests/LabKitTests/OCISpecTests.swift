import Foundation
import KubeKit
import Testing

@testable import LabKit

@Suite struct ImageReferenceTests {
    @Test func namesAreCanonical() throws {
        let cases: [(String, String?)] = [
            ("kt-shadow:0.1.0", "docker.io/library/kt-shadow:0.1.0"),
            ("kt-shadow", "docker.io/library/kt-shadow:latest"),
            ("docker.io/library/kt-shadow:0.1.0", "docker.io/library/kt-shadow:0.1.0"),
            ("index.docker.io/kt-shadow:1", "docker.io/library/kt-shadow:1"),
            ("team/kt-shadow:1", "docker.io/team/kt-shadow:1"),
            ("docker.io/kt-shadow:1", "docker.io/library/kt-shadow:1"),
            ("ghcr.io/a/b", "ghcr.io/a/b:latest"),
            ("localhost:5000/kt-shadow:dev", "localhost:5000/kt-shadow:dev"),
            ("registry.example.com:443/x/y:1.2-rc.1", "registry.example.com:443/x/y:1.2-rc.1"),
            (
                "b@sha256:" + String(repeating: "a", count: 64),
                "docker.io/library/b@sha256:" + String(repeating: "a", count: 64)
            ),
            ("", nil), ("a b", nil), ("Upper/case:1", nil), ("a//b", nil), ("a:", nil), ("a@sha256:12", nil),
            ("a:bad/tag", nil),
        ]
        for (text, expected) in cases {
            #expect(ImageReference(text)?.description == expected, "\(text)")
        }
        #expect(ImageReference("docker.io/library/kt-shadow:0.1.0")?.familiar == "kt-shadow:0.1.0")
        #expect(ImageReference("ghcr.io/a/b:1")?.familiar == "ghcr.io/a/b:1")
    }
}

@Suite struct OCISpecTests {
    static func input(
        pod podSecurity: JSONValue = [:], container: JSONValue, image: ImageConfig = ImageConfig(),
        rootfs: String = "/x"
    ) -> OCISpec.Input {
        OCISpec.Input(
            pod: ["metadata": ["name": "web"], "spec": ["securityContext": podSecurity]], container: container,
            image: image, rootfs: rootfs, networkNamespace: "/run/netns/lab-pod-1",
            environment: ["PATH": "/usr/local/sbin:/usr/bin", "HOSTNAME": "web", "FOO": "pod"],
            mounts: [OCISpec.Mount(source: "/v/data", destination: "/data", readOnly: true)])
    }

    @Test func commandAndArgsFollowKubernetes() throws {
        var image = ImageConfig()
        image.entrypoint = ["/bin/server"]
        image.command = ["--port", "80"]
        #expect(try OCISpec.arguments(Self.input(container: [:], image: image)) == ["/bin/server", "--port", "80"])
        #expect(
            try OCISpec.arguments(Self.input(container: ["args": ["--port", "81"]], image: image))
                == ["/bin/server", "--port", "81"])
        // command replaces the entrypoint and drops the image's Cmd.
        #expect(
            try OCISpec.arguments(Self.input(container: ["command": ["/bin/other"]], image: image)) == ["/bin/other"])
        #expect(
            try OCISpec.arguments(Self.input(container: ["command": ["/bin/other"], "args": ["-v"]], image: image))
                == ["/bin/other", "-v"])
        #expect(throws: OCISpec.Refusal.self) { try OCISpec.arguments(Self.input(container: [:])) }
    }

    @Test func usersComeFromThePodThenTheImage() throws {
        let rootfs = FileManager.default.temporaryDirectory.appendingPathComponent("ocispec-\(getpid())").path
        try FileManager.default.createDirectory(atPath: rootfs + "/etc", withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: rootfs) }
        try "root:x:0:0::/root:/bin/sh\nnonroot:x:65532:65533::/:/sbin/nologin\n".write(
            toFile: rootfs + "/etc/passwd", atomically: true, encoding: .utf8)
        try "root:x:0:\nstaff:x:50:\n".write(toFile: rootfs + "/etc/group", atomically: true, encoding: .utf8)
        var image = ImageConfig()
        image.entrypoint = ["/a"]
        image.user = "nonroot"
        var identity = try OCISpec.user(Self.input(container: [:], image: image, rootfs: rootfs))
        #expect(identity.uid == 65532 && identity.gid == 65533)
        image.user = "nonroot:staff"
        identity = try OCISpec.user(Self.input(container: [:], image: image, rootfs: rootfs))
        #expect(identity.uid == 65532 && identity.gid == 50)
        image.user = "1000:1001"
        identity = try OCISpec.user(Self.input(container: [:], image: image, rootfs: rootfs))
        #expect(identity.uid == 1000 && identity.gid == 1001)
        // The pod's runAsUser wins, with the group from the image's passwd unless runAsGroup is given; the
        // container's securityContext wins over the pod's.
        identity = try OCISpec.user(
            Self.input(
                pod: ["runAsUser": 65532, "supplementalGroups": [5, 6], "fsGroup": 7],
                container: ["securityContext": ["runAsGroup": 9]], image: image, rootfs: rootfs))
        #expect(identity.uid == 65532 && identity.gid == 9 && identity.additional == [5, 6, 7])
        image.user = "ghost"
        #expect(throws: OCISpec.Refusal.self) {
            try OCISpec.user(Self.input(container: [:], image: image, rootfs: rootfs))
        }
        image.user = ""
        let refusal = #expect(throws: OCISpec.Refusal.self) {
            try OCISpec.user(Self.input(pod: ["runAsNonRoot": true], container: [:], image: image, rootfs: rootfs))
        }
        #expect(refusal?.description == "container has runAsNonRoot and image will run as root")
    }

    @Test func capabilitiesStartFromContainerdsDefault() {
        #expect(OCISpec.capabilities(Self.input(container: [:])) == OCISpec.defaultCapabilities)
        #expect(
            OCISpec.capabilities(Self.input(container: ["securityContext": ["capabilities": ["drop": ["ALL"]]]]))
                .isEmpty)
        #expect(
            OCISpec.capabilities(
                Self.input(container: ["securityContext": ["capabilities": ["drop": ["all"], "add": ["NET_ADMIN"]]]]))
                == ["CAP_NET_ADMIN"])
        let dropped = OCISpec.capabilities(
            Self.input(container: ["securityContext": ["capabilities": ["drop": ["CAP_MKNOD", "NET_RAW"]]]]))
        #expect(!dropped.contains("CAP_MKNOD") && !dropped.contains("CAP_NET_RAW") && dropped.count == 12)
        #expect(
            OCISpec.capabilities(Self.input(container: ["securityContext": ["privileged": true]]))
                == OCISpec.allCapabilities)
    }

    @Test func theSpecCarriesThePod() throws {
        var image = ImageConfig()
        image.entrypoint = ["/usr/local/bin/kt-shadow"]
        image.environment = ["PATH=/usr/local/bin", "FOO=image", "LANG=C"]
        let spec = try OCISpec.spec(
            Self.input(
                pod: [
                    "runAsUser": 65532, "runAsGroup": 65532,
                    "sysctls": [["name": "net.ipv4.ping_group_range", "value": "65532 65532"]],
                ],
                container: [
                    "workingDir": "/srv",
                    "securityContext": [
                        "readOnlyRootFilesystem": true, "allowPrivilegeEscalation": false,
                        "capabilities": ["drop": ["ALL"]],
                    ],
                ], image: image))
        #expect(spec["root"] == ["path": "/x", "readonly": true])
        #expect(spec["hostname"] == "web")
        let process = try #require(spec["process"])
        #expect(process["user"] == ["uid": 65532, "gid": 65532, "additionalGids": []])
        #expect(process["noNewPrivileges"] == true)
        #expect(process["cwd"] == "/srv")
        #expect(process["capabilities"]?["effective"] == [] && process["capabilities"]?["ambient"] == [])
        // The image's PATH stays (the kubelet's default gives way); the pod's variables win over the image's.
        #expect(process["env"] == ["PATH=/usr/local/bin", "FOO=pod", "LANG=C", "HOSTNAME=web"])
        #expect(spec["linux"]?["sysctl"] == ["net.ipv4.ping_group_range": "65532 65532"])
        let namespaces = spec["linux"]?["namespaces"]?.arrayValue ?? []
        #expect(namespaces.contains(["type": "network", "path": "/run/netns/lab-pod-1"]))
        #expect(namespaces.map { $0["type"]?.stringValue } == ["pid", "ipc", "uts", "mount", "network"])
        let mounts = spec["mounts"]?.arrayValue ?? []
        #expect(
            mounts.last
                == [
                    "destination": "/data", "type": "bind", "source": "/v/data",
                    "options": ["rbind", "ro", "nosuid", "nodev"],
                ])
        #expect(mounts.contains { $0["destination"] == "/proc" && $0["type"] == "proc" })
    }
}
