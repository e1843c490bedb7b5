import Foundation
import Glibc
import KubeKit
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

/// The lab's kubelet: gives each pod a network namespace on the node's bridge and an IP from the node's pod
/// CIDR, runs its containers as processes in that namespace (`ImageCatalog` decides what), and keeps the pod's
/// status as a kubelet would (phase, conditions, container states, readiness from the ports opening).
public final class Kubelet: Sendable {
    let layout: LabLayout
    let store: ObjectStore
    let logger: Logger
    let binaries: String
    /// The node namespace's loops, for readiness probes.
    let group: any EventLoopGroup
    /// Mints the tokens mounted into pods (the API server checks them with the same key); nil: none are mounted.
    let serviceAccountTokens: ServiceAccountTokens?
    /// Local OCI images; a container whose image is here runs under crun.
    let images: ImageStore
    let runtime: ContainerRuntime

    struct RunningPod {
        var index: Int
        var namespace: String
        var ip: String
        var processes: [String: Process] = [:]
        var restarts: [String: Int] = [:]
        /// crun's container ids, by container name, for those that run an image.
        var runtimeIDs: [String: String] = [:]
        var stopped = false
        var terminating = false
    }

    let pods = NIOLockedValueBox<[String: RunningPod]>([:])
    private let nextIndex = NIOLockedValueBox(1)
    /// Where the kubelet's blocking work runs (`ip` commands, files, starting processes), one pod event after
    /// another. Never on Swift's concurrency pool: its few threads also carry every watch stream and controller of
    /// the API server, which stalled for seconds while a pod's namespace was being made.
    let work = DispatchQueue(label: "ktlab.kubelet")

    public init(
        layout: LabLayout, store: ObjectStore, group: any EventLoopGroup, binaries: String, logger: Logger,
        serviceAccountTokens: ServiceAccountTokens? = nil, images: ImageStore = ImageStore(directories: [])
    ) {
        self.serviceAccountTokens = serviceAccountTokens
        self.images = images
        self.runtime = ContainerRuntime(root: layout.runtimeDirectory)
        self.layout = layout
        self.store = store
        self.group = group
        self.binaries = binaries
        self.logger = logger
    }

    static func key(_ namespace: String, _ name: String) -> String { "\(namespace)/\(name)" }

    /// Watches every pod until cancelled.
    public func run() async throws {
        let events = try store.watch(Selection(resource: Pod.resource, namespace: nil), after: nil)
        let reaper = Task {
            while !Task.isCancelled {
                endOrphans()
                try? await Task.sleep(for: .milliseconds(500))
            }
        }
        defer { reaper.cancel() }
        for await event in events {
            work.async { self.handle(event) }
        }
    }

    func handle(_ event: StoredEvent) {
        let namespace = event.object["metadata"]?["namespace"]?.stringValue ?? ""
        let name = event.object["metadata"]?["name"]?.stringValue ?? ""
        switch event.kind {
        case .added, .modified:
            let known = pods.withLockedValue { $0[Self.key(namespace, name)] != nil }
            if event.object["metadata"]?["deletionTimestamp"] != nil {
                if known {
                    terminate(namespace: namespace, name: name)
                } else {
                    _ = try? store.delete(Pod.resource, namespace: namespace, name: name)
                }
            } else if !known && event.object["status"]?["podIP"] == nil {
                start(namespace: namespace, name: name, pod: event.object)
            }
        case .deleted:
            stop(namespace: namespace, name: name)
        }
    }

    /// Stops every pod (the server is stopping).
    public func stopAll() {
        work.sync {
            let all = pods.withLockedValue { Array($0.keys) }
            for key in all {
                let parts = key.split(separator: "/", maxSplits: 1).map(String.init)
                stop(namespace: parts[0], name: parts[1])
            }
        }
    }

    // MARK: - Starting

