import Foundation
import KubeKit
import LabKit
import Testing

/// `RBACAuthorizer` over RBAC objects in memory: every way a rule matches or does not, the subjects, the scopes of
/// the two kinds of binding, and the words of a refusal.
@Suite struct RBACAuthorizerTests {
    static let dev = UserInfo.restricted("dev")

    static func role(_ name: String, namespace: String? = nil, _ rules: [PolicyRule]) -> JSONValue {
        var metadata: JSONValue = ["name": .string(name)]
        if let namespace { metadata["namespace"] = .string(namespace) }
        return ["metadata": metadata, "rules": .array(rules.map(\.json))]
    }

    static func binding(
        _ name: String, namespace: String? = nil, role: String, kind: String = "Role",
        subjects: [(kind: String, name: String, namespace: String?)] = [("User", "dev", nil)]
    ) -> JSONValue {
        var metadata: JSONValue = ["name": .string(name)]
        if let namespace { metadata["namespace"] = .string(namespace) }
        return [
            "metadata": metadata,
            "roleRef": ["apiGroup": "rbac.authorization.k8s.io", "kind": .string(kind), "name": .string(role)],
            "subjects": .array(
                subjects.map { subject in
                    var json: JSONValue = ["kind": .string(subject.kind), "name": .string(subject.name)]
                    if let namespace = subject.namespace { json["namespace"] = .string(namespace) }
                    return json
                }),
        ]
    }

    /// One Role in `default` with `rules`, bound to dev there.
    static func devRole(_ rules: [PolicyRule]) -> RBACAuthorizer {
        RBACAuthorizer(
            roles: [role("r", namespace: "default", rules)],
            roleBindings: [binding("b", namespace: "default", role: "r")])
    }

    static func allowed(_ authorizer: RBACAuthorizer, _ request: AccessRequest, as user: UserInfo = dev) -> Bool {
        authorizer.decide(user, request).allowed
    }

    // MARK: - Identities

    @Test func systemMastersMayDoAnythingWithNoBindingAtAll() {
        let empty = RBACAuthorizer()
        #expect(Self.allowed(empty, .resource("delete", resource: "nodes", name: "n"), as: .admin))
        #expect(Self.allowed(empty, .nonResource("post", path: "/anything"), as: .admin))
        #expect(empty.decide(.admin, .resource("list", resource: "pods")).reason == "")
        #expect(!Self.allowed(empty, .resource("list", resource: "pods", namespace: "default")))
    }

