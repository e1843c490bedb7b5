import Foundation
import KubeKit
import Logging

/// A session's liveness in the cluster: a `coordination.k8s.io/v1` Lease, created first and renewed every third of
/// its duration. Every other object of the session names it as owner, so deleting the Lease lets garbage collection
/// take the rest, and `ktctl clean` anywhere judges a session by its Lease alone.
///
/// Times are the API server's, never this laptop's: `renewTime` is written from `ServerClock` (the server's `Date`
/// header carried forward on the monotonic clock) and read against the `Date` of the reader's own answer. Two laptops
/// whose clocks differ by an hour see the same ages.
public final class SessionLease: @unchecked Sendable {
    /// How long a session may go without renewing before another ktctl may call it dead (`leaseDurationSeconds`).
    /// Renewed every third of it, so two renewals in a row may fail (an API server restart, a slow network) before
    /// anyone sees the session as stale. 90 s also bounds how long a `kill -9`ed session's objects linger before
    /// another laptop's `clean` may take them (the session's own machine does it at once: its journal knows).
    public static let defaultDuration = 90
    /// The shortest duration accepted: renewals every 2 s are already chatty.
    public static let minimumDuration = 6

    public let client: KubeClient
    public let namespace: String
    public let name: String
    public let durationSeconds: Int
    let logger: Logger
    private let lock = NSLock()
    private var uidValue: String?
    private var renewal: Task<Void, Never>?

    public init(client: KubeClient, namespace: String, name: String, durationSeconds: Int, logger: Logger) {
        self.client = client
        self.namespace = namespace
        self.name = name
        self.durationSeconds = durationSeconds
        self.logger = logger
    }

    public var uid: String? { lock.withLock { uidValue } }

    /// The owner reference every object of the session carries.
    public var ownerReference: OwnerReference? {
        uid.map {
            var reference = OwnerReference(apiVersion: Lease.resource.apiVersion, kind: "Lease", name: name, uid: $0)
            reference.blockOwnerDeletion = false
            return reference
        }
    }

    /// The Lease as created: held by this session, renewed now (in server time).
    public func document(holder: String, serverNow: Date, labels: [String: String], annotations: [String: String])
        -> Lease
    {
        let now = MicroTime.format(serverNow)
        return Lease(
            metadata: ObjectMeta(name: name, namespace: namespace, labels: labels, annotations: annotations),
            spec: Lease.Spec(
                holderIdentity: holder, leaseDurationSeconds: durationSeconds, acquireTime: now, renewTime: now))
    }

    func created(_ lease: Lease) {
        lock.withLock { uidValue = lease.metadata.uid }
    }

    /// Renews every third of the duration until stopped. A failure is said at once (and why); a Lease that is gone
    /// (someone's `clean`, a `kubectl delete`) calls `lost`: the session's objects go with it, so it cannot go on.
    public func startRenewing(
        progress: @escaping @Sendable (String) -> Void, lost: @escaping @Sendable (String) -> Void
    ) {
        let interval = Duration.seconds(max(1, durationSeconds / 3))
        let task = Task { [weak self] in
            var failingSince: ContinuousClock.Instant?
            while !Task.isCancelled {
                try? await Task.sleep(for: interval)
                guard let self, !Task.isCancelled else { return }
                do {
                    try await self.renew()
                    if failingSince != nil { progress("the session's Lease \(self.name) is renewed again") }
                    failingSince = nil
                } catch let error as KubeAPIError where error.reason == .notFound {
                    lost(
                        "the session's Lease \(self.name) in \(self.namespace) was deleted (a `ktctl clean` elsewhere, "
                            + "or kubectl); its objects go with it")
                    return
                } catch is CancellationError {
                    return
                } catch {
                    let since = failingSince ?? .now
                    failingSince = since
                    let silent = ContinuousClock.now - since
                    progress(
                        "could not renew the session's Lease \(self.name): \(error); "
                            + (silent + interval >= .seconds(self.durationSeconds)
                                ? "other machines may now see this session as stale and `ktctl clean` it"
                                : "retrying in \(interval)"))
                }
            }
        }
        lock.withLock { renewal = task }
    }

    public func stopRenewing() {
        lock.withLock { renewal }?.cancel()
    }

    /// One renewal: `spec.renewTime` set to the server's time now.
    public func renew() async throws {
        let now = try await Self.serverNow(client)
        let change: JSONValue = ["spec": ["renewTime": .string(MicroTime.format(now))]]
        _ = try await client.patch(Lease.self, name: name, namespace: namespace, .merge(change))
    }

    /// The API server's time: from the last answer's `Date`, or asked for with `GET /version` when there was none.
    public static func serverNow(_ client: KubeClient) async throws -> Date {
        if let now = client.serverClock.now() { return now }
        _ = try await client.send(APIRequest(method: .get, path: "/version", verb: "get", subject: "the version"))
        guard let now = client.serverClock.now() else {
            throw SessionError.cluster(
                "the API server at \(client.access.server) sends no Date header, so session ages cannot be judged by "
                    + "its clock; nothing was changed")
        }
        return now
    }

    // MARK: - Judging others

    /// How a Lease looks from here: its age by the server's clock and whether that makes it stale.
    public struct Verdict: Sendable, Hashable {
        public var age: TimeInterval
        /// The age past which it is stale: its own duration, or the threshold if that is longer.
        public var limit: TimeInterval
        public var isStale: Bool { age > limit }
    }

    /// `lease` judged at `serverNow` (from the `Date` of the answer that listed it). A Lease that names no renewal
    /// is as old as its `creationTimestamp`, which the server wrote.
    public static func verdict(_ lease: Lease, serverNow: Date, threshold: TimeInterval) -> Verdict {
        let duration = TimeInterval(lease.spec?.leaseDurationSeconds ?? defaultDuration)
        return Verdict(age: serverNow.timeIntervalSince(lease.renewed), limit: max(duration, threshold))
    }
}
