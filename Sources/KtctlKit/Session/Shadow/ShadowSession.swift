import Foundation
import KtEngine
import KtTunnel
import KubeKit
import Logging
import NIOCore
import NIOPosix

/// The cluster half of a session: the shadow's Secret and Pod (created through the session, so journaled and owned
/// by its Lease), the port-forward to it and the SSH connection over that, kept up while the session lives (a
/// dropped port-forward or SSH connection is made again with backoff; a deleted shadow pod is created again), and
/// closed at the end (the session's undo deletes the objects).
///
/// The shadow cannot be impersonated: ktctl makes its host key and hands it over in the Secret, so the tunnel pins
/// that key before the pod exists; and a pod of the shadow's name that the session did not create (another uid) is
/// never used.
public final class ShadowSession: @unchecked Sendable {
    public let session: Session
    public let spec: ShadowSpec
    public let options: ClusterOptions
    public let link: TunnelLink
    let key = SessionKey()
    let hostKey = SessionKey()
    let group: any EventLoopGroup
    let logger: Logger
    let progress: @Sendable (String) -> Void
    private let lock = NSLock()
    private var supervisor: Task<Void, Never>?
    private var stopping = false
    private var podUID: String?
    private var currentPodIP: String?
    /// The shadow pod's address (read by the status writer's thread, so behind the lock).
    public private(set) var podIP: String? {
        get { lock.withLock { currentPodIP } }
        set { lock.withLock { currentPodIP = newValue } }
    }

    public init(
        session: Session, spec: ShadowSpec, options: ClusterOptions, link: TunnelLink, group: any EventLoopGroup,
        logger: Logger, progress: @escaping @Sendable (String) -> Void
    ) {
        self.session = session
        self.spec = spec
        self.options = options
        self.link = link
        self.group = group
        self.logger = logger
        self.progress = progress
    }

    public var podName: String { spec.podName }
    var cluster: SessionCluster {
        guard let cluster = session.cluster else { preconditionFailure("a shadow needs the session's cluster") }
        return cluster
    }

    /// Creates the Secret and the pod, waits for it, and connects; then keeps the connection up.
    public func start() async throws {
        // Before anything is undone, nothing may be re-created; the tunnel itself stays until its turn (an exchange
        // restores the Service's selector first, while the shadow still answers).
        session.beforeUndo { [self] in self.stopSupervising() }
        session.status.sample { [weak self] status in
            guard let self else { return }
            status.shadow = .init(
                pod: self.podName, ip: self.podIP, tunnel: self.link.condition, reconnects: self.link.reconnects)
        }
        progress("creating secret \(spec.secretName) and pod \(podName) in namespace \(cluster.namespace)")
        _ = try await session.create(
            ShadowPlan.secret(
                spec, options: options, authorizedKey: key.authorizedKeysLine(), hostKeySeed: hostKey.seedBase64),
            role: spec.role.rawValue)
        let tunnel = try await startPodAndConnect()
        session.onStop("close the tunnel to \(podName)") { [self] in self.stop() }
        link.set(tunnel)
        let task = Task { [weak self] in
            guard let self else { return }
            await self.supervise(tunnel)
        }
        lock.withLock { supervisor = task }
    }

    func startPodAndConnect() async throws -> TunnelClient {
        let created = try await session.create(try ShadowPlan.pod(spec, options: options), role: spec.role.rawValue)
        lock.withLock { podUID = created.metadata.uid }
        // A shadow that declares its listeners' ports is Ready only once they listen, which is after the tunnel is
        // up: it is connected to as soon as it runs.
        let pod = try await waitReady(runningSuffices: !spec.ports.isEmpty)
        podIP = pod.status?.podIP
        return try await connect()
    }