    func start(namespace: String, name: String, pod: JSONValue) {
        let index = nextIndex.withLockedValue { value -> Int in
            defer { value += 1 }
            return value
        }
        let octets = layout.bridgeAddress.split(separator: ".")
        let ip = "\(octets[0]).\(octets[1]).\(octets[2]).\(index + 1)"
        let podNamespace = layout.podNamespace(index)
        pods.withLockedValue {
            $0[Self.key(namespace, name)] = RunningPod(index: index, namespace: podNamespace, ip: ip)
        }
        let now = RFC3339.format(Date())
        do {
            try makeNamespace(podNamespace, index: index, ip: ip, podNamespace: namespace)
            try applySysctls(pod, in: podNamespace)
        } catch {
            logger.error("pod \(namespace)/\(name): network setup failed: \(error)")
            updateStatus(namespace, name) { status in
                status["phase"] = "Pending"
                status["conditions"] = [["type": "PodScheduled", "status": "True", "lastTransitionTime": .string(now)]]
                status["message"] = .string("network setup failed: \(error)")
            }
            return
        }
        updateStatus(namespace, name) { status in
            status["phase"] = "Pending"
            status["hostIP"] = .string(self.layout.nodeLinkAddress)
            status["hostIPs"] = [["ip": .string(self.layout.nodeLinkAddress)]]
            status["podIP"] = .string(ip)
            status["podIPs"] = [["ip": .string(ip)]]
            status["startTime"] = .string(now)
            status["conditions"] = Self.conditions(ready: false, now: now)
        }
        _ = try? store.modify(Pod.resource, namespace: namespace, name: name) { object in
            if object["spec"]?["nodeName"] == nil { object["spec"]?["nodeName"] = .string("\(self.layout.name)-node") }
        }
        startContainers(namespace: namespace, name: name, attempt: 0)
    }

    /// Materialises the pod's volumes and starts its containers. A volume whose ConfigMap or Secret does not exist
    /// yet keeps the pod in ContainerCreating and is retried every 2 s, as a kubelet does.
    func startContainers(namespace: String, name: String, attempt: Int, pulled: Bool = false) {
        let key = Self.key(namespace, name)
        guard let pod = try? store.get(Pod.resource, namespace: namespace, name: name),
            pod["metadata"]?["deletionTimestamp"] == nil,
            let ip = pods.withLockedValue({ $0[key].flatMap { $0.stopped ? nil : $0.ip } })
        else { return }
        let now = RFC3339.format(Date())
        let containers = pod["spec"]?["containers"]?.arrayValue ?? []
        // `ktlab.io/start-delay: <seconds>` stands for a slow image pull: the pod stays in ContainerCreating that long
        // (tests use it to act while a client waits for a pod).
        if !pulled,
            let delay = pod["metadata"]?["annotations"]?[Self.startDelayAnnotation]?.stringValue.flatMap(Double.init),
            delay > 0
        {
            updateStatus(namespace, name) { status in
                status["containerStatuses"] = .array(
                    containers.map { container in
                        Self.containerStatus(
                            container["name"]?.stringValue ?? "c", image: container["image"]?.stringValue ?? "",
                            state: [
                                "waiting": [
                                    "reason": "ContainerCreating",
                                    "message": .string("pulling the image (\(Self.startDelayAnnotation): \(delay) s)"),
                                ]
                            ], ready: false, restarts: 0)
                    })
            }
            recordEvent(
                pod: pod, type: "Normal", reason: "Pulling", message: "Pulling image (\(Self.startDelayAnnotation))")
            work.asyncAfter(deadline: .now() + delay) { [weak self] in
                self?.startContainers(namespace: namespace, name: name, attempt: attempt, pulled: true)
            }
            return
        }
        let volumes: [String: String]
        do {
            volumes = try materialiseVolumes(namespace: namespace, name: name, pod: pod)
        } catch let error as VolumeError {
            let reason = error.waits ? "ContainerCreating" : "CreateContainerConfigError"
            updateStatus(namespace, name) { status in
                status["containerStatuses"] = .array(
                    containers.map { container in
                        Self.containerStatus(
                            container["name"]?.stringValue ?? "c", image: container["image"]?.stringValue ?? "",
                            state: ["waiting": ["reason": .string(reason), "message": .string(error.message)]],
                            ready: false, restarts: 0)
                    })
            }
            if attempt == 0 { recordEvent(pod: pod, type: "Warning", reason: "FailedMount", message: error.message) }
            guard error.waits else { return }
            work.asyncAfter(deadline: .now() + .seconds(2)) { [weak self] in
                self?.startContainers(namespace: namespace, name: name, attempt: attempt + 1, pulled: true)
            }
            return
        } catch {
            logger.error("pod \(namespace)/\(name): volumes: \(error)")
            return
        }
        var statuses: [JSONValue] = []
        var failed = false
        for container in containers {
            let containerName = container["name"]?.stringValue ?? "c"
            let image = container["image"]?.stringValue ?? ""
            switch source(for: container) {
            case .image(let local):
                do {
                    try launchImage(
                        namespace: namespace, name: name, pod: pod, container: container, image: local,
                        volumes: volumes)
                    statuses.append(
                        Self.containerStatus(
                            containerName, image: image, state: ["running": ["startedAt": .string(now)]], ready: false,
                            restarts: 0, imageID: "\(local.reference.repository)@\(local.digest)",
                            containerID: pods.withLockedValue {
                                $0[Self.key(namespace, name)]?.runtimeIDs[containerName]
                            }
                            .map { "crun://\($0)" }))
                } catch {
                    failed = true
                    let reason = error is OCISpec.Refusal ? "CreateContainerConfigError" : "CreateContainerError"
                    recordEvent(pod: pod, type: "Warning", reason: "Failed", message: "Error: \(error)")
                    statuses.append(
                        Self.containerStatus(
                            containerName, image: image,
                            state: ["waiting": ["reason": .string(reason), "message": .string("\(error)")]],
                            ready: false, restarts: 0))
                }
            case .pullFailure(let message):
                failed = true
                recordEvent(pod: pod, type: "Warning", reason: "Failed", message: message)
                statuses.append(
                    Self.containerStatus(
                        containerName, image: image,
                        state: ["waiting": ["reason": "ErrImagePull", "message": .string(message)]],
                        ready: false, restarts: 0))
            case .process(let arguments, let workingDirectory):
                do {
                    try launch(
                        namespace: namespace, name: name, pod: pod, container: container, arguments: arguments,
                        workingDirectory: workingDirectory, volumes: volumes)
                    statuses.append(
                        Self.containerStatus(
                            containerName, image: image, state: ["running": ["startedAt": .string(now)]], ready: false,
                            restarts: 0))
                } catch {
                    failed = true
                    statuses.append(
                        Self.containerStatus(
                            containerName, image: image,
                            state: ["waiting": ["reason": "CreateContainerError", "message": .string("\(error)")]],
                            ready: false, restarts: 0))
                }
            }
        }
        updateStatus(namespace, name) { status in
            status["containerStatuses"] = .array(statuses)
            status["phase"] = failed ? "Pending" : "Running"
        }
        if !failed { probeUntilReady(namespace: namespace, name: name, ip: ip, containers: containers) }
    }

