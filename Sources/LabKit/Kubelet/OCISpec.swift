import Foundation
import KubeKit

/// The OCI runtime spec (`config.json`) for one container of a pod, made from the pod as a kubelet and containerd
/// would: the image's entrypoint and command under the pod's `command` and `args`, the user, the root file system
/// read-only or not, capabilities, `allowPrivilegeEscalation`, the environment, the pod's volumes, its network
/// namespace and namespaced sysctls. Pure: the kubelet writes what this returns.
public enum OCISpec {
    /// A bind mount: a host path at a path in the container.
    public struct Mount: Sendable, Equatable {
        public var source: String
        public var destination: String
        public var readOnly: Bool
        public init(source: String, destination: String, readOnly: Bool) {
            self.source = source
            self.destination = destination
            self.readOnly = readOnly
        }
    }

    /// What the spec is made from besides the pod.
    public struct Input: Sendable {
        public var pod: JSONValue
        public var container: JSONValue
        public var image: ImageConfig
        /// The unpacked image (for user names in its /etc/passwd and /etc/group, and as the root).
        public var rootfs: String
        public var networkNamespace: String
        /// The kubelet's variables (the pod's `env`, resolved), which win over the image's.
        public var environment: [String: String]
        public var mounts: [Mount]

        public init(
            pod: JSONValue, container: JSONValue, image: ImageConfig, rootfs: String, networkNamespace: String,
            environment: [String: String], mounts: [Mount]
        ) {
            self.pod = pod
            self.container = container
            self.image = image
            self.rootfs = rootfs
            self.networkNamespace = networkNamespace
            self.environment = environment
            self.mounts = mounts
        }
    }

    /// Why a container cannot be made as its pod asks (the pod gets CreateContainerConfigError).
    public struct Refusal: Error, CustomStringConvertible, Sendable {
        public var description: String
    }

    /// What containerd gives a container that asks for nothing else.
    public static let defaultCapabilities = [
        "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW", "CAP_SETGID",
        "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_KILL",
        "CAP_AUDIT_WRITE",
    ]

    /// Every capability Linux 6 knows, for `add: [ALL]` and privileged containers.
    public static let allCapabilities = [
        "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID", "CAP_KILL", "CAP_SETGID",
        "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE", "CAP_NET_BIND_SERVICE", "CAP_NET_BROADCAST",
        "CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_IPC_LOCK", "CAP_IPC_OWNER", "CAP_SYS_MODULE", "CAP_SYS_RAWIO",
        "CAP_SYS_CHROOT", "CAP_SYS_PTRACE", "CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE",
        "CAP_SYS_RESOURCE", "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE", "CAP_AUDIT_WRITE",
        "CAP_AUDIT_CONTROL", "CAP_SETFCAP", "CAP_MAC_OVERRIDE", "CAP_MAC_ADMIN", "CAP_SYSLOG", "CAP_WAKE_ALARM",
        "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ", "CAP_PERFMON", "CAP_BPF", "CAP_CHECKPOINT_RESTORE",
    ]

    /// A field of the container's `securityContext`, else of the pod's.
    static func security(_ input: Input, _ field: String) -> JSONValue? {
        input.container["securityContext"]?[field] ?? input.pod["spec"]?["securityContext"]?[field]
    }

    /// argv: `command` replaces the image's entrypoint (and then its Cmd is not used), `args` replaces its Cmd.
    public static func arguments(_ input: Input) throws -> [String] {
        let command = input.container["command"]?.arrayValue?.compactMap(\.stringValue)
        let args = input.container["args"]?.arrayValue?.compactMap(\.stringValue)
        let argv: [String]
        if let command, !command.isEmpty {
            argv = command + (args ?? [])
        } else {
            argv = input.image.entrypoint + (args ?? input.image.command)
        }
        guard !argv.isEmpty else {
            throw Refusal(description: "no command: the image has no entrypoint or Cmd and the pod gives none")
        }
        return argv
    }

