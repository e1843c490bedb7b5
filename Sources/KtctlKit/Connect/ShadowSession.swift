import Foundation
import KtEngine
import KtTunnel
import KubeKit
import Logging
import NIOCore
import NIOPosix

/// The cluster half of a session: the Secret and shadow Pod, the port-forward to it and the SSH connection over
/// that, kept up while the session lives (a dropped port-forward or SSH connection is made again with backoff; a
/// deleted shadow pod is created again), and removed at the end.
public final class ShadowSession: @unchecked Sendable {
    public let client: KubeClient
    public let namespace: String
    public let options: ClusterOptions
    public let session: SessionIdentity
    public let link: TunnelLink
    let key = SessionKey()
    let group: any EventLoopGroup
    let logger: Logger
    let progress: @Sendable (String) -> Void
    private var supervisor: Task<Void, Never>?
    private var heartbeat: Task<Void, Never>?
    private var stopping = false
    private let lock = NSLock()
    public private(set) var podIP: String?

    public init(
        client: KubeClient, namespace: String, options: ClusterOptions, session: SessionIdentity, link: TunnelLink,
        group: any EventLoopGroup, logger: Logger, progress: @escaping @Sendable (String) -> Void
    ) {
        self.client = client
        self.namespace = namespace
        self.options = options
        self.session = session
        self.link = link
        self.group = group
        self.logger = logger
        self.progress = progress
    }

    public var podName: String { ShadowPlan.podName(session) }

    /// Creates the Secret and the pod, waits for it, and connects; then keeps the connection up.
    public func start() async throws {
        let now = Date()
        progress("creating secret \(ShadowPlan.secretName(session)) and pod \(podName) in namespace \(namespace)")
        _ = try await client.create(
            try Secret.decoding(
                ShadowPlan.secret(options, session: session, authorizedKey: key.authorizedKeysLine(), now: now)),
            namespace: namespace)
        let tunnel = try await startPodAndConnect()
        link.set(tunnel)
        supervisor = Task { [weak self] in await self?.supervise(tunnel) }
        heartbeat = Task { [weak self] in await self?.beat() }
    }

    func startPodAndConnect() async throws -> TunnelClient {
        _ = try await client.create(
            try Pod.decoding(ShadowPlan.pod(options, session: session, now: Date())), namespace: namespace)
        let pod = try await waitReady()
        podIP = pod.status?.podIP
        let fingerprint = try await hostKeyFingerprint()
        logger.debug("shadow host key \(fingerprint)")
        return try await connect(fingerprint: fingerprint)
    }

    /// Waits until the pod is Ready; an image that cannot be pulled, a container that cannot start or a pod that
    /// cannot be scheduled ends the wait at once with what Kubernetes said.
    func waitReady() async throws -> Pod {
        let deadline = ContinuousClock.now + options.timeout
        var said = ""
        while ContinuousClock.now < deadline {
            let pod = try await client.get(Pod.self, name: podName, namespace: namespace)
            if pod.status?.isReady == true { return pod }
            let phase = pod.status?.phase ?? "Pending"
            let statuses = pod.raw["status"]?["containerStatuses"]?.arrayValue ?? []
            let waiting = statuses.compactMap { $0["state"]?["waiting"] }.first
            let reason = waiting?["reason"]?.stringValue
            let message = waiting?["message"]?.stringValue ?? ""
            if let reason, ["ErrImagePull", "ImagePullBackOff", "InvalidImageName"].contains(reason) {
                throw ConnectError.shadow(
                    "the shadow pod \(podName) cannot pull its image \(options.image) (\(reason): \(message)); "
                        + "pass --image with an image this cluster can pull (and --image-pull-secret if it needs one)")
            }
            if let reason, ["CrashLoopBackOff", "CreateContainerConfigError", "CreateContainerError"].contains(reason) {
                throw ConnectError.shadow(
                    "the shadow pod \(podName) does not start (\(reason): \(message)); see `kubectl logs -n "
                        + "\(namespace) \(podName)`")
            }
            let conditions = pod.raw["status"]?["conditions"]?.arrayValue ?? []
            if let unscheduled = conditions.first(where: {
                $0["type"]?.stringValue == "PodScheduled" && $0["status"]?.stringValue == "False"
                    && $0["reason"]?.stringValue == "Unschedulable"
            }) {
                throw ConnectError.shadow(
                    "the shadow pod \(podName) cannot be scheduled: \(unscheduled["message"]?.stringValue ?? "")"
                        + " (check --node-selector and --pod-quota)")
            }
            let now = "waiting for pod \(podName): \(phase)\(reason.map { " (\($0))" } ?? "")"
            if now != said {
                progress(now)
                said = now
            }
            try await Task.sleep(for: .milliseconds(250))
        }
        throw ConnectError.shadow(
            "the shadow pod \(podName) was not ready within \(options.timeout) (\(said)); see `kubectl describe pod -n "
                + "\(namespace) \(podName)`, or wait longer with --timeout")
    }

