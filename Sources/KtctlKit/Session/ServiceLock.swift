import Foundation
import KubeKit

/// One owner of a Service's selector at a time (exchange in selector mode; mesh in auto mode later). The owner is a
/// session: the Service carries the name of its Lease, so the lock lives exactly as long as the session does (a
/// crashed holder's Lease goes stale, and its lock with it), and the original selector, so that anyone can put it
/// back (`ktctl recover`, `ktctl clean`, a teammate). kt-connect's `kt-selector` annotation holds the original, as
/// kt-connect wrote it, so its users' scripts and its `recover` keep working.
public enum ServiceLock {
    /// The original selector as JSON (kt-connect's name).
    public static let originalSelector = "kt-selector"
    /// The holder's Lease, `<name>` in the Service's namespace.
    public static let lease = "ktctl.io/lease"
    /// `alice@laptop session abcde (exchange)`.
    public static let holder = "ktctl.io/holder"
    /// When the holder took it, by the API server's clock (RFC 3339).
    public static let since = "ktctl.io/since"

    /// Who holds `service` now, when a live session does (its Lease exists and is fresh by the server's clock).
    public struct Holder: Sendable, Hashable, CustomStringConvertible {
        public var who: String
        public var since: String
        public var lease: String
        public var description: String { "\(who) since \(since)" }
    }

    /// The live holder of `service`, nil when nobody (or a dead session) holds it.
    public static func holder(of service: Service, client: KubeClient) async throws -> Holder? {
        guard let leaseName = service.metadata.annotations?[lease] else { return nil }
        let found: Lease
        do {
            found = try await client.get(Lease.self, name: leaseName, namespace: service.namespace)
        } catch let error as KubeAPIError where error.reason == .notFound {
            return nil
        }
        let now = try await SessionLease.serverNow(client)
        guard !SessionLease.verdict(found, serverNow: now, threshold: 0).isStale else { return nil }
        return Holder(
            who: service.metadata.annotations?[holder] ?? found.spec?.holderIdentity ?? "a ktctl session",
            since: service.metadata.annotations?[since] ?? "?", lease: leaseName)
    }

    /// Whether kt-connect holds `service`: its `kt-selector` is there without a ktctl lease (kt-connect's exchange or
    /// auto mesh, whose liveness ktctl cannot judge; kt-connect refuses a Service with `kt-selector` the same way).
    public static func heldByKtConnect(_ service: Service) -> Bool {
        service.metadata.annotations?[originalSelector] != nil && service.metadata.annotations?[lease] == nil
            && service.metadata.annotations?[MeshState.annotation] == nil
    }

    /// The refusal for a Service kt-connect holds.
    static func ktConnectRefusal(_ service: Service) -> String {
        "service \(service.name) is exchanged or meshed by kt-connect (it has kt-selector and no ktctl lease); nothing "
            + "was changed. If that kt-connect session is gone, `ktctl recover \(service.name)` restores the service"
    }

    /// What a Service's selector was before a session took it: the annotation, else its selector now.
    public static func original(of service: Service) -> [String: String] {
        if let text = service.metadata.annotations?[originalSelector],
            let data = text.data(using: .utf8),
            let selector = try? JSONDecoder().decode([String: String].self, from: data)
        {
            return selector
        }
        return service.spec?.selector ?? [:]
    }

    static func encode(_ selector: [String: String]) -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        return String(decoding: (try? encoder.encode(selector)) ?? Data("{}".utf8), as: UTF8.self)
    }

    /// `service` taken by the session: its selector replaced by `selector`, the lock and the original recorded on it.
    /// An update with the resourceVersion read, so a concurrent change makes it fail (409) rather than overwrite.
    static func taken(
        _ service: Service, selector: [String: String], lease leaseName: String, holder who: String, at time: Date
    ) -> Service {
        var service = service
        var annotations = service.metadata.annotations ?? [:]
        annotations[originalSelector] = encode(original(of: service))
        annotations[lease] = leaseName
        annotations[holder] = who
        annotations[since] = RFC3339.format(time)
        service.metadata.annotations = annotations
        service.spec?.selector = selector
        return service
    }

    /// Puts the original selector back and drops the lock, if the Service is still held by `leaseName` (or, with
    /// `force`, whoever holds it). Returns what was done.
    public static func restore(
        namespace: String, name: String, lease leaseName: String?, client: KubeClient, force: Bool = false
    ) async -> UndoRunner.Outcome {
        for _ in 0..<5 {
            let service: Service
            do {
                service = try await client.get(Service.self, name: name, namespace: namespace)
            } catch let error as KubeAPIError where error.reason == .notFound {
                return .done("service/\(name) in \(namespace) is gone")
            } catch {
                return .failed("service/\(name) in \(namespace): \(error)")
            }
            let holdingLease = service.metadata.annotations?[lease]
            guard holdingLease != nil || service.metadata.annotations?[originalSelector] != nil else {
                return .done("service/\(name) in \(namespace) was already as it had been")
            }
            if !force, let leaseName, holdingLease != leaseName {
                return .leftAlone(
                    "service/\(name) in \(namespace) is held by another session now (\(holdingLease ?? "?")); left "
                        + "alone")
            }
            var restored = service
            restored.spec?.selector = original(of: service)
            for key in [originalSelector, lease, holder, since] { restored.metadata.annotations?[key] = nil }
            // The annotations were ours alone: the Service goes back to having none, as before.
            if restored.metadata.annotations?.isEmpty == true { restored.metadata.annotations = nil }
            do {
                _ = try await client.update(restored)
                return .done(
                    "restored the selector of service/\(name) in \(namespace) "
                        + "(\(encode(restored.spec?.selector ?? [:])))")
            } catch let error as KubeAPIError where error.reason == .conflict {
                continue
            } catch let error as KubeAPIError where error.reason == .notFound {
                return .done("service/\(name) in \(namespace) is gone")
            } catch {
                return .failed("service/\(name) in \(namespace): \(error)")
            }
        }
        return .failed("service/\(name) in \(namespace) kept changing under the restore; try again")
    }
}
