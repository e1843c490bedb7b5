import Foundation
import Glibc
import KubeKit
import Logging

/// `ktlab up`, `down`, `status`: making and removing a lab's namespaces, links, certificates and server process.
public enum LabControl {
    public struct Failure: Error, CustomStringConvertible {
        public var description: String
        public init(_ description: String) { self.description = description }
    }

    /// A lab's name becomes namespace names and a directory under /run/ktlab, so it is a short DNS-like label.
    public static func checkName(_ name: String) throws {
        guard name.range(of: "^[a-z][a-z0-9-]{0,15}$", options: .regularExpression) != nil else {
            throw Failure(
                "lab name \"\(name)\" must be 1-16 lower-case letters, digits or '-', starting with a letter; "
                    + "nothing was changed")
        }
    }

    /// Why ktlab cannot run here, or nil.
    public static func preflight() -> String? {
        if geteuid() != 0 { return "ktlab makes network namespaces and must run as root (try: sudo ktlab ...)" }
        if access("/dev/net/tun", F_OK) != 0 {
            return "/dev/net/tun is missing: this kernel or container has no TUN device"
        }
        for tool in ["ip", "nft", "openssl", "setsid"] where Host.findExecutable(tool) == nil {
            let package =
                ["ip": "iproute2", "nft": "nftables", "openssl": "openssl", "setsid": "util-linux"][tool] ?? tool
            return "`\(tool)` is not installed (apt-get install \(package))"
        }
        return nil
    }

    public static func isAlive(_ pid: Int32?) -> Bool {
        guard let pid, pid > 0 else { return false }
        return kill(pid, 0) == 0
    }

    // MARK: - up

