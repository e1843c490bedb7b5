import Foundation
import KubeKit

/// RBAC in the API server: every request's attributes read from its path (apiserver's `RequestInfoFactory`), judged
/// by `RBACAuthorizer` over the stored RBAC objects, refused with Kubernetes' 403 Status; the reviews that answer
/// "may I?"; and the escalation check on writes of roles and bindings. Nothing inside the lab (controllers, kubelet,
/// DNS, proxy) comes through here: they use the store directly.
extension APIHandler {
    // MARK: - Attributes

    /// What `request` asks to do. `webSocketUpgrade`: a GET that asks to switch protocols, which for exec, attach
    /// and port-forward is authorized as `create` (Kubernetes 1.35's AuthorizePodWebsocketUpgradeCreatePermission).
    public static func accessRequest(_ request: APIServerRequest, webSocketUpgrade: Bool = false) -> AccessRequest {
        let parts = request.path.split(separator: "/").map(String.init)
        var rest: ArraySlice<String>
        let group: String
        if parts.first == "api", parts.count >= 3 {
            group = ""
            rest = parts[2...]
        } else if parts.first == "apis", parts.count >= 4 {
            group = parts[1]
            rest = parts[3...]
        } else {
            let path = request.path.isEmpty ? "/" : request.path
            return .nonResource(request.method.lowercased(), path: path)
        }
        var namespace = ""
        if rest.first == "namespaces", rest.count > 1 {
            namespace = rest[rest.startIndex + 1]
            // `/namespaces/<ns>/status` and `/finalize` are the namespace's own subresources.
            if rest.count > 2, !["status", "finalize"].contains(rest[rest.startIndex + 2]) { rest = rest.dropFirst(2) }
        }
        let resource = rest.first ?? ""
        var name = rest.dropFirst().first ?? ""
        let subresource = rest.dropFirst(2).first ?? ""
        let watching = ["true", "1"].contains(request.first("watch") ?? "")
        var verb: String
        switch request.method {
        case "GET", "HEAD": verb = name.isEmpty ? (watching ? "watch" : "list") : "get"
        case "POST": verb = "create"
        case "PUT": verb = "update"
        case "PATCH": verb = "patch"
        case "DELETE": verb = name.isEmpty ? "deletecollection" : "delete"
        default: verb = request.method.lowercased()
        }
        if resource == "pods", ["exec", "attach", "portforward"].contains(subresource), webSocketUpgrade {
            verb = "create"
        }
        // A list or watch of one object by `metadata.name` is judged as that object (`kubectl get pod x -w`).
        if name.isEmpty, verb == "list" || verb == "watch", let fields = request.first("fieldSelector") {
            for term in fields.split(separator: ",") {
                let pair = term.replacingOccurrences(of: "==", with: "=").split(separator: "=", maxSplits: 1)
                if pair.count == 2, pair[0].trimmingCharacters(in: .whitespaces) == "metadata.name" {
                    name = pair[1].trimmingCharacters(in: .whitespaces)
                }
            }
        }
        return .resource(
            verb, group: group, resource: resource, subresource: subresource, namespace: namespace, name: name)
    }

    // MARK: - Deciding

    /// The authorizer over the RBAC objects stored now.
    public func authorizer() -> RBACAuthorizer {
        func all(_ resource: ResourceType) -> [JSONValue] {
            store.list(Selection(resource: resource, namespace: nil)).items
        }
        return RBACAuthorizer(
            roles: all(ResourceRegistry.role), clusterRoles: all(ResourceRegistry.clusterRole),
            roleBindings: all(ResourceRegistry.roleBinding),
            clusterRoleBindings: all(ResourceRegistry.clusterRoleBinding))
    }

    /// The 403 answer when `request`'s user may not do it, or nil.
    public func refusal(_ request: APIServerRequest, webSocketUpgrade: Bool = false) -> APIServerResponse? {
        // The privileged group needs no snapshot of the RBAC objects (most requests are the admin's).
        if request.user.groups.contains(RBACAuthorizer.privilegedGroup) { return nil }
        let access = Self.accessRequest(request, webSocketUpgrade: webSocketUpgrade)
        let decision = authorizer().decide(request.user, access)
        guard !decision.allowed else { return nil }
        return .raw(403, contentType: "application/json", Self.forbiddenStatus(access, user: request.user, decision))
    }

    /// Kubernetes' Forbidden Status, with its fields in the order the Go API server writes them (clients do not
    /// care; people comparing a capture with a real cluster's do).
    static func forbiddenStatus(_ access: AccessRequest, user: UserInfo, _ decision: RBACAuthorizer.Decision)
        -> [UInt8]
    {
        func string(_ text: String) -> String {
            (try? KubeJSON.encoder.encode(text)).map { String(decoding: $0, as: UTF8.self) } ?? "\"\""
        }
        var details: [String] = []
        if access.isResourceRequest {
            if !access.name.isEmpty { details.append("\"name\":\(string(access.name))") }
            if !access.group.isEmpty { details.append("\"group\":\(string(access.group))") }
            details.append("\"kind\":\(string(access.resource))")
        }
        let message = access.forbiddenMessage(user: user.name, reason: decision.reason)
        let text =
            "{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"metadata\":{},\"status\":\"Failure\",\"message\":"
            + "\(string(message)),\"reason\":\"Forbidden\",\"details\":{\(details.joined(separator: ","))},"
            + "\"code\":403}"
        return Array(text.utf8)
    }

    // MARK: - Reviews

