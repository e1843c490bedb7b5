import Foundation
import KubeKit

/// One thing ktctl asks the API server to let it do, and the file in `deploy/rbac/` that grants it.
public struct Permission: Sendable, Hashable, CustomStringConvertible {
    public var verb: String
    public var group: String
    public var resource: String
    public var subresource: String?
    /// Across the cluster (cluster-scoped kinds, or every namespace), rather than in the session's namespace.
    public var clusterWide: Bool
    /// `deploy/rbac/...`: where this permission is granted.
    public var grantedBy: String

    public init(
        _ verb: String, _ resource: String, group: String = "", subresource: String? = nil, clusterWide: Bool = false,
        grantedBy: String
    ) {
        self.verb = verb
        self.group = group
        self.resource = resource
        self.subresource = subresource
        self.clusterWide = clusterWide
        self.grantedBy = grantedBy
    }

    /// `patch leases.coordination.k8s.io`, `create pods/portforward`.
    public var description: String {
        let name = resource + (subresource.map { "/\($0)" } ?? "") + (group.isEmpty ? "" : ".\(group)")
        return "\(verb) \(name)"
    }
}

/// What ktctl needs, checked before it changes anything (SelfSubjectAccessReview), so that a missing permission is
/// named at the start instead of failing half-way (kt-connect went on without `patch` and silently stopped its
/// heartbeat). The lists are exactly what the code calls; `deploy/rbac/` grants exactly these.
public enum Permissions {
    public static let sessionRole = "deploy/rbac/ktctl-session.yaml"
    public static let clusterRole = "deploy/rbac/ktctl-cluster.yaml"

    /// Every session, in its namespace: its Lease (created, renewed by patch, deleted), the shadow's Secret and Pod,
    /// the port-forward to it. `get` and `create` on `pods/portforward`: API servers before 1.35 authorize the
    /// WebSocket upgrade (a GET) as `get`, 1.35 and later as `create` as well.
    public static let session: [Permission] = [
        Permission("create", "leases", group: "coordination.k8s.io", grantedBy: sessionRole),
        Permission("patch", "leases", group: "coordination.k8s.io", grantedBy: sessionRole),
        Permission("delete", "leases", group: "coordination.k8s.io", grantedBy: sessionRole),
        Permission("create", "secrets", grantedBy: sessionRole),
        Permission("delete", "secrets", grantedBy: sessionRole),
        Permission("create", "pods", grantedBy: sessionRole),
        Permission("get", "pods", grantedBy: sessionRole),
        Permission("delete", "pods", grantedBy: sessionRole),
        Permission("get", "pods", subresource: "portforward", grantedBy: sessionRole),
        Permission("create", "pods", subresource: "portforward", grantedBy: sessionRole),
    ]

    /// `ktctl exchange` (selector mode) beyond a session's own: the Service read and updated (its selector, the lock
    /// and the original on it), its pods read (named target ports), its Endpoints read (the way back is waited for),
    /// the deployments read (`deploy/NAME`), another holder's Lease read.
    public static let exchange: [Permission] = [
        Permission("get", "services", grantedBy: sessionRole),
        Permission("list", "services", grantedBy: sessionRole),
        Permission("update", "services", grantedBy: sessionRole),
        Permission("watch", "services", grantedBy: sessionRole),
        Permission("get", "endpoints", grantedBy: sessionRole),
        Permission("list", "pods", grantedBy: sessionRole),
        Permission("list", "deployments", group: "apps", grantedBy: sessionRole),
        Permission("get", "leases", group: "coordination.k8s.io", grantedBy: sessionRole),
    ]

    /// `ktctl exchange --mode scale`: the exchange's, and the workload read, annotated and scaled.
    public static let scale: [Permission] =
        exchange + [
            Permission("get", "deployments", group: "apps", grantedBy: sessionRole),
            Permission("update", "deployments", group: "apps", grantedBy: sessionRole),
            Permission("patch", "deployments", group: "apps", subresource: "scale", grantedBy: sessionRole),
            Permission("patch", "pods", grantedBy: sessionRole),
        ]

    /// `ktctl mesh --mode auto`: the exchange's, and the stuntman Service and the router pod made and removed, the
    /// members' Leases listed (the last one out restores the Service), the mesh lock (a Lease) taken.
    public static let mesh: [Permission] =
        exchange + [
            Permission("create", "services", grantedBy: sessionRole),
            Permission("delete", "services", grantedBy: sessionRole),
            Permission("list", "leases", group: "coordination.k8s.io", grantedBy: sessionRole),
            Permission("patch", "leases", group: "coordination.k8s.io", grantedBy: sessionRole),
        ]

