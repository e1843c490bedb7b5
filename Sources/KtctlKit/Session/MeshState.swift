import Foundation
import KubeKit
import RouterKit

/// An auto mesh's shared objects, what several commands need of them (mesh joins and leaves; exchange refuses a meshed
/// Service; recover and clean put one back), in one place.
///
/// A meshed Service selects the router pod `<svc>-kt-router`; its original selector is kept in `kt-selector` (as
/// kt-connect kept it) and `ktctl.io/mesh` names the router. The stuntman Service `<svc>-kt-stuntman` selects the
/// original pods (the router's default upstream). Neither belongs to one session: membership is the set of live
/// session Leases labelled `ktctl.io/mesh-service: <svc>` (never a counter a crash can leave wrong), and whoever
/// leaves last (or `recover`, or `clean` once no member is live) puts the Service back and removes both. Joining and
/// leaving hold the mesh lock (a Lease `<svc>-kt-mesh-lock`, renewed while held, stale 9 s after a holder died), so a
/// newcomer and the last one out never cross.
public enum MeshState {
    /// On the Service: the router pod's name, while an auto mesh holds it.
    public static let annotation = "ktctl.io/mesh"
    /// The router's `/healthz` and `/routes`: 18021, or the next port that is not one of the Service's.
    public static func healthPort(avoiding ports: [Int]) -> Int {
        var port = 18021
        while ports.contains(port) { port += 1 }
        return port
    }
    static let lockDuration = 9
    /// On the mesh lock's Lease: the Service it locks.
    public static let lockLabel = "ktctl.io/mesh-lock"

    public static func routerName(_ service: String) -> String { "\(service)-kt-router" }
    public static func stuntmanName(_ service: String) -> String { "\(service)-kt-stuntman" }
    public static func shadowName(_ service: String, mark: String) -> String { "\(service)-kt-mesh-\(mark)" }
    static func lockName(_ service: String) -> String { "\(service)-kt-mesh-lock" }

    public static func isMeshed(_ service: Service) -> Bool {
        service.metadata.annotations?[annotation] != nil
    }

    /// The live members of `service`'s mesh (their Leases), but `excluding`.
    public static func members(
        of service: String, namespace: String, client: KubeClient, excluding: String? = nil
    ) async throws -> [Lease] {
        let leases = try await client.list(
            Lease.self, namespace: namespace,
            options: ListOptions(labelSelector: "\(MeshRoute.serviceLabel)=\(service)")
        ).items
        let now = try await SessionLease.serverNow(client)
        return leases.filter { lease in
            lease.name != excluding && !SessionLease.verdict(lease, serverNow: now, threshold: 0).isStale
        }
    }

    /// `alice@laptop (VERSION: a), bob@desk (x-dev: b)`.
    public static func describe(_ members: [Lease]) -> String {
        members.map { lease in
            let who =
                lease.metadata.annotations.flatMap { annotations in
                    annotations[SessionLabels.user].map { "\($0)@\(annotations[SessionLabels.host] ?? "?")" }
                } ?? lease.spec?.holderIdentity ?? lease.name
            let route = lease.metadata.annotations?[MeshRoute.annotation].flatMap(MeshRoute.decode)
            return who + (route.map { " (\($0.header): \($0.value))" } ?? "")
        }.sorted().joined(separator: ", ")
    }

    // MARK: - The lock