    /// Makes the lab and starts its server (`serveCommand` run detached); returns when the API answers.
    public static func up(
        name: String, podCIDR: String, serviceCIDR: String, serveCommand: [String], progress: (String) -> Void
    ) async throws -> LabLayout {
        if let reason = preflight() { throw Failure(reason) }
        try checkName(name)
        if let existing = LabState.read(name) {
            if isAlive(existing.serverPID) {
                throw Failure(
                    "lab \"\(name)\" is already up (server pid \(existing.serverPID ?? 0)); `ktlab down --name \(name)` first"
                )
            }
            progress("lab \"\(name)\" has state from an earlier run that is not running; removing it first")
            try down(name: name, progress: progress)
        }
        // Choosing a slot and recording it happen under one lock, so that two `up`s at once never share a slot.
        try FileManager.default.createDirectory(atPath: LabLayout.stateRoot, withIntermediateDirectories: true)
        let lock = open("\(LabLayout.stateRoot)/.lock", O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        guard lock >= 0 else { throw Failure("cannot open \(LabLayout.stateRoot)/.lock: errno \(errno)") }
        flock(lock, LOCK_EX)
        let layout: LabLayout
        do {
            defer {
                flock(lock, LOCK_UN)
                close(lock)
            }
            let used = Set(LabState.all().map(\.layout.slot))
            guard let slot = (0..<64).first(where: { !used.contains($0) }) else {
                throw Failure("64 labs are already up")
            }
            layout = LabLayout(name: name, slot: slot, podCIDR: podCIDR, serviceCIDR: serviceCIDR)
            // Recorded before anything is made, so that `down` finds it all after a crash.
            try LabState(layout: layout, serverPID: nil, created: RFC3339.format(Date())).write()
        }
        do {
            progress("creating namespaces \(layout.nodeNamespace) and \(layout.workstationNamespace)")
            try makeNetwork(layout)
            progress("creating the lab CA and certificates")
            try LabPKI.create(layout)
            try LabPKI.kubeconfig(layout, server: "https://127.0.0.1:\(layout.hostPort)")
                .write(toFile: layout.hostKubeconfig, atomically: true, encoding: .utf8)
            try LabPKI.kubeconfig(layout, server: "https://\(layout.nodeLinkAddress):\(layout.apiPort)")
                .write(toFile: layout.workstationKubeconfig, atomically: true, encoding: .utf8)
            chmod(layout.hostKubeconfig, 0o600)
            chmod(layout.workstationKubeconfig, 0o600)
            progress("starting the API server")
            let server = try startServer(layout, command: serveCommand)
            try await waitForAPI(layout, server: server, progress: progress)
        } catch {
            progress("ktlab up failed: \(error); removing what was made")
            if let log = try? String(contentsOfFile: layout.logFile, encoding: .utf8), !log.isEmpty {
                progress("server log:\n" + log.split(separator: "\n").suffix(20).joined(separator: "\n"))
            }
            try? down(name: name, progress: { _ in })
            throw error
        }
        return layout
    }

    static func makeNetwork(_ layout: LabLayout) throws {
        let node = layout.nodeNamespace
        let ws = layout.workstationNamespace
        for namespace in [node, ws] {
            try Host.run(["ip", "netns", "add", namespace])
            try Host.run(["ip", "-n", namespace, "link", "set", "lo", "up"])
        }
        // The node: a bridge for the pods, forwarding on.
        // Its MAC set explicitly: a bridge with a kernel-chosen MAC takes its lowest port's, so it changed whenever a
        // pod with a lower one came or went, and every pod's ARP entry for the gateway pointed nowhere until it was
        // probed again (~10 s of lost DNS and Service traffic, the lab's old "DNS flake").
        let mac =
            "02:6b:74:"
            + (0..<3).map { _ in String(format: "%02x", UInt8.random(in: 0...255)) }.joined(
                separator: ":")
        try Host.run([
            "ip", "-n", node, "link", "add", LabLayout.bridgeName, "address", mac, "type", "bridge",
        ])
        try Host.run(["ip", "-n", node, "addr", "add", "\(layout.bridgeAddress)/24", "dev", LabLayout.bridgeName])
        try Host.run(["ip", "-n", node, "link", "set", LabLayout.bridgeName, "up"])
        try Host.run(["ip", "netns", "exec", node, "sysctl", "-qw", "net.ipv4.ip_forward=1"])
        // The workstation: one link to the node and nothing else (no route to pods or services).
        try Host.run(["ip", "-n", node, "link", "add", "ws0", "type", "veth", "peer", "name", "eth0", "netns", ws])
        try Host.run(["ip", "-n", node, "addr", "add", "\(layout.nodeLinkAddress)/\(layout.linkPrefix)", "dev", "ws0"])
        try Host.run([
            "ip", "-n", ws, "addr", "add", "\(layout.workstationLinkAddress)/\(layout.linkPrefix)", "dev", "eth0",
        ])
        try Host.run(["ip", "-n", node, "link", "set", "ws0", "up"])
        try Host.run(["ip", "-n", ws, "link", "set", "eth0", "up"])
        let etc = "/etc/netns/\(ws)"
        try FileManager.default.createDirectory(atPath: etc, withIntermediateDirectories: true)
        try
            "# ktlab workstation \(layout.name): the lab node answers non-cluster names\nnameserver \(layout.nodeLinkAddress)\n"
            .write(toFile: "\(etc)/resolv.conf", atomically: true, encoding: .utf8)
    }

    /// Starts the server in a session of its own (through `setsid`) and returns the pid of what was started.
    static func startServer(_ layout: LabLayout, command: [String]) throws -> Int32 {
        let log = open(layout.logFile, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o644)
        guard log >= 0 else { throw Failure("cannot open \(layout.logFile): errno \(errno)") }
        defer { close(log) }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: Host.findExecutable("setsid") ?? "/usr/bin/setsid")
        process.arguments = command
        process.standardInput = FileHandle.nullDevice
        process.standardOutput = FileHandle(fileDescriptor: log, closeOnDealloc: false)
        process.standardError = FileHandle(fileDescriptor: log, closeOnDealloc: false)
        try process.run()
        return process.processIdentifier
    }

    static func waitForAPI(_ layout: LabLayout, server: Int32, progress: (String) -> Void) async throws {
        let access = try Kubeconfig.load(explicitPath: layout.hostKubeconfig, environment: [:]).access()
        let client = try KubeClient(access: access, retry: .init(attempts: 1, requestTimeout: .seconds(2)))
        defer { Task { await client.shutdown() } }
        let deadline = ContinuousClock.now + .seconds(30)
        while ContinuousClock.now < deadline {
            // `setsid` may fork, so the server's own pid is the one it records; before that, a start-up error
            // shows in its log (it exits with "Error: ...").
            var status: Int32 = 0
            _ = waitpid(server, &status, WNOHANG)
            if let state = LabState.read(layout.name), state.serverPID != nil, !isAlive(state.serverPID) {
                throw Failure("the lab server exited (see \(layout.logFile))")
            }
            if let log = try? String(contentsOfFile: layout.logFile, encoding: .utf8), log.contains("Error: ") {
                throw Failure("the lab server could not start (see \(layout.logFile))")
            }
            if (try? await client.send(APIRequest(method: .get, path: "/healthz", verb: "get", subject: "health")))
                != nil
            {
                return
            }
            try await Task.sleep(for: .milliseconds(100))
        }
        throw Failure("the API server did not answer within 30 s (see \(layout.logFile))")
    }

