import KubeKit

/// What a request asks to do, as an authorizer sees it (apiserver's `authorizer.Attributes`): a verb on a resource
/// (maybe a subresource, in a namespace, of one named object), or a verb on a path that names no resource.
public struct AccessRequest: Sendable, Hashable {
    public var verb: String
    public var isResourceRequest: Bool
    public var group: String
    public var resource: String
    public var subresource: String
    /// Empty: cluster scope (a cluster-scoped kind, or a list across every namespace).
    public var namespace: String
    /// Empty: no one object (a list, a watch, a create).
    public var name: String
    /// For a request that names no resource (`/healthz`, `/apis`).
    public var path: String

    public static func resource(
        _ verb: String, group: String = "", resource: String, subresource: String = "", namespace: String = "",
        name: String = ""
    ) -> AccessRequest {
        AccessRequest(
            verb: verb, isResourceRequest: true, group: group, resource: resource, subresource: subresource,
            namespace: namespace, name: name, path: "")
    }

    public static func nonResource(_ verb: String, path: String) -> AccessRequest {
        AccessRequest(
            verb: verb, isResourceRequest: false, group: "", resource: "", subresource: "", namespace: "", name: "",
            path: path)
    }

    /// `pods` or `pods/portforward`, as rules and messages name it.
    public var combinedResource: String { subresource.isEmpty ? resource : "\(resource)/\(subresource)" }

    /// The refusal's wording, as the API server's (`responsewriters.forbiddenMessage` inside
    /// `errors.NewForbidden`): `pods is forbidden: User "dev" cannot list resource "pods" in API group "" in the
    /// namespace "default"`; `reason`, when there is one, follows after a colon.
    public func forbiddenMessage(user: String, reason: String = "") -> String {
        var message: String
        if !isResourceRequest {
            message = "forbidden: User \(quoted(user)) cannot \(verb) path \(quoted(path))"
        } else {
            let scope = namespace.isEmpty ? "at the cluster scope" : "in the namespace \(quoted(namespace))"
            let what =
                "User \(quoted(user)) cannot \(verb) resource \(quoted(combinedResource)) in API group "
                + "\(quoted(group)) \(scope)"
            let qualified = group.isEmpty ? resource : "\(resource).\(group)"
            message =
                name.isEmpty
                ? "\(qualified) is forbidden: \(what)" : "\(qualified) \(quoted(name)) is forbidden: \(what)"
        }
        if !reason.isEmpty { message += ": \(reason)" }
        return message
    }
}

/// Go's `%q` for the names that appear in messages: quotes, with `"` and `\` escaped.
func quoted(_ text: String) -> String {
    "\"" + text.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"") + "\""
}

/// One rule of a Role or ClusterRole (`rbac.authorization.k8s.io/v1` PolicyRule).
public struct PolicyRule: Sendable, Hashable {
    public var verbs: [String]
    public var apiGroups: [String]
    public var resources: [String]
    public var resourceNames: [String]
    public var nonResourceURLs: [String]

    public init(
        verbs: [String], apiGroups: [String] = [], resources: [String] = [], resourceNames: [String] = [],
        nonResourceURLs: [String] = []
    ) {
        self.verbs = verbs
        self.apiGroups = apiGroups
        self.resources = resources
        self.resourceNames = resourceNames
        self.nonResourceURLs = nonResourceURLs
    }

    public init(json: JSONValue) {
        func strings(_ field: String) -> [String] { (json[field]?.arrayValue ?? []).compactMap(\.stringValue) }
        self.init(
            verbs: strings("verbs"), apiGroups: strings("apiGroups"), resources: strings("resources"),
            resourceNames: strings("resourceNames"), nonResourceURLs: strings("nonResourceURLs"))
    }

    public var json: JSONValue {
        var members: [String: JSONValue] = ["verbs": .array(verbs.map { .string($0) })]
        for (field, values) in [
            ("apiGroups", apiGroups), ("resources", resources), ("resourceNames", resourceNames),
            ("nonResourceURLs", nonResourceURLs),
        ] where !values.isEmpty {
            members[field] = .array(values.map { .string($0) })
        }
        return .object(members)
    }

