import KubeKit

/// The ClusterRoles and ClusterRoleBinding every cluster starts with (`bootstrappolicy.ClusterRoles`), cut down to
/// the kinds ktlab serves: `cluster-admin` (everything), and the user-facing `view`, `edit` and `admin`, which a
/// real cluster aggregates and ktlab stores flattened. Leases are in none of the three, as in Kubernetes.
enum RBACDefaults {
    static let read = ["get", "list", "watch"]
    static let write = ["create", "delete", "deletecollection", "patch", "update"]

    /// `view`: reads everything but Secrets (and who may do what).
    static let view: [PolicyRule] = [
        PolicyRule(
            verbs: read, apiGroups: [""],
            resources: [
                "configmaps", "endpoints", "pods", "pods/log", "pods/status", "serviceaccounts", "services",
                "services/status", "events", "namespaces", "namespaces/status",
            ]),
        PolicyRule(verbs: read, apiGroups: ["discovery.k8s.io"], resources: ["endpointslices"]),
        PolicyRule(
            verbs: read, apiGroups: ["apps"],
            resources: [
                "deployments", "deployments/scale", "deployments/status", "replicasets", "replicasets/scale",
                "replicasets/status",
            ]),
    ]

    /// `edit`: `view`, and writes to workloads, Services, ConfigMaps and Secrets; exec and port-forward.
    static let edit: [PolicyRule] =
        view + [
            PolicyRule(verbs: ["impersonate"], apiGroups: [""], resources: ["serviceaccounts"]),
            PolicyRule(
                verbs: write, apiGroups: [""],
                resources: ["pods", "pods/attach", "pods/exec", "pods/portforward", "pods/proxy"]),
            PolicyRule(
                verbs: read, apiGroups: [""],
                resources: ["pods/attach", "pods/exec", "pods/portforward", "pods/proxy", "secrets", "services/proxy"]),
            PolicyRule(
                verbs: write, apiGroups: [""],
                resources: ["configmaps", "events", "secrets", "serviceaccounts", "services", "services/proxy"]),
            PolicyRule(
                verbs: write, apiGroups: ["apps"],
                resources: [
                    "deployments", "deployments/rollback", "deployments/scale", "replicasets", "replicasets/scale",
                ]
            ),
        ]

    /// `admin`: `edit`, and Roles and RoleBindings (bound in a namespace: that namespace's administrator).
    static let admin: [PolicyRule] =
        edit + [
            PolicyRule(
                verbs: read + write, apiGroups: [ResourceRegistry.rbacGroup], resources: ["rolebindings", "roles"])
        ]

    static let clusterAdmin: [PolicyRule] = [
        PolicyRule(verbs: ["*"], apiGroups: ["*"], resources: ["*"]), PolicyRule(verbs: ["*"], nonResourceURLs: ["*"]),
    ]

    static let bootstrapLabels: JSONValue = ["kubernetes.io/bootstrapping": "rbac-defaults"]

    static var clusterRoles: [JSONValue] {
        [("cluster-admin", clusterAdmin), ("admin", admin), ("edit", edit), ("view", view)].map { name, rules in
            [
                "metadata": [
                    "name": .string(name), "labels": bootstrapLabels,
                    "annotations": ["rbac.authorization.kubernetes.io/autoupdate": "true"],
                ],
                "rules": .array(rules.map(\.json)),
            ]
        }
    }

    /// `cluster-admin` to `system:masters`: the admin token's and the client certificates' group.
    static var clusterRoleBindings: [JSONValue] {
        [
            [
                "metadata": [
                    "name": "cluster-admin", "labels": bootstrapLabels,
                    "annotations": ["rbac.authorization.kubernetes.io/autoupdate": "true"],
                ],
                "roleRef": [
                    "apiGroup": .string(ResourceRegistry.rbacGroup), "kind": "ClusterRole", "name": "cluster-admin",
                ],
                "subjects": [
                    [
                        "apiGroup": .string(ResourceRegistry.rbacGroup), "kind": "Group",
                        "name": .string(RBACAuthorizer.privilegedGroup),
                    ]
                ],
            ]
        ]
    }
}
