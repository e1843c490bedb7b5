import KubeKit

/// The kinds ktlab serves, with what discovery says about them.
public struct ServedResource: Sendable, Hashable {
    public var type: ResourceType
    public var singular: String
    public var shortNames: [String]
    public var categories: [String]
    /// Subresources and their verbs (`status`, `scale`, `log`, `exec`, `portforward`).
    public var subresources: [String: [String]]
    /// The verbs discovery lists for the resource itself.
    public var verbs: [String] = ServedResource.objectVerbs
    /// Whether the main resource's writes leave `status` alone (the kind has a status subresource).
    public var hasStatus: Bool { subresources["status"] != nil }
    /// A review (SelfSubjectAccessReview, ...): created to get an answer, never stored.
    public var isReview: Bool { verbs == ["create"] }

    /// The verbs of a stored kind.
    public static let objectVerbs = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]
}

public enum ResourceRegistry {
    static let statusVerbs = ["get", "patch", "update"]

    public static let serviceAccount = ResourceType(
        group: "", version: "v1", plural: "serviceaccounts", kind: "ServiceAccount", namespaced: true)

    // MARK: RBAC and reviews

    public static let role = ResourceType(
        group: rbacGroup, version: "v1", plural: "roles", kind: "Role", namespaced: true)
    public static let roleBinding = ResourceType(
        group: rbacGroup, version: "v1", plural: "rolebindings", kind: "RoleBinding", namespaced: true)
    public static let clusterRole = ResourceType(
        group: rbacGroup, version: "v1", plural: "clusterroles", kind: "ClusterRole", namespaced: false)
    public static let clusterRoleBinding = ResourceType(
        group: rbacGroup, version: "v1", plural: "clusterrolebindings", kind: "ClusterRoleBinding", namespaced: false)
    public static let selfSubjectRulesReview = ResourceType(
        group: "authorization.k8s.io", version: "v1", plural: "selfsubjectrulesreviews",
        kind: "SelfSubjectRulesReview", namespaced: false)
    public static let selfSubjectReview = ResourceType(
        group: "authentication.k8s.io", version: "v1", plural: "selfsubjectreviews", kind: "SelfSubjectReview",
        namespaced: false)
    public static let rbacGroup = "rbac.authorization.k8s.io"

    public static let all: [ServedResource] = [
        ServedResource(
            type: Namespace.resource, singular: "namespace", shortNames: ["ns"], categories: [],
            subresources: ["status": statusVerbs]),
        ServedResource(
            type: Pod.resource, singular: "pod", shortNames: ["po"], categories: ["all"],
            subresources: [
                "status": statusVerbs, "log": ["get"], "exec": ["create", "get"], "portforward": ["create", "get"],
            ]),
        ServedResource(
            type: Service.resource, singular: "service", shortNames: ["svc"], categories: ["all"],
            subresources: ["status": statusVerbs]),
        ServedResource(
            type: Endpoints.resource, singular: "endpoints", shortNames: ["ep"], categories: [], subresources: [:]),
        ServedResource(
            type: ConfigMap.resource, singular: "configmap", shortNames: ["cm"], categories: [], subresources: [:]),
        ServedResource(type: Secret.resource, singular: "secret", shortNames: [], categories: [], subresources: [:]),
        ServedResource(
            type: serviceAccount,
            singular: "serviceaccount", shortNames: ["sa"], categories: [], subresources: [:]),
        ServedResource(
            type: Node.resource, singular: "node", shortNames: ["no"], categories: [],
            subresources: ["status": statusVerbs]),
        ServedResource(type: Event.resource, singular: "event", shortNames: ["ev"], categories: [], subresources: [:]),
        ServedResource(
            type: Deployment.resource, singular: "deployment", shortNames: ["deploy"], categories: ["all"],
            subresources: ["status": statusVerbs, "scale": statusVerbs]),
        ServedResource(
            type: ReplicaSet.resource, singular: "replicaset", shortNames: ["rs"], categories: ["all"],
            subresources: ["status": statusVerbs, "scale": statusVerbs]),
        ServedResource(
            type: EndpointSlice.resource, singular: "endpointslice", shortNames: [], categories: [], subresources: [:]),
        ServedResource(
            type: ServiceCIDR.resource, singular: "servicecidr", shortNames: [], categories: [],
            subresources: ["status": statusVerbs]),
        ServedResource(type: Lease.resource, singular: "lease", shortNames: [], categories: [], subresources: [:]),
        ServedResource(type: role, singular: "role", shortNames: [], categories: [], subresources: [:]),
        ServedResource(type: roleBinding, singular: "rolebinding", shortNames: [], categories: [], subresources: [:]),
        ServedResource(type: clusterRole, singular: "clusterrole", shortNames: [], categories: [], subresources: [:]),
        ServedResource(
            type: clusterRoleBinding, singular: "clusterrolebinding", shortNames: [], categories: [], subresources: [:]
        ),
        ServedResource(
            type: SelfSubjectAccessReview.resource, singular: "selfsubjectaccessreview", shortNames: [],
            categories: [], subresources: [:], verbs: ["create"]),
        ServedResource(
            type: selfSubjectRulesReview, singular: "selfsubjectrulesreview", shortNames: [], categories: [],
            subresources: [:], verbs: ["create"]),
        ServedResource(
            type: selfSubjectReview, singular: "selfsubjectreview", shortNames: [], categories: [], subresources: [:],
            verbs: ["create"]),
    ]

    /// The served resource at `/api/v1/...` or `/apis/<group>/<version>/...`.
    public static func find(group: String, version: String, plural: String) -> ServedResource? {
        all.first { $0.type.group == group && $0.type.version == version && $0.type.plural == plural }
    }

    /// Group versions in discovery order (core first).
    public static var groupVersions: [(group: String, version: String)] {
        var seen: [(String, String)] = []
        for resource in all where !seen.contains(where: { $0 == (resource.type.group, resource.type.version) }) {
            seen.append((resource.type.group, resource.type.version))
        }
        return seen
    }
}