    /// The fingerprint kt-shadow logs first (`kt-shadow host key SHA256:…`).
    func hostKeyFingerprint() async throws -> String {
        let path = Pod.resource.objectPath(name: podName, namespace: namespace, subresource: "log")
        for _ in 0..<50 {
            let response = try await client.send(
                APIRequest(
                    method: .get, path: path, query: [APIRequest.QueryItem("container", ShadowPlan.container)],
                    verb: "get", subject: "the shadow's log"))
            let text = String(decoding: response.body, as: UTF8.self)
            for line in text.split(separator: "\n") {
                if let range = line.range(of: "kt-shadow host key ") {
                    let rest = line[range.upperBound...]
                    if let fingerprint = rest.split(separator: " ").first, fingerprint.hasPrefix("SHA256:") {
                        return String(fingerprint)
                    }
                }
            }
            try await Task.sleep(for: .milliseconds(100))
        }
        throw ConnectError.shadow(
            "the shadow pod \(podName) is running but did not log its host key; is \(options.image) a kt-shadow image?")
    }

    func connect(fingerprint: String) async throws -> TunnelClient {
        let forwarder = PortForwarder(
            client: client, pod: podName, namespace: namespace, port: UInt16(ShadowPlan.sshPort))
        let configuration = TunnelConfiguration(key: key, hostKey: nil, hostKeyFingerprint: fingerprint)
        return try await TunnelClient.connect(
            group: group, configuration: configuration, logger: logger,
            transport: { eventLoop in forwarder.connect(on: eventLoop) })
    }

    /// While the session lives: when the tunnel ends, make it again (the pod too, if it is gone).
    func supervise(_ first: TunnelClient) async {
        var tunnel = first
        while true {
            try? await tunnel.closeFuture.get()
            if isStopping { return }
            link.set(nil)
            progress("the tunnel to \(podName) was lost (\(tunnel.failure?.description ?? "closed")); reconnecting")
            var delay = Duration.milliseconds(200)
            while !isStopping {
                do {
                    let pod = try? await client.get(Pod.self, name: podName, namespace: namespace)
                    if pod == nil || pod?.raw["metadata"]?["deletionTimestamp"] != nil {
                        if pod != nil {
                            // Terminating: wait until it is gone, then make it again.
                            try await Task.sleep(for: .milliseconds(200))
                            continue
                        }
                        progress("the shadow pod \(podName) is gone; creating it again")
                        tunnel = try await startPodAndConnect()
                    } else {
                        _ = try await waitReady()
                        tunnel = try await connect(fingerprint: try await hostKeyFingerprint())
                    }
                    link.set(tunnel)
                    progress("reconnected to \(podName)")
                    break
                } catch {
                    logger.debug("reconnect failed: \(error)")
                    try? await Task.sleep(for: delay)
                    delay = min(delay * 2, .seconds(5))
                }
            }
        }
    }

    var isStopping: Bool { lock.withLock { stopping } }

    /// Refreshes the heartbeat annotation every 60 s, so that `ktctl clean` knows the session is alive.
    func beat() async {
        while !isStopping {
            try? await Task.sleep(for: .seconds(60))
            if isStopping { return }
            let change: JSONValue = [
                "metadata": ["annotations": [SessionLabels.heartbeat: .string(RFC3339.format(Date()))]]
            ]
            _ = try? await client.patch(Pod.self, name: podName, namespace: namespace, .merge(change))
        }
    }

    /// Closes the tunnel and deletes the pod and the Secret (what is already gone is fine).
    public func stop() async {
        lock.withLock { stopping = true }
        supervisor?.cancel()
        heartbeat?.cancel()
        link.client?.close()
        link.set(nil)
        var options = DeleteOptions()
        options.gracePeriodSeconds = 0
        _ = try? await client.delete(Pod.self, name: podName, namespace: namespace, options: options)
        _ = try? await client.delete(Secret.self, name: ShadowPlan.secretName(session), namespace: namespace)
    }
}