    func makeNamespace(_ podNamespace: String, index: Int, ip: String, podNamespace clusterNamespace: String) throws {
        let node = layout.nodeNamespace
        let hostSide = "vp\(index)"
        Host.deleteNamespace(podNamespace)
        try Host.run(["ip", "netns", "add", podNamespace])
        try Host.run(["ip", "-n", podNamespace, "link", "set", "lo", "up"])
        try Host.run([
            "ip", "-n", node, "link", "add", hostSide, "type", "veth", "peer", "name", "eth0", "netns", podNamespace,
        ])
        try Host.run(["ip", "-n", node, "link", "set", hostSide, "master", LabLayout.bridgeName, "up"])
        // A pod reaching itself through its Service: when br_netfilter is loaded the DNATed frame is bridged back
        // out of the port it came in on, which the bridge allows only in hairpin mode.
        try Host.run(["ip", "-n", node, "link", "set", hostSide, "type", "bridge_slave", "hairpin", "on"])
        try Host.run(["ip", "-n", podNamespace, "addr", "add", "\(ip)/24", "dev", "eth0"])
        try Host.run(["ip", "-n", podNamespace, "link", "set", "eth0", "up"])
        try Host.run(["ip", "-n", podNamespace, "route", "add", "default", "via", layout.bridgeAddress])
        let etc = "/etc/netns/\(podNamespace)"
        try FileManager.default.createDirectory(atPath: etc, withIntermediateDirectories: true)
        try """
        search \(clusterNamespace).svc.cluster.local svc.cluster.local cluster.local
        nameserver \(layout.dnsAddress)
        options ndots:5

        """.write(toFile: "\(etc)/resolv.conf", atomically: true, encoding: .utf8)
    }

    /// The pod's `securityContext.sysctls`, in its network namespace: the namespaced `net.*` ones (as
    /// `net.ipv4.ping_group_range`, which unprivileged ICMP sockets need); others are refused by name, as a
    /// kubelet refuses sysctls it does not allow.
    func applySysctls(_ pod: JSONValue, in podNamespace: String) throws {
        for sysctl in pod["spec"]?["securityContext"]?["sysctls"]?.arrayValue ?? [] {
            guard let name = sysctl["name"]?.stringValue, let value = sysctl["value"]?.stringValue else { continue }
            guard name.hasPrefix("net."), name.allSatisfy({ $0.isLetter || $0.isNumber || "._-".contains($0) }) else {
                throw Host.CommandError(
                    command: ["sysctl", name], status: 1,
                    output: "forbidden sysctl \(name): ktlab sets only namespaced net.* sysctls")
            }
            try Host.run(["ip", "netns", "exec", podNamespace, "sysctl", "-qw", "\(name)=\(value)"])
        }
    }