    @Test func everyAuthenticatedUserHasDiscoveryAndTheSelfReviews() {
        let empty = RBACAuthorizer()
        for path in [
            "/api", "/api/v1", "/apis", "/apis/apps/v1", "/version", "/healthz", "/readyz", "/livez",
            "/openapi/v2", "/openapi/v3/apis/apps/v1",
        ] {
            #expect(Self.allowed(empty, .nonResource("get", path: path)), "\(path)")
        }
        #expect(!Self.allowed(empty, .nonResource("post", path: "/api")))
        #expect(!Self.allowed(empty, .nonResource("get", path: "/metrics")))
        #expect(
            Self.allowed(
                empty, .resource("create", group: "authorization.k8s.io", resource: "selfsubjectaccessreviews")))
        #expect(
            Self.allowed(empty, .resource("create", group: "authorization.k8s.io", resource: "selfsubjectrulesreviews"))
        )
        #expect(
            Self.allowed(empty, .resource("create", group: "authentication.k8s.io", resource: "selfsubjectreviews")))
        // Not in the group: nothing (ktlab has no such user, but the rule is the group's).
        #expect(!Self.allowed(empty, .nonResource("get", path: "/api"), as: UserInfo(name: "x", groups: [])))
    }

    // MARK: - Rules

    @Test func verbsMatchByNameOrStar() {
        let authorizer = Self.devRole([PolicyRule(verbs: ["get", "list"], apiGroups: [""], resources: ["pods"])])
        #expect(Self.allowed(authorizer, .resource("get", resource: "pods", namespace: "default", name: "p")))
        #expect(Self.allowed(authorizer, .resource("list", resource: "pods", namespace: "default")))
        #expect(!Self.allowed(authorizer, .resource("watch", resource: "pods", namespace: "default")))
        #expect(!Self.allowed(authorizer, .resource("delete", resource: "pods", namespace: "default", name: "p")))
        let star = Self.devRole([PolicyRule(verbs: ["*"], apiGroups: [""], resources: ["pods"])])
        for verb in ["get", "list", "watch", "create", "update", "patch", "delete", "deletecollection"] {
            #expect(Self.allowed(star, .resource(verb, resource: "pods", namespace: "default")), "\(verb)")
        }
    }

    @Test func apiGroupsMatchExactlyWithTheEmptyStringForCoreOrStar() {
        let core = Self.devRole([PolicyRule(verbs: ["list"], apiGroups: [""], resources: ["deployments", "pods"])])
        #expect(Self.allowed(core, .resource("list", resource: "pods", namespace: "default")))
        #expect(!Self.allowed(core, .resource("list", group: "apps", resource: "deployments", namespace: "default")))
        let apps = Self.devRole([PolicyRule(verbs: ["list"], apiGroups: ["apps"], resources: ["deployments"])])
        #expect(Self.allowed(apps, .resource("list", group: "apps", resource: "deployments", namespace: "default")))
        let any = Self.devRole([PolicyRule(verbs: ["list"], apiGroups: ["*"], resources: ["deployments", "pods"])])
        #expect(Self.allowed(any, .resource("list", group: "apps", resource: "deployments", namespace: "default")))
        #expect(Self.allowed(any, .resource("list", resource: "pods", namespace: "default")))
        let none = Self.devRole([PolicyRule(verbs: ["list"], resources: ["pods"])])
        #expect(!Self.allowed(none, .resource("list", resource: "pods", namespace: "default")))
    }

    @Test func resourcesAndSubresources() {
        let pods = Self.devRole([PolicyRule(verbs: ["*"], apiGroups: [""], resources: ["pods"])])
        // A rule for pods says nothing of their subresources.
        #expect(
            !Self.allowed(
                pods, .resource("create", resource: "pods", subresource: "portforward", namespace: "default", name: "p")
            ))
        #expect(!Self.allowed(pods, .resource("get", resource: "pods", subresource: "log", namespace: "default")))
        let forward = Self.devRole([
            PolicyRule(verbs: ["create"], apiGroups: [""], resources: ["pods/portforward"]),
            PolicyRule(verbs: ["get"], apiGroups: [""], resources: ["pods/log"]),
        ])
        #expect(
            Self.allowed(
                forward,
                .resource("create", resource: "pods", subresource: "portforward", namespace: "default", name: "p")))
        #expect(
            !Self.allowed(
                forward, .resource("create", resource: "pods", subresource: "exec", namespace: "default", name: "p")))
        #expect(
            Self.allowed(
                forward, .resource("get", resource: "pods", subresource: "log", namespace: "default", name: "p")))
        // ... nor the other way round.
        #expect(!Self.allowed(forward, .resource("create", resource: "pods", namespace: "default")))
        // `*/scale`: the scale subresource of anything; `*`: everything, subresources included.
        let scale = Self.devRole([PolicyRule(verbs: ["get", "update"], apiGroups: ["*"], resources: ["*/scale"])])
        #expect(
            Self.allowed(
                scale,
                .resource(
                    "update", group: "apps", resource: "deployments", subresource: "scale", namespace: "default",
                    name: "d")))
        #expect(
            !Self.allowed(
                scale, .resource("get", group: "apps", resource: "deployments", namespace: "default", name: "d")))
        #expect(
            !Self.allowed(
                scale,
                .resource("get", group: "apps", resource: "deployments", subresource: "status", namespace: "default")))
        let everything = Self.devRole([PolicyRule(verbs: ["get"], apiGroups: ["*"], resources: ["*"])])
        #expect(
            Self.allowed(
                everything,
                .resource("get", group: "apps", resource: "deployments", subresource: "status", namespace: "default")))
        #expect(Self.allowed(everything, .resource("get", resource: "secrets", namespace: "default", name: "s")))
    }

    @Test func resourceNamesLimitToNamedObjectsAndNeverMatchCreateOrList() {
        let named = Self.devRole([
            PolicyRule(
                verbs: ["get", "list", "watch", "create", "update"], apiGroups: [""], resources: ["configmaps"],
                resourceNames: ["settings"])
        ])
        #expect(Self.allowed(named, .resource("get", resource: "configmaps", namespace: "default", name: "settings")))
        #expect(
            Self.allowed(named, .resource("update", resource: "configmaps", namespace: "default", name: "settings")))
        #expect(!Self.allowed(named, .resource("get", resource: "configmaps", namespace: "default", name: "other")))
        #expect(!Self.allowed(named, .resource("list", resource: "configmaps", namespace: "default")))
        #expect(!Self.allowed(named, .resource("watch", resource: "configmaps", namespace: "default")))
        #expect(!Self.allowed(named, .resource("create", resource: "configmaps", namespace: "default")))
        // A list or watch by `metadata.name` names the object (the request reader sets the name from it).
        #expect(Self.allowed(named, .resource("watch", resource: "configmaps", namespace: "default", name: "settings")))
    }

    @Test func nonResourceURLsExactOrWithATrailingStar() {
        let authorizer = RBACAuthorizer(
            clusterRoles: [
                Self.role("metrics", [PolicyRule(verbs: ["get"], nonResourceURLs: ["/metrics", "/logs/*"])])
            ],
            clusterRoleBindings: [Self.binding("metrics", role: "metrics", kind: "ClusterRole")])
        #expect(Self.allowed(authorizer, .nonResource("get", path: "/metrics")))
        #expect(!Self.allowed(authorizer, .nonResource("get", path: "/metrics/slis")))
        #expect(Self.allowed(authorizer, .nonResource("get", path: "/logs/kubelet.log")))
        #expect(!Self.allowed(authorizer, .nonResource("post", path: "/logs/x")))
    }

    // MARK: - Subjects

    @Test func subjectsByUserGroupAndServiceAccount() {
        let rules = [PolicyRule(verbs: ["list"], apiGroups: [""], resources: ["pods"])]
        let authorizer = RBACAuthorizer(
            roles: [Self.role("r", namespace: "default", rules), Self.role("r", namespace: "team", rules)],
            roleBindings: [
                Self.binding("group", namespace: "default", role: "r", subjects: [("Group", "developers", nil)]),
                // A ServiceAccount without a namespace is the binding's namespace's.
                Self.binding("sa", namespace: "default", role: "r", subjects: [("ServiceAccount", "builder", nil)]),
                Self.binding(
                    "sa-elsewhere", namespace: "team", role: "r", subjects: [("ServiceAccount", "deployer", "ci")]),
            ])
        let list = AccessRequest.resource("list", resource: "pods", namespace: "default")
        #expect(!Self.allowed(authorizer, list))
        #expect(Self.allowed(authorizer, list, as: UserInfo(name: "ann", groups: ["developers"])))
        #expect(Self.allowed(authorizer, list, as: .restricted("system:serviceaccount:default:builder")))
        #expect(!Self.allowed(authorizer, list, as: .restricted("system:serviceaccount:team:builder")))
        // A user merely named like the account's short name is not the account.
        #expect(!Self.allowed(authorizer, list, as: .restricted("builder")))
        let team = AccessRequest.resource("list", resource: "pods", namespace: "team")
        #expect(Self.allowed(authorizer, team, as: .restricted("system:serviceaccount:ci:deployer")))
        #expect(!Self.allowed(authorizer, team, as: .restricted("system:serviceaccount:team:deployer")))
        // In a ClusterRoleBinding a ServiceAccount must name its namespace.
        let cluster = RBACAuthorizer(
            clusterRoles: [Self.role("c", rules)],
            clusterRoleBindings: [
                Self.binding("loose", role: "c", kind: "ClusterRole", subjects: [("ServiceAccount", "builder", nil)])
            ])
        #expect(!Self.allowed(cluster, list, as: .restricted("system:serviceaccount:default:builder")))
        #expect(!Self.allowed(cluster, list, as: .restricted("system:serviceaccount::builder")))
    }

    // MARK: - Scopes

    @Test func aClusterRoleBoundByARoleBindingAppliesInThatNamespaceOnly() {
        let authorizer = RBACAuthorizer(
            clusterRoles: [
                Self.role("reader", [PolicyRule(verbs: ["get", "list"], apiGroups: ["*"], resources: ["*"])])
            ],
            roleBindings: [Self.binding("read", namespace: "default", role: "reader", kind: "ClusterRole")])
        #expect(Self.allowed(authorizer, .resource("list", resource: "pods", namespace: "default")))
        #expect(Self.allowed(authorizer, .resource("get", resource: "secrets", namespace: "default", name: "s")))
        #expect(!Self.allowed(authorizer, .resource("list", resource: "pods", namespace: "kube-system")))
        // Not across every namespace, and not cluster-scoped kinds.
        #expect(!Self.allowed(authorizer, .resource("list", resource: "pods")))
        #expect(!Self.allowed(authorizer, .resource("list", resource: "nodes")))
        #expect(!Self.allowed(authorizer, .resource("get", resource: "namespaces", name: "default")))
    }

    @Test func aClusterRoleBindingAppliesEverywhereAndToClusterScopedKinds() {
        let authorizer = RBACAuthorizer(
            clusterRoles: [
                Self.role("nodes", [PolicyRule(verbs: ["list"], apiGroups: [""], resources: ["nodes", "pods"])])
            ],
            clusterRoleBindings: [Self.binding("nodes", role: "nodes", kind: "ClusterRole")])
        #expect(Self.allowed(authorizer, .resource("list", resource: "nodes")))
        #expect(Self.allowed(authorizer, .resource("list", resource: "pods")))
        #expect(Self.allowed(authorizer, .resource("list", resource: "pods", namespace: "kube-system")))
    }

    @Test func aRoleBindingReachesOnlyARoleOfItsOwnNamespace() {
        let authorizer = RBACAuthorizer(
            roles: [
                Self.role("r", namespace: "other", [PolicyRule(verbs: ["list"], apiGroups: [""], resources: ["pods"])])
            ],
            roleBindings: [Self.binding("b", namespace: "default", role: "r")])
        let decision = authorizer.decide(Self.dev, .resource("list", resource: "pods", namespace: "default"))
        #expect(!decision.allowed)
        #expect(decision.reason == #"RBAC: role.rbac.authorization.k8s.io "r" not found"#)
        #expect(!Self.allowed(authorizer, .resource("list", resource: "pods", namespace: "other")))
    }

    // MARK: - Words

    @Test func reasonsNameTheBindingThatAllowed() {
        let authorizer = RBACAuthorizer(
            roles: [
                Self.role(
                    "pods", namespace: "default", [PolicyRule(verbs: ["list"], apiGroups: [""], resources: ["pods"])])
            ],
            clusterRoles: [Self.role("nodes", [PolicyRule(verbs: ["list"], apiGroups: [""], resources: ["nodes"])])],
            roleBindings: [
                Self.binding("dev-pods", namespace: "default", role: "pods"),
                Self.binding("sa", namespace: "default", role: "pods", subjects: [("ServiceAccount", "builder", nil)]),
            ],
            clusterRoleBindings: [
                Self.binding(
                    "dev-nodes", role: "nodes", kind: "ClusterRole", subjects: [("Group", "system:authenticated", nil)])
            ])
        #expect(
            authorizer.decide(Self.dev, .resource("list", resource: "pods", namespace: "default")).reason
                == #"RBAC: allowed by RoleBinding "dev-pods/default" of Role "pods" to User "dev""#)
        #expect(
            authorizer.decide(
                .restricted("system:serviceaccount:default:builder"),
                .resource("list", resource: "pods", namespace: "default")
            )
            .reason == #"RBAC: allowed by RoleBinding "sa/default" of Role "pods" to ServiceAccount "builder/default""#)
        #expect(
            authorizer.decide(Self.dev, .resource("list", resource: "nodes")).reason
                == #"RBAC: allowed by ClusterRoleBinding "dev-nodes" of ClusterRole "nodes" to Group "system:authenticated""#
        )
    }

    @Test func forbiddenMessagesAsTheAPIServerWordsThem() {
        #expect(
            AccessRequest.resource("list", resource: "pods", namespace: "default").forbiddenMessage(user: "dev")
                == #"pods is forbidden: User "dev" cannot list resource "pods" in API group "" in the namespace "default""#
        )
        #expect(
            AccessRequest.resource("list", resource: "nodes").forbiddenMessage(user: "dev")
                == #"nodes is forbidden: User "dev" cannot list resource "nodes" in API group "" at the cluster scope"#)
        #expect(
            AccessRequest.resource(
                "create", resource: "pods", subresource: "portforward", namespace: "default", name: "web"
            )
            .forbiddenMessage(user: "dev")
                == #"pods "web" is forbidden: User "dev" cannot create resource "pods/portforward" in API group "" in the namespace "default""#
        )
        #expect(
            AccessRequest.resource("get", group: "apps", resource: "deployments", namespace: "ns", name: "d")
                .forbiddenMessage(user: "dev", reason: #"RBAC: role.rbac.authorization.k8s.io "x" not found"#)
                == #"deployments.apps "d" is forbidden: User "dev" cannot get resource "deployments" in API group "apps" in the namespace "ns": RBAC: role.rbac.authorization.k8s.io "x" not found"#
        )
        #expect(
            AccessRequest.nonResource("get", path: "/metrics").forbiddenMessage(user: "dev")
                == #"forbidden: User "dev" cannot get path "/metrics""#)
    }

    // MARK: - Escalation

    @Test func missingRightsAreWhatTheUserDoesNotHold() {
        let authorizer = Self.devRole([
            PolicyRule(verbs: ["get", "list"], apiGroups: [""], resources: ["pods"]),
            PolicyRule(verbs: ["*"], apiGroups: [""], resources: ["configmaps"], resourceNames: ["settings"]),
        ])
        #expect(
            authorizer.missingRights(
                Self.dev, namespace: "default",
                rules: [PolicyRule(verbs: ["get"], apiGroups: [""], resources: ["pods"])]
            ).isEmpty)
        #expect(
            authorizer.missingRights(
                Self.dev, namespace: "default",
                rules: [PolicyRule(verbs: ["get", "delete"], apiGroups: [""], resources: ["pods"])])
                == [PolicyRule(verbs: ["delete"], apiGroups: [""], resources: ["pods"])])
        // Held in default, not in another namespace, nor cluster-wide.
        #expect(
            authorizer.missingRights(
                Self.dev, namespace: "kube-system",
                rules: [PolicyRule(verbs: ["get"], apiGroups: [""], resources: ["pods"])]
            ).count == 1)
        // A `*` asked for is covered only by a `*` held; a named object by a rule naming it.
        #expect(
            authorizer.missingRights(
                Self.dev, namespace: "default", rules: [PolicyRule(verbs: ["*"], apiGroups: [""], resources: ["pods"])]
            ).count == 1)
        #expect(
            authorizer.missingRights(
                Self.dev, namespace: "default",
                rules: [
                    PolicyRule(
                        verbs: ["update"], apiGroups: [""], resources: ["configmaps"], resourceNames: ["settings"])
                ]
            ).isEmpty)
        #expect(
            authorizer.missingRights(
                Self.dev, namespace: "default",
                rules: [PolicyRule(verbs: ["update"], apiGroups: [""], resources: ["configmaps"])]
            ).count == 1)
        #expect(
            authorizer.missingRights(
                .admin, namespace: "", rules: [PolicyRule(verbs: ["*"], apiGroups: ["*"], resources: ["*"])]
            ).isEmpty)
    }

    @Test func rulesForAUserInANamespace() {
        let authorizer = Self.devRole([PolicyRule(verbs: ["list"], apiGroups: [""], resources: ["pods"])])
        let inDefault = authorizer.rules(for: Self.dev, namespace: "default")
        #expect(inDefault.errors.isEmpty)
        #expect(inDefault.rules.contains(PolicyRule(verbs: ["list"], apiGroups: [""], resources: ["pods"])))
        #expect(inDefault.rules.contains { $0.nonResourceURLs.contains("/api") })
        let elsewhere = authorizer.rules(for: Self.dev, namespace: "kube-system")
        #expect(!elsewhere.rules.contains(PolicyRule(verbs: ["list"], apiGroups: [""], resources: ["pods"])))
    }
}