    /// `ktctl preview` beyond a session's own: the new Service checked for, created and deleted.
    public static let preview: [Permission] = [
        Permission("get", "services", grantedBy: sessionRole),
        Permission("create", "services", grantedBy: sessionRole),
        Permission("delete", "services", grantedBy: sessionRole),
    ]

    /// `ktctl forward`: no session, no change; the Service and its Endpoints read, the pod port-forwarded.
    public static let forward: [Permission] = [
        Permission("get", "services", grantedBy: sessionRole),
        Permission("get", "endpoints", grantedBy: sessionRole),
        Permission("list", "endpoints", grantedBy: sessionRole),
        Permission("watch", "endpoints", grantedBy: sessionRole),
        Permission("get", "pods", grantedBy: sessionRole),
        Permission("get", "pods", subresource: "portforward", grantedBy: sessionRole),
        Permission("create", "pods", subresource: "portforward", grantedBy: sessionRole),
    ]

    /// `ktctl clean` in a namespace: list what sessions made, delete what is stale.
    public static let clean: [Permission] = [
        Permission("list", "leases", group: "coordination.k8s.io", grantedBy: sessionRole),
        Permission("delete", "leases", group: "coordination.k8s.io", grantedBy: sessionRole),
        Permission("list", "secrets", grantedBy: sessionRole),
        Permission("delete", "secrets", grantedBy: sessionRole),
        Permission("list", "pods", grantedBy: sessionRole),
        Permission("delete", "pods", grantedBy: sessionRole),
    ]

    /// tun mode's view of the whole cluster: its ranges (ServiceCIDRs, the nodes' podCIDRs, else every ClusterIP and
    /// pod IP) and its namespaces (so that `svc.ns` names resolve). Without them tun mode routes what it can see in
    /// its namespace, and says so.
    public static let clusterRanges: [Permission] = [
        Permission("list", "servicecidrs", group: "networking.k8s.io", clusterWide: true, grantedBy: clusterRole),
        Permission("list", "nodes", clusterWide: true, grantedBy: clusterRole),
        Permission("list", "namespaces", clusterWide: true, grantedBy: clusterRole),
        Permission("list", "services", clusterWide: true, grantedBy: clusterRole),
        Permission("list", "pods", clusterWide: true, grantedBy: clusterRole),
    ]

    /// The permissions of `needed` the caller lacks, asked of the API server all at once; nil when the server does
    /// not answer SelfSubjectAccessReviews (then nothing is known, and the command goes on).
    public static func missing(_ needed: [Permission], client: KubeClient, namespace: String) async -> [Permission]? {
        await withTaskGroup(of: (Permission, Bool?).self) { group in
            for permission in needed {
                group.addTask {
                    let review = SelfSubjectAccessReview(
                        .init(
                            verb: permission.verb, group: permission.group, resource: permission.resource,
                            subresource: permission.subresource, namespace: permission.clusterWide ? nil : namespace))
                    let answer = try? await client.create(review)
                    return (permission, answer?.status?.allowed)
                }
            }
            var missing: [Permission] = []
            var unknown = false
            for await (permission, allowed) in group {
                switch allowed {
                case true?: break
                case false?: missing.append(permission)
                case nil: unknown = true
                }
            }
            if unknown { return nil }
            return needed.filter { missing.contains($0) }
        }
    }

    /// Fails, naming each missing permission and the file that grants it, when the caller lacks any of `needed`
    /// (`command` names the command in the message; `changes`: the command would change something, so the message
    /// says nothing was).
    public static func require(
        _ needed: [Permission], command: String, client: KubeClient, namespace: String, changes: Bool = true
    ) async throws {
        guard let missing = await missing(needed, client: client, namespace: namespace), !missing.isEmpty else {
            return
        }
        throw ConnectError.permissions(
            "ktctl \(command) cannot run here: the cluster does not let you\n"
                + explain(missing, namespace: namespace, user: nil) + (changes ? "\nnothing was changed" : ""))
    }

    /// What to say when permissions are missing: each one, where, and the file that grants it.
    public static func explain(_ missing: [Permission], namespace: String, user: String?) -> String {
        var lines = missing.map { permission in
            "  \(permission)" + (permission.clusterWide ? " (cluster-wide)" : " in namespace \(namespace)")
                + "  — granted by \(permission.grantedBy)"
        }
        let files = Array(Set(missing.map(\.grantedBy))).sorted()
        lines.append(
            "ask a cluster admin to apply "
                + files.map { "\($0)" + ($0 == sessionRole ? " in namespace \(namespace)" : "") }.joined(
                    separator: " and ")
                + (user.map { " and bind it to \($0)" } ?? "") + " (README: \"Permissions\")")
        return lines.joined(separator: "\n")
    }
}
