import Foundation
import Glibc

/// crun, the OCI runtime the lab runs images with (Debian's package). Its state lives under the lab's directory
/// (`--root`), so `ktlab down` finds every container a crashed server left. The lab does not limit resources:
/// `--cgroup-manager=disabled`. On a host whose cgroups are mixed v1 and v2 ("hybrid"), which crun refuses, each
/// call runs in a private mount namespace of its own without the v2 mount, so that crun sees cgroup v1 only; the
/// host's mounts are never touched.
public struct ContainerRuntime: Sendable {
    /// crun's state directory.
    public var root: String

    public init(root: String) {
        self.root = root
    }

    public static var isInstalled: Bool { Host.findExecutable("crun") != nil }

    /// argv (absolute executable first) for `crun <arguments>`.
    public func command(_ arguments: [String]) -> [String] {
        let crun = Host.findExecutable("crun") ?? "/usr/bin/crun"
        let base = [crun, "--root", root, "--cgroup-manager=disabled"] + arguments
        guard Self.hybridCgroups, let unshare = Host.findExecutable("unshare") else { return base }
        return [
            unshare, "--mount", "--propagation", "private", "--", "/bin/sh", "-c",
            "umount -l /sys/fs/cgroup/unified 2>/dev/null; exec \"$0\" \"$@\"",
        ] + base
    }

    /// cgroup v1 with the v2 hierarchy mounted beside it at /sys/fs/cgroup/unified.
    static var hybridCgroups: Bool {
        guard let mounts = try? String(contentsOfFile: "/proc/self/mounts", encoding: .utf8) else { return false }
        return mounts.split(separator: "\n").contains { line in
            let fields = line.split(separator: " ")
            return fields.count > 2 && fields[1] == "/sys/fs/cgroup/unified" && fields[2] == "cgroup2"
        }
    }

    /// The process that runs a container in the foreground: `crun run` stays its parent, passes signals on to
    /// it, exits with its status and removes the container's state when it ends.
    public func runCommand(id: String, bundle: String) -> [String] {
        command(["run", "--bundle", bundle, id])
    }

    /// Sends a signal to the container's main process (`all`: to every process in it).
    public func kill(id: String, signal: String, all: Bool = false) {
        _ = try? Host.run(command(["kill"] + (all ? ["--all"] : []) + [id, signal]), allowFailure: true)
    }

    /// Removes a container, killing what still runs in it.
    public func delete(id: String) {
        _ = try? Host.run(command(["delete", "--force", id]), allowFailure: true)
    }

    /// The containers crun knows in this state directory.
    public func list() -> [String] {
        guard FileManager.default.fileExists(atPath: root),
            let output = try? Host.run(command(["list", "--quiet"]), allowFailure: true)
        else { return [] }
        return output.split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
    }

    /// Kills and removes every container of this state directory (`ktlab down`, a server that stops).
    public func removeAll() {
        for id in list() {
            kill(id: id, signal: "KILL", all: true)
            delete(id: id)
        }
    }
}