    /// Whether this rule grants `request` (rbac's `RuleAllows`).
    public func allows(_ request: AccessRequest) -> Bool {
        guard verbs.contains("*") || verbs.contains(request.verb) else { return false }
        guard request.isResourceRequest else {
            return nonResourceURLs.contains { url in
                url == "*" || url == request.path
                    || (url.hasSuffix("*") && request.path.hasPrefix(String(url.dropLast())))
            }
        }
        guard apiGroups.contains("*") || apiGroups.contains(request.group) else { return false }
        let combined = request.combinedResource
        let resourceMatches = resources.contains { resource in
            if resource == "*" || resource == combined { return true }
            // `*/scale` grants the scale subresource of every resource.
            return !request.subresource.isEmpty && resource == "*/\(request.subresource)"
        }
        guard resourceMatches else { return false }
        // A rule naming objects grants nothing on requests that name none (create, list, watch of a collection).
        return resourceNames.isEmpty || resourceNames.contains(request.name)
    }

    /// kubectl's and the API server's short form: `{APIGroups:[""], Resources:["pods"], Verbs:["get"]}`.
    public var compactDescription: String {
        func list(_ values: [String]) -> String { "[" + values.map(quoted).joined(separator: " ") + "]" }
        var parts: [String] = []
        if !apiGroups.isEmpty { parts.append("APIGroups:\(list(apiGroups))") }
        if !resources.isEmpty { parts.append("Resources:\(list(resources))") }
        if !resourceNames.isEmpty { parts.append("ResourceNames:\(list(resourceNames))") }
        if !nonResourceURLs.isEmpty { parts.append("NonResourceURLs:\(list(nonResourceURLs))") }
        parts.append("Verbs:\(list(verbs))")
        return "{" + parts.joined(separator: ", ") + "}"
    }
}

/// Kubernetes RBAC over a snapshot of the lab's Roles, ClusterRoles, RoleBindings and ClusterRoleBindings: a pure
/// value, so every rule of it is tested without a server (`plugin/pkg/auth/authorizer/rbac`).
///
/// `system:masters` may do anything (the API server's privileged-group authorizer, ahead of RBAC). Otherwise a
/// request is allowed when a rule matches of a ClusterRole bound to the user by a ClusterRoleBinding, or of a Role
/// or ClusterRole bound by a RoleBinding in the request's namespace. The default `system:discovery`,
/// `system:public-info-viewer` and `system:basic-user` ClusterRoles and their bindings to `system:authenticated`
/// are built in (ktlab's object names cannot hold a colon).
public struct RBACAuthorizer: Sendable {
    /// The group no request is refused to.
    public static let privilegedGroup = "system:masters"

    struct RoleRef: Sendable, Hashable {
        var kind: String
        var name: String
    }

    struct Subject: Sendable, Hashable {
        var kind: String
        var name: String
        var namespace: String

        /// `appliesToUser`: a ServiceAccount is the user `system:serviceaccount:<namespace>:<name>`, its namespace
        /// defaulting to the binding's.
        func matches(_ user: UserInfo, bindingNamespace: String) -> Bool {
            switch kind {
            case "User": return user.name == name
            case "Group": return user.groups.contains(name)
            case "ServiceAccount":
                let serviceAccountNamespace = namespace.isEmpty ? bindingNamespace : namespace
                guard !serviceAccountNamespace.isEmpty else { return false }
                return user.name == "system:serviceaccount:\(serviceAccountNamespace):\(name)"
            default: return false
            }
        }

        func describe(bindingNamespace: String) -> String {
            guard kind == "ServiceAccount" else { return "\(kind) \(quoted(name))" }
            return "\(kind) \(quoted("\(name)/\(namespace.isEmpty ? bindingNamespace : namespace)"))"
        }
    }

    struct Binding: Sendable, Hashable {
        var name: String
        /// Empty for a ClusterRoleBinding.
        var namespace: String
        var roleRef: RoleRef
        var subjects: [Subject]

        init(name: String, namespace: String, roleRef: RoleRef, subjects: [Subject]) {
            self.name = name
            self.namespace = namespace
            self.roleRef = roleRef
            self.subjects = subjects
        }

        init(json: JSONValue) {
            name = json["metadata"]?["name"]?.stringValue ?? ""
            namespace = json["metadata"]?["namespace"]?.stringValue ?? ""
            roleRef = RoleRef(
                kind: json["roleRef"]?["kind"]?.stringValue ?? "", name: json["roleRef"]?["name"]?.stringValue ?? "")
            subjects = (json["subjects"]?.arrayValue ?? []).map { subject in
                Subject(
                    kind: subject["kind"]?.stringValue ?? "", name: subject["name"]?.stringValue ?? "",
                    namespace: subject["namespace"]?.stringValue ?? "")
            }
        }

