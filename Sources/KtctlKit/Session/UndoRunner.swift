import Foundation
import KubeKit
import NIOConcurrencyHelpers

/// Carries out `Undo`s: for a session stopping, for the next session after a crash, and for `ktctl clean`. Each
/// checks first that what it would undo is still what the session made.
public struct UndoRunner: Sendable {
    /// The client for cluster entries; nil when the entry's cluster is not the one at hand.
    public var client: KubeClient?
    /// After a Service has left a shadow, how long the proxies get to follow before the shadow may go. A live
    /// session's drain already waits for its connections to stop coming; a dead session's undo (clean, recover, a
    /// crashed journal) has no drain, and a pod deleted under a rule that still points at it leaves the SYNs that
    /// rule sent retransmitting into nothing (conntrack keeps their DNAT) until the client times out.
    public var settle: Duration = .zero

    public init(client: KubeClient?, settle: Duration = .zero) {
        self.client = client
        self.settle = settle
    }

    /// A wait the user may skip (scale mode's wait for ready replicas): a second interrupt while it runs ends only
    /// the wait, and the undoing goes on.
    public var skippable: SkippableWait?

    /// kube-proxy's default minimum sync period is 1 s; ktlab's proxy follows in tens of milliseconds.
    public static let proxySettle = Duration.seconds(1)

    public enum Outcome: Sendable, Hashable {
        /// Undone, or nothing was left to undo; the words say which.
        case done(String)
        /// Not ours any more (replaced, or changed since): left as it is, the entry closed.
        case leftAlone(String)
        /// Could not be done now; the entry stays open for `ktctl clean`.
        case failed(String)

        public var closesEntry: Bool {
            if case .failed = self { return false }
            return true
        }
    }

    public func run(_ undo: Undo) async -> Outcome {
        switch undo {
        case .deleteObject(let object):
            return await delete(object)
        case .restoreFile(let path, let original, let written):
            return Self.restore(path: path, original: original, written: written)
        case .revertResolvedLink(let link):
            guard let resolvectl = ResolvedWiring.locate() else {
                return .done("systemd-resolved's settings for \(link) go with the link")
            }
            await ResolvedWiring(resolvectl: resolvectl).revert(link: link)
            return .done("reverted systemd-resolved's settings for \(link)")
        case .goesWithProcess(let what):
            return .done("\(what) went with the process")
        case .restoreSelector(let namespace, let service, let lease, let shadowPod):
            guard let client else { return .failed("service/\(service) in \(namespace): not connected to its cluster") }
            let outcome = await ServiceLock.restore(namespace: namespace, name: service, lease: lease, client: client)
            if case .done = outcome, let shadowPod {
                await Self.waitForEndpoints(
                    of: service, namespace: namespace, without: shadowPod, client: client, timeout: .seconds(5))
                try? await Task.sleep(for: settle)
            }
            return outcome
        case .leaveMesh(let namespace, let service, let lease):
            guard let client else { return .failed("service/\(service) in \(namespace): not connected to its cluster") }
            return await MeshState.leave(
                namespace: namespace, service: service, lease: lease, client: client,
                settle: max(settle, .milliseconds(500)))
        case .scaleBack(let workload, let replicas, let waitSeconds):
            guard let client else { return .failed("\(workload): not connected to its cluster") }
            skippable?.begin("for \(workload) to be ready")
            defer { skippable?.end() }
            return await Self.scaleBack(
                workload, to: replicas, wait: .seconds(waitSeconds), client: client, skip: skippable)
        }
    }