    /// uid, gid and supplementary groups: runAsUser / runAsGroup, else the image's `User` (numeric, or a name in
    /// the image's /etc/passwd and /etc/group); supplementalGroups and fsGroup are added.
    public static func user(_ input: Input) throws -> (uid: Int64, gid: Int64, additional: [Int64]) {
        var uid: Int64 = 0
        var gid: Int64?
        let imageUser = input.image.user
        if !imageUser.isEmpty {
            let parts = imageUser.split(separator: ":", maxSplits: 1).map(String.init)
            if let number = Int64(parts[0]) {
                uid = number
            } else if let entry = passwdEntry(named: parts[0], rootfs: input.rootfs) {
                uid = entry.uid
                gid = entry.gid
            } else {
                throw Refusal(description: "the image's user \"\(parts[0])\" is not in its /etc/passwd")
            }
            if parts.count == 2 {
                if let number = Int64(parts[1]) {
                    gid = number
                } else if let group = groupID(named: parts[1], rootfs: input.rootfs) {
                    gid = group
                } else {
                    throw Refusal(description: "the image's group \"\(parts[1])\" is not in its /etc/group")
                }
            } else if gid == nil {
                gid = passwdEntry(uid: uid, rootfs: input.rootfs)?.gid
            }
        }
        if let runAsUser = security(input, "runAsUser")?.intValue {
            uid = runAsUser
            if security(input, "runAsGroup") == nil { gid = passwdEntry(uid: uid, rootfs: input.rootfs)?.gid }
        }
        if let runAsGroup = security(input, "runAsGroup")?.intValue { gid = runAsGroup }
        if security(input, "runAsNonRoot")?.boolValue == true, uid == 0 {
            throw Refusal(description: "container has runAsNonRoot and image will run as root")
        }
        var additional = (input.pod["spec"]?["securityContext"]?["supplementalGroups"]?.arrayValue ?? [])
            .compactMap(\.intValue)
        if let fsGroup = input.pod["spec"]?["securityContext"]?["fsGroup"]?.intValue { additional.append(fsGroup) }
        return (uid, gid ?? 0, additional)
    }

    /// The capability set after `privileged`, `capabilities.drop` and `capabilities.add` (ALL allowed in both).
    public static func capabilities(_ input: Input) -> [String] {
        let context = input.container["securityContext"]
        if context?["privileged"]?.boolValue == true { return allCapabilities }
        func names(_ key: String) -> [String] {
            (context?["capabilities"]?[key]?.arrayValue ?? []).compactMap(\.stringValue).map { name in
                let upper = name.uppercased()
                return upper == "ALL" || upper.hasPrefix("CAP_") ? upper : "CAP_" + upper
            }
        }
        let drop = names("drop")
        let add = names("add")
        var set = drop.contains("ALL") ? [] : defaultCapabilities.filter { !drop.contains($0) }
        for name in add.contains("ALL") ? allCapabilities : add where !set.contains(name) { set.append(name) }
        return set
    }