    func directory(namespace: String, name: String, container: String) -> String {
        "\(layout.podsDirectory)/\(namespace)_\(name)/\(container)"
    }

    func launch(
        namespace: String, name: String, pod: JSONValue, container: JSONValue, arguments: [String],
        workingDirectory: String, volumes: [String: String]
    ) throws {
        let containerName = container["name"]?.stringValue ?? "c"
        guard let running = pods.withLockedValue({ $0[Self.key(namespace, name)] }) else { return }
        let root = directory(namespace: namespace, name: name, container: containerName)
        let cwd = root + (workingDirectory.hasPrefix("/") ? workingDirectory : "/" + workingDirectory)
        try FileManager.default.createDirectory(atPath: cwd, withIntermediateDirectories: true)
        if ImageCatalog.repository(of: container["image"]?.stringValue ?? "").hasSuffix("tomcat") {
            try FileManager.default.createDirectory(atPath: cwd + "/webapps", withIntermediateDirectories: true)
        }
        try mount(volumes, into: root, for: container)
        var environment = self.environment(for: container, pod: pod, namespace: namespace, ip: running.ip)
        if let accountDirectory = try mountServiceAccount(namespace: namespace, name: name, pod: pod, into: root) {
            // What a kubelet gives every container of a pod with a token: where the API server is (the node's
            // address: the `kubernetes` Service has no endpoints in the lab), and, the lab's own, where the token is
            // (its containers have no root of their own, so the standard path cannot hold it).
            environment["KUBERNETES_SERVICE_HOST"] = layout.nodeLinkAddress
            environment["KUBERNETES_SERVICE_PORT"] = String(layout.apiPort)
            environment[ClusterAccess.labServiceAccountVariable] = accountDirectory
        }
        let logPath = "\(root).log"
        _ = FileManager.default.createFile(atPath: logPath, contents: nil)
        let log = try FileHandle(forWritingTo: URL(fileURLWithPath: logPath))
        log.seekToEndOfFile()
        // runAsUser / runAsGroup (the container's, else the pod's): the process runs as that user, owning its
        // container's directory as an image's files would be readable to it.
        let user = Self.securityContext(container, pod, "runAsUser")
        let group = Self.securityContext(container, pod, "runAsGroup") ?? (user == nil ? nil : 0)
        var identity: [String] = []
        if let user {
            identity = ["setpriv", "--reuid=\(user)", "--regid=\(group ?? 0)", "--clear-groups"]
            try Host.run(["chown", "-R", "\(user):\(group ?? 0)", root])
        }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: Host.findExecutable("ip") ?? "/usr/sbin/ip")
        process.arguments = ["netns", "exec", running.namespace] + identity + arguments
        process.environment = environment
        process.currentDirectoryURL = URL(fileURLWithPath: cwd)
        process.standardInput = FileHandle.nullDevice
        process.standardOutput = log
        process.standardError = log
        let key = Self.key(namespace, name)
        process.terminationHandler = { [weak self] finished in
            self?.exited(
                key: key, namespace: namespace, name: name, container: container, status: finished.terminationStatus)
        }
        try Host.launch(process)
        pods.withLockedValue { $0[key]?.processes[containerName] = process }
        recordEvent(
            pod: pod, type: "Normal", reason: "Started",
            message: "Started container \(containerName) as a process from ktlab's catalog (no local image "
                + "\(container["image"]?.stringValue ?? ""); ktlab image list): \(arguments.first ?? "")")
        logger.info(
            "pod \(namespace)/\(name) container \(containerName): \(arguments.joined(separator: " ")) (pid \(process.processIdentifier))"
        )
    }

    /// A numeric field of the container's `securityContext`, else of the pod's.
    static func securityContext(_ container: JSONValue, _ pod: JSONValue, _ field: String) -> Int64? {
        container["securityContext"]?[field]?.intValue ?? pod["spec"]?["securityContext"]?[field]?.intValue
    }

    /// The file a container's output goes to (nil before the pod runs here).
    public func logPath(pod: JSONValue, container: String?) -> String? {
        let namespace = pod["metadata"]?["namespace"]?.stringValue ?? ""
        let name = pod["metadata"]?["name"]?.stringValue ?? ""
        guard let container, pods.withLockedValue({ $0[Self.key(namespace, name)] != nil }) else { return nil }
        let path = directory(namespace: namespace, name: name, container: container) + ".log"
        return FileManager.default.fileExists(atPath: path) ? path : nil
    }

    /// Where `kubectl exec` runs a command: the pod's namespace, the container's working directory, its env.
    public func execTarget(pod: JSONValue, container requested: String?) -> ExecTarget? {
        let namespace = pod["metadata"]?["namespace"]?.stringValue ?? ""
        let name = pod["metadata"]?["name"]?.stringValue ?? ""
        guard let running = pods.withLockedValue({ $0[Self.key(namespace, name)] }) else { return nil }
        let containers = pod["spec"]?["containers"]?.arrayValue ?? []
        guard
            let container = requested.map({ wanted in containers.first { $0["name"]?.stringValue == wanted } })
                ?? containers.first
        else { return nil }
        let containerName = container["name"]?.stringValue ?? "c"
        if let id = running.runtimeIDs[containerName] {
            // Inside the container, as its own process runs: the spec's user, groups, capabilities, directory and
            // environment, with the command as args (`crun exec --process`, written beside the bundle's config).
            let bundle = bundleDirectory(namespace, name, containerName)
            let runtime = self.runtime
            return ExecTarget(
                networkNamespace: running.namespace, workingDirectory: "/", environment: [:],
                runtimeExec: { command in
                    let spec = try JSONValue(json: Data(contentsOf: URL(fileURLWithPath: bundle + "/config.json")))
                    var process = spec["process"] ?? [:]
                    process["args"] = .array(command.map { .string($0) })
                    let file = "\(bundle)/exec-\(UUID().uuidString.lowercased()).json"
                    try process.jsonData().write(to: URL(fileURLWithPath: file))
                    return runtime.command(["exec", "--process", file, id])
                })
        }
        guard case .process(_, let workingDirectory) = source(for: container) else { return nil }
        let root = directory(namespace: namespace, name: name, container: container["name"]?.stringValue ?? "c")
        let cwd = root + (workingDirectory.hasPrefix("/") ? workingDirectory : "/" + workingDirectory)
        return ExecTarget(
            networkNamespace: running.namespace, workingDirectory: cwd,
            environment: environment(for: container, pod: pod, namespace: namespace, ip: running.ip))
    }

    func environment(for container: JSONValue, pod: JSONValue, namespace: String, ip: String) -> [String: String] {
        var environment: [String: String] = [
            "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "HOSTNAME": pod["metadata"]?["name"]?.stringValue ?? "", "HOME": "/root",
        ]
        for entry in container["env"]?.arrayValue ?? [] {
            guard let key = entry["name"]?.stringValue else { continue }
            if let value = entry["value"]?.stringValue {
                environment[key] = value
            } else if let value = resolve(entry["valueFrom"], pod: pod, namespace: namespace, ip: ip) {
                environment[key] = value
            }
        }
        return environment
    }

    func resolve(_ source: JSONValue?, pod: JSONValue, namespace: String, ip: String) -> String? {
        guard let source else { return nil }
        if let path = source["fieldRef"]?["fieldPath"]?.stringValue {
            switch path {
            case "metadata.name": return pod["metadata"]?["name"]?.stringValue
            case "metadata.namespace": return namespace
            case "status.podIP": return ip
            case "status.hostIP": return layout.nodeLinkAddress
            case "spec.nodeName": return "\(layout.name)-node"
            case "spec.serviceAccountName": return pod["spec"]?["serviceAccountName"]?.stringValue ?? "default"
            default: return nil
            }
        }
        if let reference = source["configMapKeyRef"], let name = reference["name"]?.stringValue,
            let key = reference["key"]?.stringValue
        {
            return (try? store.get(ConfigMap.resource, namespace: namespace, name: name))?["data"]?[key]?.stringValue
        }
        if let reference = source["secretKeyRef"], let name = reference["name"]?.stringValue,
            let key = reference["key"]?.stringValue,
            let encoded = (try? store.get(Secret.resource, namespace: namespace, name: name))?["data"]?[key]?
                .stringValue,
            let data = Data(base64Encoded: encoded)
        {
            return String(decoding: data, as: UTF8.self)
        }
        return nil
    }

    func exited(key: String, namespace: String, name: String, container: JSONValue, status: Int32) {
        let containerName = container["name"]?.stringValue ?? "c"
        let (stopped, restarts) = pods.withLockedValue { pods -> (Bool, Int) in
            guard var pod = pods[key] else { return (true, 0) }
            pod.processes[containerName] = nil
            let count = (pod.restarts[containerName] ?? 0) + (pod.stopped ? 0 : 1)
            pod.restarts[containerName] = count
            pods[key] = pod
            return (pod.stopped, count)
        }
        guard !stopped, let pod = try? store.get(Pod.resource, namespace: namespace, name: name) else { return }
        let policy = pod["spec"]?["restartPolicy"]?.stringValue ?? "Always"
        let restart = policy == "Always" || (policy == "OnFailure" && status != 0)
        let now = RFC3339.format(Date())
        updateStatus(namespace, name) { podStatus in
            var statuses = podStatus["containerStatuses"]?.arrayValue ?? []
            for index in statuses.indices where statuses[index]["name"]?.stringValue == containerName {
                statuses[index]["ready"] = false
                statuses[index]["restartCount"] = .int(Int64(restart ? restarts : restarts - 1))
                statuses[index]["state"] =
                    restart
                    ? [
                        "waiting": [
                            "reason": "CrashLoopBackOff",
                            "message": .string("back-off restarting failed container \(containerName)"),
                        ]
                    ]
                    : [
                        "terminated": [
                            "exitCode": .int(Int64(status)), "reason": status == 0 ? "Completed" : "Error",
                            "finishedAt": .string(now),
                        ]
                    ]
            }
            podStatus["containerStatuses"] = .array(statuses)
            podStatus["conditions"] = Self.conditions(ready: false, now: now)
            if !restart {
                let all = statuses.allSatisfy { $0["state"]?["terminated"] != nil }
                if all {
                    let failed = statuses.contains { ($0["state"]?["terminated"]?["exitCode"]?.intValue ?? 0) != 0 }
                    podStatus["phase"] = failed ? "Failed" : "Succeeded"
                }
            }
        }
        guard restart else { return }
        // Back off 1 s, 2 s, 4 s ... up to 30 s, as a kubelet's crash loop does (shorter).
        let delay = min(30, 1 << min(restarts - 1, 5))
        work.asyncAfter(deadline: .now() + .seconds(delay)) { [weak self] in
            guard let self, let current = try? self.store.get(Pod.resource, namespace: namespace, name: name),
                self.pods.withLockedValue({ $0[key].map { !$0.stopped } ?? false })
            else { return }
            let volumes = self.volumeDirectories(namespace: namespace, name: name, pod: current)
            switch self.source(for: container) {
            case .image(let image):
                try? self.launchImage(
                    namespace: namespace, name: name, pod: current, container: container, image: image,
                    volumes: volumes)
            case .process(let arguments, let directory):
                try? self.launch(
                    namespace: namespace, name: name, pod: current, container: container, arguments: arguments,
                    workingDirectory: directory, volumes: volumes)
            case .pullFailure:
                return
            }
            self.updateStatus(namespace, name) { podStatus in
                var statuses = podStatus["containerStatuses"]?.arrayValue ?? []
                for index in statuses.indices where statuses[index]["name"]?.stringValue == containerName {
                    statuses[index]["state"] = ["running": ["startedAt": .string(RFC3339.format(Date()))]]
                }
                podStatus["containerStatuses"] = .array(statuses)
            }
            let ip = self.pods.withLockedValue { $0[key]?.ip } ?? ""
            self.probeUntilReady(
                namespace: namespace, name: name, ip: ip, containers: current["spec"]?["containers"]?.arrayValue ?? [])
        }
    }

    /// The annotation that delays a pod's start (a slow image pull).
    public static let startDelayAnnotation = "ktlab.io/start-delay"

    // MARK: - Port-forward

    /// Connects to `127.0.0.1:port` in the pod's network namespace, as a kubelet's port-forward does (so a process
    /// that listens on localhost only, like kt-shadow, is reachable through the API server and from nowhere else).
    public func dialLoopback(pod: JSONValue, port: Int, on eventLoop: any EventLoop) -> EventLoopFuture<any Channel> {
        let namespace = pod["metadata"]?["namespace"]?.stringValue ?? ""
        let name = pod["metadata"]?["name"]?.stringValue ?? ""
        guard
            let network = pods.withLockedValue({
                $0[Self.key(namespace, name)].flatMap { $0.stopped ? nil : $0.namespace }
            })
        else {
            return eventLoop.makeFailedFuture(APIStatusError.badRequest("pod \(name) is not running on this node"))
        }
        let promise = eventLoop.makePromise(of: (any Channel).self)
        DispatchQueue.global().async {
            do {
                let socket = try Host.connectLoopback(inNamespace: network, port: port)
                // Reading off until the relay is in place: a connected socket is read as soon as it is registered,
                // and what the pod sent first (a server that speaks first) went to a pipeline with nobody in it
                // (seen once: a 1 GiB port-forward 30 KiB short).
                ClientBootstrap(group: eventLoop).channelOption(.tcpOption(.tcp_nodelay), value: 1)
                    .channelOption(.autoRead, value: false)
                    .withConnectedSocket(socket).cascade(to: promise)
            } catch {
                promise.fail(error)
            }
        }
        return promise.futureResult
    }

    // MARK: - Readiness

    /// Ready when every declared container port accepts a TCP connection (from the node), checked every 200 ms.
    func probeUntilReady(namespace: String, name: String, ip: String, containers: [JSONValue]) {
        let ports = containers.flatMap { container in
            (container["ports"]?.arrayValue ?? []).filter { ($0["protocol"]?.stringValue ?? "TCP") == "TCP" }
                .compactMap { $0["containerPort"]?.intValue }.map(Int.init)
        }
        let key = Self.key(namespace, name)
        Task {
            while pods.withLockedValue({ $0[key].map { !$0.stopped } ?? false }) {
                var open = true
                for port in ports where !(await self.accepts(ip: ip, port: port)) {
                    open = false
                    break
                }
                if open {
                    let now = RFC3339.format(Date())
                    updateStatus(namespace, name) { status in
                        var statuses = status["containerStatuses"]?.arrayValue ?? []
                        for index in statuses.indices where statuses[index]["state"]?["running"] != nil {
                            statuses[index]["ready"] = true
                            statuses[index]["started"] = true
                        }
                        status["containerStatuses"] = .array(statuses)
                        let allReady = statuses.allSatisfy { $0["ready"]?.boolValue == true }
                        status["conditions"] = Self.conditions(ready: allReady, now: now)
                    }
                    return
                }
                try? await Task.sleep(for: .milliseconds(200))
            }
        }
    }

    func accepts(ip: String, port: Int) async -> Bool {
        let eventLoop = group.next()
        do {
            let channel = try await eventLoop.flatSubmit {
                ClientBootstrap(group: eventLoop).connectTimeout(.milliseconds(500)).connect(host: ip, port: port)
            }.get()
            try? await channel.close()
            return true
        } catch {
            return false
        }
    }

    // MARK: - Stopping

    /// A pod marked for deletion: SIGTERM to its containers, SIGKILL to what still runs when the grace period
    /// (`deletionTimestamp`, which a second delete may bring forward) is over, then the pod object goes.
    func terminate(namespace: String, name: String) {
        let key = Self.key(namespace, name)
        guard
            let processes = pods.withLockedValue({ pods -> [Process]? in
                guard var pod = pods[key], !pod.terminating else { return nil }
                pod.terminating = true
                pod.stopped = true
                pods[key] = pod
                return Array(pod.processes.values)
            })
        else { return }
        if let pod = try? store.get(Pod.resource, namespace: namespace, name: name) {
            let names =
                processes.isEmpty
                ? ""
                : " "
                    + (pod["spec"]?["containers"]?.arrayValue ?? []).compactMap { $0["name"]?.stringValue }.joined(
                        separator: ", ")
            recordEvent(pod: pod, type: "Normal", reason: "Killing", message: "Stopping container\(names)")
        }
        let ip = pods.withLockedValue { $0[key]?.ip }
        let now = RFC3339.format(Date())
        updateStatus(namespace, name) { status in
            var statuses = status["containerStatuses"]?.arrayValue ?? []
            for index in statuses.indices { statuses[index]["ready"] = false }
            status["containerStatuses"] = .array(statuses)
            status["conditions"] = Self.conditions(ready: false, now: now)
        }
        let store = self.store
        Task { [self] in
            // SIGTERM once no Endpoints list the pod and the Service rules have followed (at most 2 s), as a
            // preStop hook that waits for deregistration does in production: otherwise the lab's kill, a
            // function call away, always beats its own proxy, and every scale-down loses a request or two.
            if let ip { await self.waitUntilDeregistered(ip, namespace: namespace, timeout: .seconds(2)) }
            // Foundation starts each process in a process group of its own: the container's processes.
            for process in processes { killpg(process.processIdentifier, SIGTERM) }
            // The period runs from now, as a kubelet times it (deletionTimestamp has whole seconds only); a later
            // delete with a shorter period brings the end forward.
            var grace: Int64? = nil
            var deadline = ContinuousClock.now
            // `exited` removes a container's process when it ends.
            while !(self.pods.withLockedValue { $0[key]?.processes.isEmpty ?? true }) {
                self.endOrphans()
                let current =
                    (try? store.get(Pod.resource, namespace: namespace, name: name))?["metadata"]?[
                        "deletionGracePeriodSeconds"]?.intValue ?? 0
                if let previous = grace {
                    if current < previous {
                        grace = current
                        deadline = min(deadline, .now + .seconds(current))
                    }
                } else {
                    grace = current
                    deadline = .now + .seconds(current)
                }
                if ContinuousClock.now >= deadline {
                    for process in self.pods.withLockedValue({ $0[key]?.processes.values.map { $0 } ?? [] }) {
                        killpg(process.processIdentifier, SIGKILL)
                    }
                    // crun's container runs in a session of its own: killing crun does not end it.
                    for id in self.pods.withLockedValue({ $0[key]?.runtimeIDs.values.map { $0 } ?? [] }) {
                        self.runtime.kill(id: id, signal: "KILL", all: true)
                    }
                    break
                }
                try? await Task.sleep(for: .milliseconds(100))
            }
            // As a kubelet: the pod's sandbox and files go first, then the object, so whoever waits for the
            // deletion finds nothing left behind.
            self.work.async {
                self.stop(namespace: namespace, name: name)
                _ = try? store.delete(Pod.resource, namespace: namespace, name: name)
            }
        }
    }

    /// Waits until no Endpoints in `namespace` list `ip`, then a moment for the proxy to apply its rules.
    func waitUntilDeregistered(_ ip: String, namespace: String, timeout: Duration) async {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            let listed = store.list(Selection(resource: Endpoints.resource, namespace: namespace)).items.contains {
                endpoints in
                (endpoints["subsets"]?.arrayValue ?? []).contains { subset in
                    (subset["addresses"]?.arrayValue ?? []).contains { $0["ip"]?.stringValue == ip }
                }
            }
            if !listed {
                try? await Task.sleep(for: .milliseconds(150))
                return
            }
            try? await Task.sleep(for: .milliseconds(20))
        }
    }

    /// A container ends when its main process does, as a container's PID 1: what it leaves running in its
    /// process group is killed. (Foundation notices a process's end only when every process that inherited its
    /// watch descriptor has closed it, so an orphaned `sleep` would otherwise keep the container "running".)
    func endOrphans() {
        let all = pods.withLockedValue { pods in pods.values.flatMap { $0.processes.values } }
        for process in all where Self.isZombie(process.processIdentifier) {
            killpg(process.processIdentifier, SIGKILL)
        }
    }

    public static func isZombie(_ pid: Int32) -> Bool {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
            let close = stat.lastIndex(of: ")")
        else { return false }
        return stat[stat.index(after: close)...].trimmingCharacters(in: .whitespaces).hasPrefix("Z")
    }

    func stop(namespace: String, name: String) {
        let key = Self.key(namespace, name)
        guard
            let pod = pods.withLockedValue({ pods -> RunningPod? in
                pods[key]?.stopped = true
                return pods.removeValue(forKey: key)
            })
        else { return }
        for process in pod.processes.values where process.isRunning { kill(process.processIdentifier, SIGKILL) }
        for id in pod.runtimeIDs.values {
            runtime.kill(id: id, signal: "KILL", all: true)
            runtime.delete(id: id)
        }
        Host.deleteNamespace(pod.namespace)
        try? FileManager.default.removeItem(atPath: "\(layout.podsDirectory)/\(namespace)_\(name)")
        logger.info("pod \(namespace)/\(name) stopped")
    }

    // MARK: - Status

    func updateStatus(_ namespace: String, _ name: String, _ change: @escaping (inout JSONValue) -> Void) {
        _ = try? store.modify(Pod.resource, namespace: namespace, name: name) { pod in
            var status = pod["status"] ?? [:]
            change(&status)
            pod["status"] = status
        }
    }

    static func conditions(ready: Bool, now: String) -> JSONValue {
        let value: JSONValue = ready ? "True" : "False"
        return [
            [
                "type": "PodReadyToStartContainers", "status": "True", "lastProbeTime": .null,
                "lastTransitionTime": .string(now),
            ],
            ["type": "Initialized", "status": "True", "lastProbeTime": .null, "lastTransitionTime": .string(now)],
            ["type": "Ready", "status": value, "lastProbeTime": .null, "lastTransitionTime": .string(now)],
            ["type": "ContainersReady", "status": value, "lastProbeTime": .null, "lastTransitionTime": .string(now)],
            ["type": "PodScheduled", "status": "True", "lastProbeTime": .null, "lastTransitionTime": .string(now)],
        ]
    }

    static func containerStatus(
        _ name: String, image: String, state: JSONValue, ready: Bool, restarts: Int, imageID: String? = nil,
        containerID: String? = nil
    ) -> JSONValue {
        [
            "name": .string(name), "image": .string(image),
            "imageID": .string(imageID ?? "ktlab://\(ImageCatalog.repository(of: image))"),
            "containerID": .string(containerID ?? "ktlab://\(UUID().uuidString.lowercased())"), "ready": .bool(ready),
            "restartCount": .int(Int64(restarts)), "started": .bool(state["running"] != nil), "state": state,
            "lastState": [:],
        ]
    }
}