        /// The words of an `allowed by` reason (`clusterRoleBindingDescriber` / `roleBindingDescriber`).
        func describe(_ subject: Subject) -> String {
            let binding =
                namespace.isEmpty
                ? "ClusterRoleBinding \(quoted(name))" : "RoleBinding \(quoted("\(name)/\(namespace)"))"
            return "\(binding) of \(roleRef.kind) \(quoted(roleRef.name)) to "
                + subject.describe(bindingNamespace: namespace)
        }
    }

    /// Role rules by namespace, then name.
    var roles: [String: [String: [PolicyRule]]] = [:]
    var clusterRoles: [String: [PolicyRule]] = [:]
    var roleBindings: [Binding] = []
    var clusterRoleBindings: [Binding] = []

    /// From the objects as stored (JSON documents of the four kinds).
    public init(
        roles: [JSONValue] = [], clusterRoles: [JSONValue] = [], roleBindings: [JSONValue] = [],
        clusterRoleBindings: [JSONValue] = []
    ) {
        for role in roles {
            let namespace = role["metadata"]?["namespace"]?.stringValue ?? ""
            let name = role["metadata"]?["name"]?.stringValue ?? ""
            self.roles[namespace, default: [:]][name] = (role["rules"]?.arrayValue ?? []).map(PolicyRule.init(json:))
        }
        self.clusterRoles = Self.builtInClusterRoles
        for role in clusterRoles {
            let name = role["metadata"]?["name"]?.stringValue ?? ""
            self.clusterRoles[name] = (role["rules"]?.arrayValue ?? []).map(PolicyRule.init(json:))
        }
        self.roleBindings = roleBindings.map(Binding.init(json:))
        self.clusterRoleBindings = Self.builtInBindings + clusterRoleBindings.map(Binding.init(json:))
    }

    // MARK: - Built in

    /// `system:discovery`, `system:public-info-viewer` and `system:basic-user` as Kubernetes bootstraps them
    /// (`plugin/pkg/auth/authorizer/rbac/bootstrappolicy`), for the APIs ktlab serves.
    static let builtInClusterRoles: [String: [PolicyRule]] = [
        "system:discovery": [
            PolicyRule(
                verbs: ["get"],
                nonResourceURLs: [
                    "/api", "/api/*", "/apis", "/apis/*", "/healthz", "/livez", "/openapi", "/openapi/*", "/readyz",
                    "/version", "/version/",
                ])
        ],
        "system:public-info-viewer": [
            PolicyRule(verbs: ["get"], nonResourceURLs: ["/healthz", "/livez", "/readyz", "/version", "/version/"])
        ],
        "system:basic-user": [
            PolicyRule(
                verbs: ["create"], apiGroups: ["authorization.k8s.io"],
                resources: ["selfsubjectaccessreviews", "selfsubjectrulesreviews"]),
            PolicyRule(verbs: ["create"], apiGroups: ["authentication.k8s.io"], resources: ["selfsubjectreviews"]),
        ],
    ]

    static let builtInBindings: [Binding] = ["system:discovery", "system:public-info-viewer", "system:basic-user"].map {
        Binding(
            name: $0, namespace: "", roleRef: RoleRef(kind: "ClusterRole", name: $0),
            subjects: [Subject(kind: "Group", name: UserInfo.authenticatedGroup, namespace: "")])
    }

    // MARK: - Deciding

    public struct Decision: Sendable, Hashable {
        public var allowed: Bool
        /// Allowed: which binding allowed it (`RBAC: allowed by RoleBinding "dev/default" of Role "pods" to User
        /// "dev"`; empty for `system:masters`). Refused: bindings that name a role that does not exist.
        public var reason: String
    }

    /// Whether `user` may do `request`, and why.
    public func decide(_ user: UserInfo, _ request: AccessRequest) -> Decision {
        if user.groups.contains(Self.privilegedGroup) { return Decision(allowed: true, reason: "") }
        var allowedBy: String?
        let errors = visitRules(for: user, namespace: request.namespace) { source, rule in
            guard rule.allows(request) else { return true }
            allowedBy = source
            return false
        }
        if let allowedBy { return Decision(allowed: true, reason: "RBAC: allowed by \(allowedBy)") }
        return Decision(allowed: false, reason: Self.errorReason(errors))
    }