    public static func spec(_ input: Input) throws -> JSONValue {
        let argv = try arguments(input)
        let identity = try user(input)
        let capabilities = capabilities(input)
        let readOnly = input.container["securityContext"]?["readOnlyRootFilesystem"]?.boolValue == true
        // allowPrivilegeEscalation defaults to true; false is no_new_privs.
        let noNewPrivileges = input.container["securityContext"]?["allowPrivilegeEscalation"]?.boolValue == false
        var environment: [String: String] = [:]
        var order: [String] = []
        for entry in input.image.environment {
            let parts = entry.split(separator: "=", maxSplits: 1).map(String.init)
            guard let key = parts.first, !key.isEmpty else { continue }
            if environment[key] == nil { order.append(key) }
            environment[key] = parts.count == 2 ? parts[1] : ""
        }
        for key in input.environment.keys.sorted() {
            // The kubelet's default PATH gives way to the image's.
            if key == "PATH", environment["PATH"] != nil,
                input.container["env"]?.arrayValue?.contains(where: {
                    $0["name"]?.stringValue == "PATH"
                }) != true
            {
                continue
            }
            if environment[key] == nil { order.append(key) }
            environment[key] = input.environment[key]
        }
        let workingDirectory =
            input.container["workingDir"]?.stringValue
            ?? (input.image.workingDirectory.isEmpty ? "/" : input.image.workingDirectory)
        let capabilityList = JSONValue.array(capabilities.map { .string($0) })
        var mounts: [JSONValue] = [
            ["destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]],
            [
                "destination": "/dev", "type": "tmpfs", "source": "tmpfs",
                "options": ["nosuid", "strictatime", "mode=755", "size=65536k"],
            ],
            [
                "destination": "/dev/pts", "type": "devpts", "source": "devpts",
                "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"],
            ],
            [
                "destination": "/dev/shm", "type": "tmpfs", "source": "shm",
                "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
            ],
            [
                "destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
                "options": ["nosuid", "noexec", "nodev"],
            ],
            [
                "destination": "/sys", "type": "sysfs", "source": "sysfs",
                "options": ["nosuid", "noexec", "nodev", "ro"],
            ],
        ]
        for mount in input.mounts {
            mounts.append([
                "destination": .string(mount.destination), "type": "bind", "source": .string(mount.source),
                "options": mount.readOnly ? ["rbind", "ro", "nosuid", "nodev"] : ["rbind", "rw", "nosuid", "nodev"],
            ])
        }
        var sysctls: [String: JSONValue] = [:]
        for sysctl in input.pod["spec"]?["securityContext"]?["sysctls"]?.arrayValue ?? [] {
            if let name = sysctl["name"]?.stringValue, let value = sysctl["value"]?.stringValue {
                sysctls[name] = .string(value)
            }
        }
        let hostname = input.pod["metadata"]?["name"]?.stringValue ?? "pod"
        return [
            "ociVersion": "1.0.2",
            "root": ["path": .string(input.rootfs), "readonly": .bool(readOnly)],
            "hostname": .string(String(hostname.prefix(63))),
            "process": [
                "terminal": false,
                "user": [
                    "uid": .int(identity.uid), "gid": .int(identity.gid),
                    "additionalGids": .array(identity.additional.map { .int($0) }),
                ],
                "args": .array(argv.map { .string($0) }),
                "env": .array(order.map { .string("\($0)=\(environment[$0] ?? "")") }),
                "cwd": .string(workingDirectory),
                "capabilities": [
                    "bounding": capabilityList, "effective": capabilityList, "permitted": capabilityList,
                    "inheritable": [], "ambient": [],
                ],
                // No rlimits: the container keeps the lab server's, as a kubelet's containers keep containerd's.
                "noNewPrivileges": .bool(noNewPrivileges),
            ],
            "mounts": .array(mounts),
            "linux": [
                "namespaces": [
                    ["type": "pid"], ["type": "ipc"], ["type": "uts"], ["type": "mount"],
                    ["type": "network", "path": .string(input.networkNamespace)],
                ],
                "sysctl": .object(sysctls),
                "maskedPaths": [
                    "/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
                    "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi", "/sys/firmware",
                ],
                "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"],
            ],
        ]
    }

    static func passwdLines(_ file: String, rootfs: String) -> [[Substring]] {
        // The image's own file, never the host's: a symbolic link in the image is not followed out of it.
        let path = "\(rootfs)/etc/\(file)"
        guard (try? FileManager.default.destinationOfSymbolicLink(atPath: path)) == nil,
            let text = try? String(contentsOfFile: path, encoding: .utf8)
        else { return [] }
        return text.split(separator: "\n").map { $0.split(separator: ":", omittingEmptySubsequences: false) }
    }

    static func passwdEntry(named name: String, rootfs: String) -> (uid: Int64, gid: Int64)? {
        passwdLines("passwd", rootfs: rootfs).first { $0.count >= 4 && $0[0] == name }.flatMap { fields in
            guard let uid = Int64(fields[2]), let gid = Int64(fields[3]) else { return nil }
            return (uid, gid)
        }
    }

    static func passwdEntry(uid: Int64, rootfs: String) -> (uid: Int64, gid: Int64)? {
        passwdLines("passwd", rootfs: rootfs).first { $0.count >= 4 && Int64($0[2]) == uid }.flatMap { fields in
            Int64(fields[3]).map { (uid, $0) }
        }
    }

    static func groupID(named name: String, rootfs: String) -> Int64? {
        passwdLines("group", rootfs: rootfs).first { $0.count >= 3 && $0[0] == name }.flatMap { Int64($0[2]) }
    }
}
