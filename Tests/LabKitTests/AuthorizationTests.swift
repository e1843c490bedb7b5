import Foundation
import KubeKit
import LabKit
import Testing

/// RBAC in the API handler, without a server: what a request's path and method ask for, the 403 as Kubernetes
/// writes it, the default roles, the reviews, escalation; and the token file read again when it changes.
@Suite struct AuthorizationTests {
    let handler: APIHandler
    static let dev = UserInfo.restricted("dev")

    init() throws {
        handler = APIHandler(store: ObjectStore(), admission: Admission(), serverAddress: "127.0.0.1:6443")
        try handler.bootstrap()
    }

    func send(_ method: String, _ uri: String, _ body: JSONValue? = nil, as user: UserInfo = dev) async throws -> (
        Int, [UInt8]
    ) {
        let bytes = try body.map { Array(try $0.jsonData()) } ?? []
        let request = APIServerRequest(
            method: method, uri: uri, headers: [("Content-Type", "application/json")], body: bytes, user: user)
        switch await handler.handle(request) {
        case .json(let code, let document): return (code, Array(try document.jsonData()))
        case .raw(let code, _, let bytes): return (code, bytes)
        case .stream: return (200, [])
        }
    }

    func json(_ method: String, _ uri: String, _ body: JSONValue? = nil, as user: UserInfo = dev) async throws -> (
        Int, JSONValue
    ) {
        let (code, bytes) = try await send(method, uri, body, as: user)
        return (code, try JSONValue(json: Data(bytes)))
    }

    static func access(_ method: String, _ uri: String, upgrade: Bool = false) -> AccessRequest {
        APIHandler.accessRequest(
            APIServerRequest(method: method, uri: uri, headers: [], body: []), webSocketUpgrade: upgrade)
    }

    // MARK: - Attributes