    /// Waits until the pod is Ready; an image that cannot be pulled, a container that cannot start or a pod that
    /// cannot be scheduled ends the wait at once with what Kubernetes said.
    func waitReady(runningSuffices: Bool = false) async throws -> Pod {
        let deadline = ContinuousClock.now + options.timeout
        var said = ""
        while ContinuousClock.now < deadline {
            let pod = try await cluster.client.get(Pod.self, name: podName, namespace: cluster.namespace)
            try checkOwnership(pod)
            if pod.status?.isReady == true { return pod }
            if runningSuffices, pod.status?.phase == "Running",
                (pod.raw["status"]?["containerStatuses"]?.arrayValue ?? []).allSatisfy({
                    $0["state"]?["running"] != nil
                })
            {
                return pod
            }
            let phase = pod.status?.phase ?? "Pending"
            let statuses = pod.raw["status"]?["containerStatuses"]?.arrayValue ?? []
            let waiting = statuses.compactMap { $0["state"]?["waiting"] }.first
            let reason = waiting?["reason"]?.stringValue
            let message = waiting?["message"]?.stringValue ?? ""
            if let reason, ImagePull.failureReasons.contains(reason) {
                throw ConnectError.shadow(
                    "the shadow pod \(podName) cannot pull its image \(options.image) (\(reason): \(message)). "
                        + ImagePull.advice(
                            image: options.image, flag: "--image", product: "kt-shadow", command: spec.role.rawValue))
            }
            if let reason, ["CrashLoopBackOff", "CreateContainerConfigError", "CreateContainerError"].contains(reason) {
                throw ConnectError.shadow(
                    "the shadow pod \(podName) does not start (\(reason): \(message)); see `kubectl logs -n "
                        + "\(cluster.namespace) \(podName)`")
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
                + "\(cluster.namespace) \(podName)`, or wait longer with --timeout")
    }

    /// Waits until the shadow is Ready (for an exchange: its listeners are up, so a Service may select it).
    public func waitUntilReady() async throws {
        let pod = try await waitReady()
        podIP = pod.status?.podIP
    }

    /// A pod of the shadow's name that this session did not create is someone else's: never used.
    func checkOwnership(_ pod: Pod) throws {
        let ours = lock.withLock { podUID }
        guard let ours, let theirs = pod.metadata.uid, theirs != ours else { return }
        throw ConnectError.impostor(
            "the pod \(podName) in \(cluster.namespace) is not the shadow this session created (uid \(theirs), "
                + "ours was \(ours)): someone replaced it; ktctl will not send traffic through it. Delete it "
                + "(`kubectl delete pod -n \(cluster.namespace) \(podName)`) and ktctl makes its own again, or stop "
                + "with Ctrl-C (that pod is left alone)")
    }

    /// Port-forward and SSH, pinned to the host key this session gave the shadow. The pod may be Ready before
    /// kt-shadow listens (there is no probe on loopback), so refusals are tried again for a few seconds.
    func connect() async throws -> TunnelClient {
        let forwarder = PortForwarder(
            client: cluster.client, pod: podName, namespace: cluster.namespace, port: UInt16(ShadowPlan.sshPort))
        let configuration = TunnelConfiguration(key: key, hostKey: hostKey.sshPublicKey)
        let deadline = ContinuousClock.now + .seconds(10)
        var delay = Duration.milliseconds(100)
        while true {
            do {
                return try await TunnelClient.connect(
                    group: group, configuration: configuration, logger: logger,
                    transport: { eventLoop in forwarder.connect(on: eventLoop) })
            } catch let error as TunnelError {
                if case .hostKeyMismatch(let expected, let presented) = error {
                    throw ConnectError.impostor(
                        "the pod \(podName) answered with host key \(presented), not the shadow's \(expected) that "
                            + "this session handed it: it is not our shadow (replaced, or the traffic is intercepted); "
                            + "ktctl will not use it")
                }
                guard ContinuousClock.now + delay < deadline else { throw error }
                logger.debug("the shadow does not answer yet: \(error)")
            } catch is CancellationError {
                throw CancellationError()
            } catch {
                // The port-forward refused (nothing listens yet), or its stream ended before the tunnel started.
                guard ContinuousClock.now + delay < deadline else { throw error }
                logger.debug("the shadow does not answer yet: \(error)")
            }
            try await Task.sleep(for: delay)
            delay = min(delay * 2, .seconds(1))
        }
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
            var said = ""
            while !isStopping {
                do {
                    let pod = try? await cluster.client.get(Pod.self, name: podName, namespace: cluster.namespace)
                    if pod == nil || pod?.raw["metadata"]?["deletionTimestamp"] != nil {
                        if pod != nil {
                            // Terminating: wait until it is gone, then make it again.
                            try await Task.sleep(for: .milliseconds(200))
                            continue
                        }
                        progress("the shadow pod \(podName) is gone; creating it again")
                        tunnel = try await startPodAndConnect()
                    } else {
                        _ = try await waitReady(runningSuffices: !spec.ports.isEmpty)
                        tunnel = try await connect()
                    }
                    link.set(tunnel)
                    progress("reconnected to \(podName)")
                    break
                } catch is CancellationError {
                    return
                } catch let error as ConnectError {
                    // An impostor: said once, then checked again now and then (it may be deleted).
                    if case .impostor(let why) = error, why != said {
                        progress(why)
                        said = why
                    }
                    logger.debug("reconnect failed: \(error)")
                    try? await Task.sleep(for: delay)
                    delay = min(delay * 2, .seconds(5))
                } catch {
                    logger.debug("reconnect failed: \(error)")
                    try? await Task.sleep(for: delay)
                    delay = min(delay * 2, .seconds(5))
                }
            }
        }
    }

    var isStopping: Bool { lock.withLock { stopping } }

    /// Stops reconnecting and re-creating the pod; the tunnel open now stays.
    public func stopSupervising() {
        let task = lock.withLock { () -> Task<Void, Never>? in
            stopping = true
            return supervisor
        }
        task?.cancel()
    }

    /// Closes the tunnel and stops reconnecting (the session deletes the pod and the Secret afterwards).
    public func stop() {
        let task = lock.withLock { () -> Task<Void, Never>? in
            stopping = true
            return supervisor
        }
        task?.cancel()
        link.client?.close()
        link.set(nil)
    }
}