    /// SelfSubjectAccessReview, SelfSubjectRulesReview and SelfSubjectReview: the caller's own permissions and
    /// identity, answered and not stored (201 with the object and its status, as the API server does).
    func review(_ target: Target, _ request: APIServerRequest) throws -> JSONValue {
        guard request.method == "POST", target.name == nil else {
            throw APIStatusError(
                code: 405, reason: "MethodNotAllowed",
                message: "the server does not allow this method on the requested resource")
        }
        let type = target.resource.type
        var object = try body(request)
        if let kind = object["kind"]?.stringValue, kind != type.kind {
            throw APIStatusError.badRequest("kind \(kind) is not \(type.kind)")
        }
        let user = request.user
        let spec = object["spec"] ?? [:]
        var status: [String: JSONValue] = [:]
        switch type {
        case SelfSubjectAccessReview.resource:
            let resource = spec["resourceAttributes"].flatMap { $0.isNull ? nil : $0 }
            let nonResource = spec["nonResourceAttributes"].flatMap { $0.isNull ? nil : $0 }
            let access: AccessRequest
            switch (resource, nonResource) {
            case (let attributes?, nil):
                func field(_ name: String) -> String { attributes[name]?.stringValue ?? "" }
                access = .resource(
                    field("verb"), group: field("group"), resource: field("resource"),
                    subresource: field("subresource"), namespace: field("namespace"), name: field("name"))
            case (nil, let attributes?):
                access = .nonResource(
                    attributes["verb"]?.stringValue ?? "", path: attributes["path"]?.stringValue ?? "")
            default:
                throw APIStatusError.invalid(
                    type, "", field: "spec.resourceAttributes",
                    "Invalid value: \"null\": exactly one of nonResourceAttributes or resourceAttributes must be "
                        + "specified")
            }
            let decision = authorizer().decide(user, access)
            status["allowed"] = .bool(decision.allowed)
            if !decision.reason.isEmpty { status["reason"] = .string(decision.reason) }
        case ResourceRegistry.selfSubjectRulesReview:
            let (rules, errors) = authorizer().rules(for: user, namespace: spec["namespace"]?.stringValue ?? "")
            status["resourceRules"] = .array(
                rules.filter { $0.nonResourceURLs.isEmpty }.map { rule in
                    var json = rule.json
                    json["nonResourceURLs"] = nil
                    return json
                })
            status["nonResourceRules"] = .array(
                rules.filter { !$0.nonResourceURLs.isEmpty }.map { rule in
                    [
                        "verbs": .array(rule.verbs.map { .string($0) }),
                        "nonResourceURLs": .array(
                            rule.nonResourceURLs.map { .string($0) }),
                    ]
                })
            status["incomplete"] = .bool(!errors.isEmpty)
            if !errors.isEmpty { status["evaluationError"] = .string(RBACAuthorizer.errorReason(errors)) }
        default:
            status["userInfo"] = [
                "username": .string(user.name), "groups": .array(user.groups.map { .string($0) }),
            ]
        }
        object["apiVersion"] = .string(type.apiVersion)
        object["kind"] = .string(type.kind)
        object["metadata"] = object["metadata"].flatMap { $0.objectValue == nil ? nil : $0 } ?? [:]
        object["status"] = .object(status)
        return object
    }

    // MARK: - Escalation

    /// A user outside `system:masters` may write a role only with rules they hold themselves (or the `escalate`
    /// verb on it), and a binding only to a role whose rules they hold (or the `bind` verb on it), as
    /// `pkg/registry/rbac` checks; anything else is 403 naming what is missing.
    func confirmNoEscalation(_ resource: ResourceType, _ object: JSONValue, namespace: String, user: UserInfo) throws {
        guard !user.groups.contains(RBACAuthorizer.privilegedGroup) else { return }
        let name = object["metadata"]?["name"]?.stringValue ?? ""
        let authorizer = self.authorizer()
        let rules: [PolicyRule]
        var resolutionErrors: [String] = []
        switch resource {
        case ResourceRegistry.role, ResourceRegistry.clusterRole:
            let escalate = AccessRequest.resource(
                "escalate", group: ResourceRegistry.rbacGroup, resource: resource.plural, namespace: namespace,
                name: name)
            if authorizer.decide(user, escalate).allowed { return }
            rules = (object["rules"]?.arrayValue ?? []).map(PolicyRule.init(json:))
        case ResourceRegistry.roleBinding, ResourceRegistry.clusterRoleBinding:
            let kind = object["roleRef"]?["kind"]?.stringValue ?? ""
            let roleName = object["roleRef"]?["name"]?.stringValue ?? ""
            let bind = AccessRequest.resource(
                "bind", group: ResourceRegistry.rbacGroup, resource: kind == "Role" ? "roles" : "clusterroles",
                namespace: namespace, name: roleName)
            if authorizer.decide(user, bind).allowed { return }
            let roleRef = RBACAuthorizer.RoleRef(kind: kind, name: roleName)
            guard let referenced = authorizer.rules(of: roleRef, namespace: namespace, errors: &resolutionErrors)
            else {
                throw Self.forbidden(resource, name, resolutionErrors.joined(separator: ", "))
            }
            rules = referenced
        default:
            return
        }
        let missing = authorizer.missingRights(user, namespace: namespace, rules: rules)
        guard !missing.isEmpty else { return }
        let groups = "[" + user.groups.map(quoted).joined(separator: " ") + "]"
        throw Self.forbidden(
            resource, name,
            "user \(quoted(user.name)) (groups=\(groups)) is attempting to grant RBAC permissions not currently held:\n"
                + missing.map(\.compactDescription).joined(separator: "\n"))
    }

    static func forbidden(_ resource: ResourceType, _ name: String, _ why: String) -> APIStatusError {
        APIStatusError(
            code: 403, reason: "Forbidden", message: "\(resource) \(quoted(name)) is forbidden: \(why)",
            details: ["name": .string(name), "group": .string(resource.group), "kind": .string(resource.plural)])
    }
}