    /// Takes the mesh lock of `service` (waiting while another holds it, taking it over once stale); returns a way to
    /// let it go.
    static func lock(
        _ service: String, namespace: String, holder: String, client: KubeClient, timeout: Duration = .seconds(90)
    ) async throws -> @Sendable () async -> Void {
        let name = lockName(service)
        let deadline = ContinuousClock.now + timeout
        while true {
            let now = try await SessionLease.serverNow(client)
            let lease = Lease(
                metadata: ObjectMeta(
                    name: name, namespace: namespace,
                    labels: [SessionLabels.managedBy: SessionLabels.manager, lockLabel: service]),
                spec: Lease.Spec(
                    holderIdentity: holder, leaseDurationSeconds: lockDuration, acquireTime: MicroTime.format(now),
                    renewTime: MicroTime.format(now)))
            do {
                let created = try await client.create(lease, namespace: namespace)
                let uid = created.metadata.uid
                // Renewed while held (making a router can take as long as an image pull), so that a holder killed
                // meanwhile lets go within `lockDuration`.
                let renewal = Task {
                    while !Task.isCancelled {
                        try? await Task.sleep(for: .seconds(lockDuration / 3))
                        guard !Task.isCancelled, let now = try? await SessionLease.serverNow(client) else { continue }
                        _ = try? await client.patch(
                            Lease.self, name: name, namespace: namespace,
                            .merge(["spec": ["renewTime": .string(MicroTime.format(now))]]))
                    }
                }
                return {
                    renewal.cancel()
                    var options = DeleteOptions()
                    options.preconditionUID = uid
                    _ = try? await client.delete(Lease.self, name: name, namespace: namespace, options: options)
                }
            } catch let error as KubeAPIError where error.reason == .alreadyExists {
                if let held = try? await client.get(Lease.self, name: name, namespace: namespace),
                    SessionLease.verdict(held, serverNow: try await SessionLease.serverNow(client), threshold: 0)
                        .isStale
                {
                    var options = DeleteOptions()
                    options.preconditionUID = held.metadata.uid
                    _ = try? await client.delete(Lease.self, name: name, namespace: namespace, options: options)
                    continue
                }
                guard ContinuousClock.now < deadline else {
                    throw ConnectError.other(
                        "service \(service)'s mesh is being changed by someone else (lease/\(name) held for more than "
                            + "\(timeout)); try again; nothing was changed")
                }
                try await Task.sleep(for: .milliseconds(200))
            }
        }
    }

    // MARK: - Leaving

    /// The session of `lease` leaves `service`'s mesh: when no other live member is left, the Service gets its
    /// selector back (and its Endpoints leave the router) before the router and the stuntman go. Safe to run again
    /// and after a crash.
    static func leave(namespace: String, service: String, lease: String, client: KubeClient, settle: Duration)
        async -> UndoRunner.Outcome
    {
        let release: @Sendable () async -> Void
        do {
            release = try await lock(service, namespace: namespace, holder: "leaving: \(lease)", client: client)
        } catch {
            return .failed("service/\(service) in \(namespace): leaving its mesh: \(error)")
        }
        let outcome: UndoRunner.Outcome
        do {
            let others = try await members(of: service, namespace: namespace, client: client, excluding: lease)
            if others.isEmpty {
                outcome = await tearDown(service, namespace: namespace, client: client, settle: settle)
            } else {
                outcome = .done(
                    "left service/\(service)'s mesh; \(others.count) other session(s) still mesh it "
                        + "(\(describe(others)))")
            }
        } catch {
            outcome = .failed("service/\(service) in \(namespace): leaving its mesh: \(error)")
        }
        await release()
        return outcome
    }

    /// Puts `service` back from an auto mesh (selector, annotations), waits until its Endpoints have left the router,
    /// then removes the router and the stuntman. Whoever calls it has made sure no member is left (or is `recover`).
    public static func tearDown(_ service: String, namespace: String, client: KubeClient, settle: Duration) async
        -> UndoRunner.Outcome
    {
        var lines: [String] = []
        for attempt in 0..<5 {
            guard let current = try? await client.get(Service.self, name: service, namespace: namespace) else {
                lines.append("service/\(service) in \(namespace) is gone")
                break
            }
            guard isMeshed(current) else { break }
            var restored = current
            restored.spec?.selector = ServiceLock.original(of: current)
            for key in [ServiceLock.originalSelector, annotation, ServiceLock.holder, ServiceLock.since] {
                restored.metadata.annotations?[key] = nil
            }
            if restored.metadata.annotations?.isEmpty == true { restored.metadata.annotations = nil }
            do {
                _ = try await client.update(restored)
                lines.append(
                    "restored the selector of service/\(service) in \(namespace) "
                        + "(\(ServiceLock.encode(restored.spec?.selector ?? [:])))")
                await UndoRunner.waitForEndpoints(
                    of: service, namespace: namespace, without: routerName(service), client: client,
                    timeout: .seconds(10))
                try? await Task.sleep(for: settle)
                break
            } catch let error as KubeAPIError where error.reason == .conflict && attempt < 4 {
                continue
            } catch {
                return .failed("service/\(service) in \(namespace): \(error)")
            }
        }
        var options = DeleteOptions()
        options.gracePeriodSeconds = 0
        if (try? await client.delete(Pod.self, name: routerName(service), namespace: namespace, options: options))
            == true
        {
            lines.append("deleted pod/\(routerName(service))")
        }
        if (try? await client.delete(Service.self, name: stuntmanName(service), namespace: namespace)) == true {
            lines.append("deleted service/\(stuntmanName(service))")
        }
        return .done(lines.isEmpty ? "service/\(service)'s mesh was already gone" : lines.joined(separator: "; "))
    }
}