    @Test func verbsAndScopesFromMethodAndPath() {
        let pods = "/api/v1/namespaces/default/pods"
        #expect(Self.access("GET", pods) == .resource("list", resource: "pods", namespace: "default"))
        #expect(Self.access("GET", "\(pods)?watch=true") == .resource("watch", resource: "pods", namespace: "default"))
        #expect(
            Self.access("GET", "\(pods)/web") == .resource("get", resource: "pods", namespace: "default", name: "web"))
        #expect(Self.access("POST", pods) == .resource("create", resource: "pods", namespace: "default"))
        #expect(
            Self.access("PUT", "\(pods)/web")
                == .resource("update", resource: "pods", namespace: "default", name: "web"))
        #expect(
            Self.access("PATCH", "\(pods)/web/status")
                == .resource("patch", resource: "pods", subresource: "status", namespace: "default", name: "web"))
        #expect(
            Self.access("DELETE", "\(pods)/web")
                == .resource("delete", resource: "pods", namespace: "default", name: "web"))
        #expect(Self.access("DELETE", pods) == .resource("deletecollection", resource: "pods", namespace: "default"))
        #expect(
            Self.access("GET", "\(pods)/web/log")
                == .resource("get", resource: "pods", subresource: "log", namespace: "default", name: "web"))
        #expect(Self.access("GET", "/api/v1/pods") == .resource("list", resource: "pods"))
        #expect(Self.access("GET", "/api/v1/nodes/n") == .resource("get", resource: "nodes", name: "n"))
        #expect(
            Self.access("GET", "/apis/apps/v1/namespaces/ns/deployments/d/scale")
                == .resource(
                    "get", group: "apps", resource: "deployments", subresource: "scale", namespace: "ns", name: "d"))
        // A namespace is in its own namespace (so a RoleBinding there may grant reading it).
        #expect(
            Self.access("GET", "/api/v1/namespaces/team")
                == .resource("get", resource: "namespaces", namespace: "team", name: "team"))
        #expect(Self.access("GET", "/api/v1/namespaces") == .resource("list", resource: "namespaces"))
        #expect(
            Self.access("PUT", "/api/v1/namespaces/team/finalize")
                == .resource("update", resource: "namespaces", subresource: "finalize", namespace: "team", name: "team")
        )
        // `kubectl get pod web -w`: a watch by metadata.name is judged as that pod.
        #expect(
            Self.access("GET", "\(pods)?watch=1&fieldSelector=metadata.name%3Dweb")
                == .resource("watch", resource: "pods", namespace: "default", name: "web"))
        #expect(Self.access("GET", "/api") == .nonResource("get", path: "/api"))
        #expect(Self.access("GET", "/apis/apps/v1") == .nonResource("get", path: "/apis/apps/v1"))
        #expect(Self.access("GET", "/healthz") == .nonResource("get", path: "/healthz"))
    }

    @Test func execAndPortForwardUpgradesAreCreate() {
        let forward = "/api/v1/namespaces/default/pods/web/portforward?ports=8080"
        #expect(
            Self.access("GET", forward, upgrade: true)
                == .resource("create", resource: "pods", subresource: "portforward", namespace: "default", name: "web"))
        #expect(Self.access("GET", forward).verb == "get")
        #expect(Self.access("POST", "/api/v1/namespaces/default/pods/web/exec?command=ls").verb == "create")
        #expect(
            Self.access("GET", "/api/v1/namespaces/default/pods/web/exec?command=ls", upgrade: true).verb == "create")
    }

    // MARK: - Refusals

    @Test func aRefusalIsKubernetesForbiddenStatusByteForByte() async throws {
        let (code, bytes) = try await send("GET", "/api/v1/namespaces/default/pods")
        #expect(code == 403)
        #expect(
            String(decoding: bytes, as: UTF8.self)
                == #"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"pods is forbidden: User \"dev\" cannot list resource \"pods\" in API group \"\" in the namespace \"default\"","reason":"Forbidden","details":{"kind":"pods"},"code":403}"#
        )
        let (_, named) = try await send("GET", "/apis/apps/v1/namespaces/default/deployments/web")
        #expect(
            String(decoding: named, as: UTF8.self)
                == #"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"deployments.apps \"web\" is forbidden: User \"dev\" cannot get resource \"deployments\" in API group \"apps\" in the namespace \"default\"","reason":"Forbidden","details":{"name":"web","group":"apps","kind":"deployments"},"code":403}"#
        )
        let (nodeCode, nodes) = try await json("GET", "/api/v1/nodes")
        #expect(nodeCode == 403)
        #expect(
            nodes["message"]
                == #"nodes is forbidden: User "dev" cannot list resource "nodes" in API group "" at the cluster scope"#)
        // Unknown paths are refused before they are routed, as by the real server.
        #expect(try await send("GET", "/api/v1/namespaces/default/widgets").0 == 403)
        #expect(try await send("GET", "/api/v1/namespaces/default/widgets", as: .admin).0 == 404)
        // Discovery is everyone's.
        #expect(try await send("GET", "/api").0 == 200)
        #expect(try await send("GET", "/apis/rbac.authorization.k8s.io/v1").0 == 200)
        #expect(try await send("GET", "/version").0 == 200)
    }

    @Test func theDefaultRolesAreThereAndViewReadsAllButSecrets() async throws {
        let (code, list) = try await json("GET", "/apis/rbac.authorization.k8s.io/v1/clusterroles", as: .admin)
        #expect(code == 200)
        let names = Set((list["items"]?.arrayValue ?? []).compactMap { $0["metadata"]?["name"]?.stringValue })
        #expect(names == ["cluster-admin", "admin", "edit", "view"])
        let (_, binding) = try await json(
            "GET", "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings/cluster-admin", as: .admin)
        #expect(binding["subjects"]?.arrayValue?.first?["name"] == "system:masters")
        let (created, _) = try await json(
            "POST", "/apis/rbac.authorization.k8s.io/v1/namespaces/default/rolebindings",
            [
                "metadata": ["name": "dev-view"],
                "roleRef": ["apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"],
                "subjects": [["kind": "User", "name": "dev"]],
            ], as: .admin)
        #expect(created == 201)
        #expect(try await send("GET", "/api/v1/namespaces/default/pods").0 == 200)
        #expect(try await send("GET", "/apis/apps/v1/namespaces/default/deployments").0 == 200)
        #expect(try await send("GET", "/api/v1/namespaces/default/secrets").0 == 403)
        #expect(try await send("GET", "/api/v1/namespaces/kube-system/pods").0 == 403)
        #expect(try await send("POST", "/api/v1/namespaces/default/configmaps", ["metadata": ["name": "c"]]).0 == 403)
    }

    // MARK: - Reviews

    @Test func selfSubjectAccessReviewAnswersForTheCaller() async throws {
        _ = try await json(
            "POST", "/apis/rbac.authorization.k8s.io/v1/namespaces/default/roles",
            [
                "metadata": ["name": "forward"],
                "rules": [["apiGroups": [""], "resources": ["pods/portforward"], "verbs": ["create"]]],
            ],
            as: .admin)
        _ = try await json(
            "POST", "/apis/rbac.authorization.k8s.io/v1/namespaces/default/rolebindings",
            [
                "metadata": ["name": "forward"],
                "roleRef": ["apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "forward"],
                "subjects": [["kind": "User", "name": "dev"]],
            ], as: .admin)
        func review(_ attributes: JSONValue, nonResource: Bool = false, as user: UserInfo = Self.dev) async throws
            -> JSONValue
        {
            let (code, answer) = try await json(
                "POST", "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
                [
                    "apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
                    "spec": [nonResource ? "nonResourceAttributes" : "resourceAttributes": attributes],
                ], as: user)
            #expect(code == 201)
            return answer
        }
        let yes = try await review([
            "namespace": "default", "verb": "create", "resource": "pods", "subresource": "portforward",
        ])
        #expect(yes["status"]?["allowed"] == true)
        #expect(
            yes["status"]?["reason"]
                == #"RBAC: allowed by RoleBinding "forward/default" of Role "forward" to User "dev""#)
        #expect(yes["spec"]?["resourceAttributes"]?["subresource"] == "portforward")
        #expect(yes["kind"] == "SelfSubjectAccessReview")
        let no = try await review([
            "namespace": "kube-system", "verb": "create", "resource": "pods", "subresource": "portforward",
        ])
        #expect(no["status"]?["allowed"] == false)
        #expect(try await review(["verb": "list", "resource": "nodes"])["status"]?["allowed"] == false)
        #expect(try await review(["verb": "list", "resource": "nodes"], as: .admin)["status"]?["allowed"] == true)
        #expect(try await review(["verb": "get", "path": "/api"], nonResource: true)["status"]?["allowed"] == true)
        #expect(
            try await review(["verb": "get", "path": "/metrics"], nonResource: true)["status"]?["allowed"] == false)
        // Neither kind of attributes: invalid.
        let (code, _) = try await json(
            "POST", "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews", ["spec": [:]])
        #expect(code == 422)
        #expect(try await json("GET", "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews", as: .admin).0 == 405)

        let (rulesCode, rules) = try await json(
            "POST", "/apis/authorization.k8s.io/v1/selfsubjectrulesreviews", ["spec": ["namespace": "default"]])
        #expect(rulesCode == 201)
        #expect(
            rules["status"]?["resourceRules"]?.arrayValue?.contains([
                "verbs": ["create"], "apiGroups": [""], "resources": ["pods/portforward"],
            ]) == true)
        #expect(rules["status"]?["nonResourceRules"]?.arrayValue?.isEmpty == false)
        #expect(rules["status"]?["incomplete"] == false)

        let (_, whoami) = try await json("POST", "/apis/authentication.k8s.io/v1/selfsubjectreviews", [:])
        #expect(whoami["status"]?["userInfo"] == ["username": "dev", "groups": ["system:authenticated"]])
    }

    // MARK: - Escalation

    @Test func aUserCannotGrantWhatItDoesNotHold() async throws {
        // dev administers `default` (the admin ClusterRole, bound there): it may make roles within that.
        _ = try await json(
            "POST", "/apis/rbac.authorization.k8s.io/v1/namespaces/default/rolebindings",
            [
                "metadata": ["name": "dev-admin"],
                "roleRef": ["apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "admin"],
                "subjects": [["kind": "User", "name": "dev"]],
            ], as: .admin)
        let roles = "/apis/rbac.authorization.k8s.io/v1/namespaces/default/roles"
        let (ok, _) = try await json(
            "POST", roles,
            ["metadata": ["name": "reader"], "rules": [["apiGroups": [""], "resources": ["pods"], "verbs": ["get"]]]])
        #expect(ok == 201)
        let (refused, status) = try await json(
            "POST", roles,
            ["metadata": ["name": "nodes"], "rules": [["apiGroups": [""], "resources": ["leases"], "verbs": ["get"]]]])
        #expect(refused == 403)
        #expect(
            status["message"]?.stringValue?.hasPrefix(
                #"roles.rbac.authorization.k8s.io "nodes" is forbidden: user "dev" (groups=["system:authenticated"]) is attempting to grant RBAC permissions not currently held:"#
            )
                == true)
        #expect(
            status["message"]?.stringValue?.contains(#"{APIGroups:[""], Resources:["leases"], Verbs:["get"]}"#) == true)
        // Binding cluster-admin in its namespace would grant what dev does not hold.
        let bindings = "/apis/rbac.authorization.k8s.io/v1/namespaces/default/rolebindings"
        let (bind, _) = try await json(
            "POST", bindings,
            [
                "metadata": ["name": "escalate"],
                "roleRef": ["apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"],
                "subjects": [["kind": "User", "name": "dev"]],
            ])
        #expect(bind == 403)
        let (view, _) = try await json(
            "POST", bindings,
            [
                "metadata": ["name": "others-view"],
                "roleRef": ["apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"],
                "subjects": [["kind": "User", "name": "ann"]],
            ])
        #expect(view == 201)
        // The roleRef of a binding never changes.
        var stored = try await json("GET", "\(bindings)/others-view", as: .admin).1
        stored["roleRef"]?["name"] = "edit"
        let (changed, invalid) = try await json("PUT", "\(bindings)/others-view", stored, as: .admin)
        #expect(changed == 422)
        #expect(invalid["message"]?.stringValue?.contains("cannot change roleRef") == true)
    }

    // MARK: - Tokens

    @Test func theTokenFileIsReadAgainWhenItChanges() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent(
            "ktlab-users-\(getpid())-\(UUID())")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let path = directory.appendingPathComponent("users.json").path
        let authenticator = TokenAuthenticator(adminTokens: ["admin-token"], userFile: path)
        #expect(authenticator.user(forToken: "admin-token") == .admin)
        #expect(authenticator.user(forToken: "t1") == nil)  // no file yet
        try UserTokens(users: [.init(name: "dev", token: "t1")]).write(path)
        var info = stat()
        #expect(stat(path, &info) == 0 && info.st_mode & 0o777 == 0o600)
        #expect(authenticator.user(forToken: "t1") == .restricted("dev"))
        try UserTokens(users: [.init(name: "dev", token: "t1"), .init(name: "ops", token: "t2")]).write(path)
        #expect(authenticator.user(forToken: "t2") == UserInfo(name: "ops", groups: ["system:authenticated"]))
        #expect(authenticator.user(forToken: "t3") == nil)
        // A name that is not a user name is never a user.
        try UserTokens(users: [.init(name: "system:masters", token: "t4")]).write(path)
        #expect(authenticator.user(forToken: "t4") == nil)
        #expect(!UserTokens.isValidName("Dev") && !UserTokens.isValidName("-dev") && !UserTokens.isValidName("a:b"))
        #expect(UserTokens.isValidName("dev") && UserTokens.isValidName("dev.team-1") && UserTokens.isValidName("7"))
    }
}