    // MARK: - down

    /// Removes everything the lab made: its server and every process in its namespaces, the namespaces (and their
    /// interfaces and nftables tables with them), `/etc/netns` entries, and its state directory. Safe to repeat.
    public static func down(name: String, progress: (String) -> Void) throws {
        try checkName(name)
        let state = LabState.read(name)
        // The recorded pid, and any server of this lab that had not recorded it yet (an `up` that failed early).
        let servers = Set((state?.serverPID.map { [$0] } ?? []) + serverProcesses(name: name)).filter { isAlive($0) }
        for pid in servers {
            progress("stopping the lab server (pid \(pid))")
            kill(pid, SIGTERM)
        }
        for pid in servers {
            for _ in 0..<50 where isAlive(pid) { usleep(100_000) }
            if isAlive(pid) { kill(pid, SIGKILL) }
        }
        let layout = state?.layout ?? LabLayout(name: name, slot: 0)
        let owned = Host.namespaces().filter(layout.owns(namespace:))
        for namespace in owned {
            progress("removing namespace \(namespace)")
            Host.deleteNamespace(namespace)
        }
        // resolv.conf directories of namespaces that are already gone (a server killed between the two steps).
        for entry in (try? FileManager.default.contentsOfDirectory(atPath: "/etc/netns")) ?? []
        where layout.owns(namespace: entry) {
            try? FileManager.default.removeItem(atPath: "/etc/netns/\(entry)")
        }
        // Containers crun still knows (a server that was killed): their processes, then their state.
        let runtime = ContainerRuntime(root: layout.runtimeDirectory)
        if ContainerRuntime.isInstalled && FileManager.default.fileExists(atPath: layout.runtimeDirectory) {
            for id in runtime.list() { progress("removing container \(id)") }
            runtime.removeAll()
        }
        // Nothing the lab makes is mounted in this namespace (crun mounts inside each container's own); should
        // something be, it is unmounted before its directory goes, never removed through.
        let mounted = mountPoints(under: layout.directory)
        for point in mounted.reversed() {
            progress("unmounting \(point)")
            _ = try? Host.run(["umount", "-l", point], allowFailure: true)
        }
        if !mountPoints(under: layout.directory).isEmpty {
            throw Failure("\(layout.directory) still has mounts in it; it is left in place (see /proc/self/mountinfo)")
        }
        try? FileManager.default.removeItem(atPath: layout.directory)
    }

    /// Mount points at or below `directory`, in the order they were mounted.
    static func mountPoints(under directory: String) -> [String] {
        guard let text = try? String(contentsOfFile: "/proc/self/mountinfo", encoding: .utf8) else { return [] }
        return text.split(separator: "\n").compactMap { line -> String? in
            let fields = line.split(separator: " ")
            guard fields.count > 4 else { return nil }
            // Spaces and other bytes in a path are octal escapes (\040).
            let point = String(fields[4]).replacingOccurrences(of: "\\040", with: " ")
            return point == directory || point.hasPrefix(directory + "/") ? point : nil
        }
    }

    /// Processes running `ktlab serve --name <name>`.
    static func serverProcesses(name: String) -> [Int32] {
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
        return entries.compactMap(Int32.init).filter { pid in
            guard let data = FileManager.default.contents(atPath: "/proc/\(pid)/cmdline") else { return false }
            let arguments = data.split(separator: 0).map { String(decoding: $0, as: UTF8.self) }
            guard let serve = arguments.firstIndex(of: "serve"), arguments.count > serve + 2 else { return false }
            return arguments[serve + 1] == "--name" && arguments[serve + 2] == name
                && (arguments.first?.hasSuffix("ktlab") ?? false)
        }
    }

    // MARK: - status

    public static func status() -> String {
        let labs = LabState.all()
        guard !labs.isEmpty else { return "no lab is up (start one: sudo ktlab up)" }
        return labs.map { state in
            let layout = state.layout
            let running = isAlive(state.serverPID) ? "running (pid \(state.serverPID ?? 0))" : "NOT RUNNING"
            return """
                \(layout.name): \(running), since \(state.created)
                  API            https://127.0.0.1:\(layout.hostPort) (host), https://\(layout.nodeLinkAddress):\(layout.apiPort) (workstation)
                  kubeconfig     \(layout.hostKubeconfig)
                  workstation    ip netns exec \(layout.workstationNamespace) ...   (or: ktlab ws --name \(layout.name) -- CMD)
                  pod CIDR       \(layout.podCIDR) (node \(layout.nodePodCIDR)), service CIDR \(layout.serviceCIDR)
                """
        }.joined(separator: "\n")
    }
}