    /// Every rule that applies to `user` in `namespace` (empty: the cluster scope only), for
    /// SelfSubjectRulesReview; and the bindings that could not be followed. `system:masters` gets cluster-admin's two
    /// rules even when no binding names the group (it may do anything regardless).
    public func rules(for user: UserInfo, namespace: String) -> (rules: [PolicyRule], errors: [String]) {
        var rules: [PolicyRule] = []
        if user.groups.contains(Self.privilegedGroup) {
            rules.append(PolicyRule(verbs: ["*"], apiGroups: ["*"], resources: ["*"]))
            rules.append(PolicyRule(verbs: ["*"], nonResourceURLs: ["*"]))
        }
        let errors = visitRules(for: user, namespace: namespace) { _, rule in
            if !rules.contains(rule) { rules.append(rule) }
            return true
        }
        return (rules, errors)
    }

    /// The parts of `rules` that `user` does not hold in `namespace` (empty: cluster-wide), one verb, group,
    /// resource and name each: what creating a role with these rules, or binding one, would escalate to
    /// (`validation.ConfirmNoEscalation`; a `*` asked for is only covered by a `*` held).
    public func missingRights(_ user: UserInfo, namespace: String, rules: [PolicyRule]) -> [PolicyRule] {
        var missing: [PolicyRule] = []
        for rule in rules {
            for verb in rule.verbs {
                for url in rule.nonResourceURLs
                where !decide(user, .nonResource(verb, path: url)).allowed {
                    missing.append(PolicyRule(verbs: [verb], nonResourceURLs: [url]))
                }
                for group in rule.apiGroups {
                    for resource in rule.resources {
                        for name in rule.resourceNames.isEmpty ? [""] : rule.resourceNames {
                            let parts = resource.split(separator: "/", maxSplits: 1).map(String.init)
                            let request = AccessRequest.resource(
                                verb, group: group, resource: parts.first ?? "",
                                subresource: parts.count > 1 ? parts[1] : "", namespace: namespace, name: name)
                            if !decide(user, request).allowed {
                                missing.append(
                                    PolicyRule(
                                        verbs: [verb], apiGroups: [group], resources: [resource],
                                        resourceNames: name.isEmpty ? [] : [name]))
                            }
                        }
                    }
                }
            }
        }
        return missing
    }

    /// Calls `visit` with each rule that applies to `user` in `namespace` and where it comes from, ClusterRoleBindings
    /// first, until `visit` returns false; returns why bindings that apply to the user could not be followed.
    func visitRules(
        for user: UserInfo, namespace: String, _ visit: (_ source: String, _ rule: PolicyRule) -> Bool
    ) -> [String] {
        var errors: [String] = []
        for binding in clusterRoleBindings {
            guard let subject = binding.subjects.first(where: { $0.matches(user, bindingNamespace: "") }) else {
                continue
            }
            guard let rules = rules(of: binding.roleRef, namespace: "", errors: &errors) else { continue }
            for rule in rules where !visit(binding.describe(subject), rule) { return errors }
        }
        guard !namespace.isEmpty else { return errors }
        for binding in roleBindings where binding.namespace == namespace {
            guard let subject = binding.subjects.first(where: { $0.matches(user, bindingNamespace: namespace) }) else {
                continue
            }
            guard let rules = rules(of: binding.roleRef, namespace: namespace, errors: &errors) else { continue }
            for rule in rules where !visit(binding.describe(subject), rule) { return errors }
        }
        return errors
    }

    /// The rules a binding's roleRef names (a Role in the binding's namespace, or a ClusterRole).
    func rules(of roleRef: RoleRef, namespace: String, errors: inout [String]) -> [PolicyRule]? {
        switch roleRef.kind {
        case "ClusterRole":
            if let rules = clusterRoles[roleRef.name] { return rules }
            errors.append("clusterrole.rbac.authorization.k8s.io \(quoted(roleRef.name)) not found")
        case "Role":
            if let rules = roles[namespace]?[roleRef.name] { return rules }
            errors.append("role.rbac.authorization.k8s.io \(quoted(roleRef.name)) not found")
        default:
            errors.append("unsupported role reference kind: \(quoted(roleRef.kind))")
        }
        return nil
    }

    /// `RBAC: <error>` or `RBAC: [<error>, <error>]` (utilerrors.NewAggregate), or nothing.
    static func errorReason(_ errors: [String]) -> String {
        switch errors.count {
        case 0: return ""
        case 1: return "RBAC: \(errors[0])"
        default: return "RBAC: [\(errors.joined(separator: ", "))]"
        }
    }
}