    /// Waits until the Service's Endpoints no longer name `pod` (the proxies follow Endpoints).
    /// Waits (at most `timeout`) until the Service's Endpoints list `pod` as ready: the Service reaches it.
    public static func waitForEndpoints(
        of service: String, namespace: String, with pod: String, client: KubeClient, timeout: Duration
    ) async -> Bool {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if let endpoints = try? await client.get(Endpoints.self, name: service, namespace: namespace),
                (endpoints.subsets ?? []).flatMap({ $0.addresses ?? [] }).contains(where: { $0.targetRef?.name == pod })
            {
                return true
            }
            try? await Task.sleep(for: .milliseconds(100))
        }
        return false
    }

    static func waitForEndpoints(
        of service: String, namespace: String, without pod: String, client: KubeClient, timeout: Duration
    ) async {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            guard let endpoints = try? await client.get(Endpoints.self, name: service, namespace: namespace) else {
                return
            }
            let names = (endpoints.subsets ?? []).flatMap { ($0.addresses ?? []) + ($0.notReadyAddresses ?? []) }
                .compactMap { $0.targetRef?.name }
            if !names.contains(pod) { return }
            try? await Task.sleep(for: .milliseconds(100))
        }
    }

    /// Scales `workload` back and waits for its ready replicas (until `wait`, or until `skip` is skipped: a second
    /// interrupt).
    static func scaleBack(
        _ workload: ObjectRef, to replicas: Int, wait: Duration, client: KubeClient, skip: SkippableWait? = nil
    ) async -> Outcome {
        do {
            _ = try await client.scale(
                Deployment.self, name: workload.name, namespace: workload.namespace, to: replicas)
            // The record of who scaled it goes with the scale.
            for _ in 0..<5 {
                var deployment = try await client.get(
                    Deployment.self, name: workload.name, namespace: workload.namespace)
                for key in [ScaleLock.replicas, ServiceLock.lease, ServiceLock.holder] {
                    deployment.metadata.annotations?[key] = nil
                }
                if deployment.metadata.annotations?.isEmpty == true { deployment.metadata.annotations = nil }
                do {
                    _ = try await client.update(deployment)
                    break
                } catch let error as KubeAPIError where error.reason == .conflict {
                    continue
                }
            }
        } catch let error as KubeAPIError where error.reason == .notFound {
            return .done("\(workload) is gone")
        } catch {
            return .failed("\(workload): \(error)")
        }
        let deadline = ContinuousClock.now + wait
        while ContinuousClock.now < deadline {
            if let deployment = try? await client.get(
                Deployment.self, name: workload.name, namespace: workload.namespace),
                (deployment.status?.readyReplicas ?? 0) >= replicas
            {
                return .done("scaled \(workload) back to \(replicas), ready")
            }
            if skip?.isSkipped == true {
                return .done(
                    "scaled \(workload) back to \(replicas) (not waited for: interrupted; they go on starting)")
            }
            try? await Task.sleep(for: .milliseconds(250))
        }
        return .done("scaled \(workload) back to \(replicas) (not all ready within \(wait); they go on starting)")
    }

    func delete(_ object: ObjectRef) async -> Outcome {
        guard let client else {
            return .failed("\(object): not connected to its cluster")
        }
        var options = DeleteOptions()
        options.preconditionUID = object.uid
        // A shadow needs no graceful end: its connections are ours and already closed.
        if object.kind == "Pod" { options.gracePeriodSeconds = 0 }
        do {
            _ = try await client.send(
                try .delete(object.resource, name: object.name, namespace: object.namespace, options: options))
            return .done("deleted \(object)")
        } catch let error as KubeAPIError where error.reason == .notFound {
            return .done("\(object) was already gone")
        } catch let error as KubeAPIError where error.reason == .conflict {
            return .leftAlone("\(object) is another object now (not this session's); left alone")
        } catch {
            return .failed("\(object): \(error)")
        }
    }

    static func restore(path: String, original: String, written: String) -> Outcome {
        guard let current = try? String(contentsOfFile: path, encoding: .utf8) else {
            return .leftAlone("\(path) cannot be read; left as it is")
        }
        if current == original { return .done("\(path) was already as it had been") }
        guard current == written else {
            return .leftAlone(
                "\(path) changed since ktctl wrote it; the newer file is kept (the original was:\n"
                    + original.split(separator: "\n").map { "    " + $0 }.joined(separator: "\n") + ")")
        }
        do {
            try AtomicFile.write(path, text: original)
            return .done("restored \(path)")
        } catch {
            return .failed("\(path): \(error)")
        }
    }
}

/// A wait in the undoing that a second interrupt ends (instead of abandoning the whole clean-up).
public final class SkippableWait: Sendable {
    private let state = NIOLockedValueBox<(what: String?, skipped: Bool)>((nil, false))

    public init() {}

    func begin(_ what: String) { state.withLockedValue { $0 = (what, false) } }
    func end() { state.withLockedValue { $0 = (nil, false) } }
    var isSkipped: Bool { state.withLockedValue { $0.skipped } }

    /// Skips the wait in progress; what it waited for, or nil when none runs (the interrupt is then the clean-up's).
    public func skip() -> String? {
        state.withLockedValue { state in
            guard let what = state.what, !state.skipped else { return nil }
            state.skipped = true
            return what
        }
    }
}
