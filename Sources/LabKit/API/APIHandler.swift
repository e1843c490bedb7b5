import Foundation
import KubeKit

/// One request as the API server sees it, after TLS and authentication.
public struct APIServerRequest: Sendable {
    public var method: String
    public var path: String
    public var query: [String: [String]]
    public var headers: [(String, String)]
    public var body: [UInt8]
    /// Who sent it (authentication's answer); RBAC judges it.
    public var user: UserInfo

    /// `user` defaults to the lab's administrator: requests made in-process (tests of the handler alone).
    public init(method: String, uri: String, headers: [(String, String)], body: [UInt8], user: UserInfo = .admin) {
        self.method = method
        self.user = user
        // Clients encode spaces in the query as '+' (form encoding; a literal '+' comes as %2B).
        var components = URLComponents(string: uri)
        let formDecoded = components?.percentEncodedQuery?.replacingOccurrences(of: "+", with: "%20")
        components?.percentEncodedQuery = formDecoded
        self.path = components?.percentEncodedPath.removingPercentEncoding ?? uri
        var query: [String: [String]] = [:]
        for item in components?.queryItems ?? [] { query[item.name, default: []].append(item.value ?? "") }
        self.query = query
        self.headers = headers
        self.body = body
    }

    public func header(_ name: String) -> String? {
        headers.last { $0.0.lowercased() == name.lowercased() }?.1
    }

    func first(_ name: String) -> String? { query[name]?.first }
}

/// What the server answers.
public enum APIServerResponse: Sendable {
    case json(Int, JSONValue)
    case raw(Int, contentType: String, [UInt8])
    /// A body written as it comes (chunked): watch events (one JSON object and a newline each), a followed log.
    case stream(contentType: String, AsyncStream<[UInt8]>)
}

/// The REST semantics of the API server over `ObjectStore`: routing, verbs, subresources, patches, watch.
public final class APIHandler: Sendable {
    public let store: ObjectStore
    public let admission: Admission
    /// How often a watch that asked for bookmarks gets one (a real server: about a minute).
    public let bookmarkInterval: Duration
    let serverAddress: String

    /// Where a container's log is (the kubelet's file), for `pods/log`.
    let logPath: @Sendable (_ pod: JSONValue, _ container: String?) -> String?

    public init(
        store: ObjectStore, admission: Admission, serverAddress: String, bookmarkInterval: Duration = .seconds(60),
        logPath: @escaping @Sendable (_ pod: JSONValue, _ container: String?) -> String? = { _, _ in nil }
    ) {
        self.logPath = logPath
        self.store = store
        self.admission = admission
        self.serverAddress = serverAddress
        self.bookmarkInterval = bookmarkInterval
    }

    /// Where a path points: a resource (collection or one object, maybe a subresource), or nothing we serve.
    struct Target {
        var resource: ServedResource
        var namespace: String?
        var name: String?
        var subresource: String?
    }

    /// Answers `request`: refused (403) when RBAC does not allow its user to do it.
    public func handle(_ request: APIServerRequest) async -> APIServerResponse {
        if let refusal = refusal(request) { return refusal }
        do {
            return try await route(request)
        } catch let error as APIStatusError {
            return .json(error.code, error.document)
        } catch {
            let status = APIStatusError(code: 500, reason: "InternalError", message: "\(error)")
            return .json(500, status.document)
        }
    }

    func route(_ request: APIServerRequest) async throws -> APIServerResponse {
        let parts = request.path.split(separator: "/").map(String.init)
        switch parts {
        case ["version"]: return .json(200, Discovery.version)
        case ["healthz"], ["readyz"], ["livez"]: return .raw(200, contentType: "text/plain", Array("ok".utf8))
        case ["api"]: return .json(200, Discovery.versions(serverAddress: serverAddress))
        case ["apis"]: return .json(200, Discovery.groups())
        case ["openapi", "v2"]: return .raw(200, contentType: "application/octet-stream", [])
        default: break
        }
        if (parts.count == 2 && parts[0] == "api") || (parts.count == 3 && parts[0] == "apis") {
            let group = parts.count == 3 ? parts[1] : ""
            guard let document = Discovery.resources(group: group, version: parts[parts.count - 1]) else {
                throw APIStatusError.unknownPath
            }
            return .json(200, document)
        }
        let target = try Self.target(parts)
        if target.resource.isReview { return .json(201, try review(target, request)) }
        switch (request.method, target.name, target.subresource) {
        case ("GET", nil, _):
            if request.first("watch") == "true" || request.first("watch") == "1" {
                return try watch(target, request)
            }
            let list = try list(target, request)
            guard Tables.wants(request) else { return .json(200, list) }
            return .json(
                200,
                Tables.table(
                    target.resource.type, list["items"]?.arrayValue ?? [],
                    resourceVersion: list["metadata"]?["resourceVersion"]?.stringValue,
                    continueToken: list["metadata"]?["continue"], includeObject: request.first("includeObject")))
        case ("GET", let name?, "log"):
            return try log(target, name: name, request)
        case ("GET", let name?, let subresource):
            let object = try get(target, name: name, subresource: subresource)
            guard Tables.wants(request), subresource == nil else { return .json(200, object) }
            return .json(
                200,
                Tables.table(
                    target.resource.type, [object],
                    resourceVersion: object["metadata"]?["resourceVersion"]?.stringValue,
                    includeObject: request.first("includeObject")))
        case ("POST", nil, _):
            return .json(201, try create(target, request))
        case ("PUT", let name?, let subresource):
            return .json(200, try update(target, name: name, subresource: subresource, request))
        case ("PATCH", let name?, let subresource):
            return .json(200, try patch(target, name: name, subresource: subresource, request))
        case ("DELETE", let name?, nil):
            return .json(200, try delete(target, name: name, request))
        default:
            throw APIStatusError(
                code: 405, reason: "MethodNotAllowed",
                message: "the server does not allow this method on the requested resource")
        }
    }

    static func target(_ parts: [String]) throws -> Target {
        var rest: ArraySlice<String>
        let group: String
        let version: String
        if parts.first == "api", parts.count >= 3 {
            group = ""
            version = parts[1]
            rest = parts[2...]
        } else if parts.first == "apis", parts.count >= 4 {
            group = parts[1]
            version = parts[2]
            rest = parts[3...]
        } else {
            throw APIStatusError.unknownPath
        }
        var namespace: String?
        if rest.first == "namespaces", rest.count >= 3 {
            namespace = rest[rest.startIndex + 1]
            rest = rest.dropFirst(2)
        }
        guard let plural = rest.first,
            let resource = ResourceRegistry.find(group: group, version: version, plural: plural)
        else { throw APIStatusError.unknownPath }
        rest = rest.dropFirst()
        let name = rest.first
        let subresource = rest.dropFirst().first
        if let subresource, resource.subresources[subresource] == nil { throw APIStatusError.unknownPath }
        if !resource.type.namespaced { namespace = nil }
        if resource.type.namespaced, name != nil, namespace == nil { throw APIStatusError.unknownPath }
        return Target(resource: resource, namespace: namespace, name: name, subresource: subresource)
    }

    // MARK: - Reading

    func selection(_ target: Target, _ request: APIServerRequest) throws -> Selection {
        Selection(
            resource: target.resource.type, namespace: target.namespace,
            labels: try request.first("labelSelector").flatMap { $0.isEmpty ? nil : try LabelQuery(parsing: $0) },
            fields: try request.first("fieldSelector").flatMap { $0.isEmpty ? nil : try FieldQuery(parsing: $0) })
    }

    func list(_ target: Target, _ request: APIServerRequest) throws -> JSONValue {
        let (items, revision) = store.list(try selection(target, request))
        // Pages: `continue` is the last name handed out (namespace/name), base64.
        var remaining = items
        if let token = request.first("continue"), !token.isEmpty {
            guard let data = Data(base64Encoded: token), let after = String(data: data, encoding: .utf8) else {
                throw APIStatusError.badRequest("invalid continue token")
            }
            remaining = items.filter { Self.sortKey($0) > after }
        }
        var metadata: [String: JSONValue] = ["resourceVersion": .string(String(revision))]
        if let limit = request.first("limit").flatMap(Int.init), limit > 0, remaining.count > limit {
            let page = Array(remaining.prefix(limit))
            metadata["continue"] = .string(Data(Self.sortKey(page[page.count - 1]).utf8).base64EncodedString())
            metadata["remainingItemCount"] = .int(Int64(remaining.count - limit))
            remaining = page
        }
        return [
            "kind": .string(target.resource.type.kind + "List"), "apiVersion": .string(target.resource.type.apiVersion),
            "metadata": .object(metadata), "items": .array(remaining),
        ]
    }

    static func sortKey(_ object: JSONValue) -> String {
        "\(object["metadata"]?["namespace"]?.stringValue ?? "")/\(object["metadata"]?["name"]?.stringValue ?? "")"
    }

    func get(_ target: Target, name: String, subresource: String?) throws -> JSONValue {
        let object = try store.get(target.resource.type, namespace: target.namespace ?? "", name: name)
        if subresource == "scale" { return Self.scale(of: object) }
        return object
    }

    static func scale(of object: JSONValue) -> JSONValue {
        let matchLabels = (object["spec"]?["selector"]?["matchLabels"]?.objectValue ?? [:]).compactMapValues(
            \.stringValue)
        let selector = matchLabels.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: ",")
        var metadata: [String: JSONValue] = [:]
        for field in ["name", "namespace", "uid", "resourceVersion", "creationTimestamp"] {
            metadata[field] = object["metadata"]?[field]
        }
        return [
            "kind": "Scale", "apiVersion": "autoscaling/v1", "metadata": .object(metadata),
            "spec": ["replicas": object["spec"]?["replicas"] ?? 0],
            "status": ["replicas": object["status"]?["replicas"] ?? 0, "selector": .string(selector)],
        ]
    }

    // MARK: - Writing

    func body(_ request: APIServerRequest) throws -> JSONValue {
        let type = request.header("Content-Type") ?? "application/json"
        if type.contains("application/vnd.kubernetes.protobuf") {
            return try ProtobufBody.decode(request.body)
        }
        do {
            return try JSONValue(json: Data(request.body))
        } catch {
            throw APIStatusError.badRequest("the body is not valid JSON: \(error)")
        }
    }

    func create(_ target: Target, _ request: APIServerRequest) throws -> JSONValue {
        var object = try body(request)
        let resource = target.resource.type
        try admission.checkFields(resource, object, validation: request.first("fieldValidation"))
        if let kind = object["kind"]?.stringValue, kind != resource.kind {
            throw APIStatusError.badRequest(
                "the API version in the data (\(object["apiVersion"]?.stringValue ?? "")) does not match the expected API version (\(resource.apiVersion)) or kind \(kind) is not \(resource.kind)"
            )
        }
        if let namespace = object["metadata"]?["namespace"]?.stringValue, let path = target.namespace, namespace != path
        {
            throw APIStatusError.badRequest(
                "the namespace of the provided object does not match the namespace sent on the request")
        }
        object = try admission.defaulted(resource, object)
        try admission.validate(resource, object)
        try confirmNoEscalation(resource, object, namespace: target.namespace ?? "", user: request.user)
        if resource == Pod.resource, let account = object["spec"]?["serviceAccountName"]?.stringValue,
            account != "default",
            (try? store.get(ResourceRegistry.serviceAccount, namespace: target.namespace ?? "", name: account)) == nil
        {
            // The ServiceAccount admission plugin's refusal (the `default` account every namespace has is assumed).
            let name = object["metadata"]?["name"]?.stringValue ?? ""
            throw APIStatusError(
                code: 403, reason: "Forbidden",
                message: "pods \"\(name)\" is forbidden: error looking up service account "
                    + "\(target.namespace ?? "")/\(account): serviceaccount \"\(account)\" not found",
                details: .object(["name": .string(name), "kind": "pods"]))
        }
        do {
            return try store.create(resource, namespace: target.namespace ?? "", object: object)
        } catch {
            if resource == Service.resource { admission.release(clusterIP: object["spec"]?["clusterIP"]?.stringValue) }
            throw error
        }
    }

    func update(_ target: Target, name: String, subresource: String?, _ request: APIServerRequest) throws -> JSONValue {
        let sent = try body(request)
        if subresource == nil {
            try admission.checkFields(target.resource.type, sent, validation: request.first("fieldValidation"))
        }
        try confirmNoEscalation(target.resource.type, sent, namespace: target.namespace ?? "", user: request.user)
        return try write(target, name: name, subresource: subresource, sent: sent)
    }

    /// Stores `sent` as the new state of the object (or of its status, or its scale), keeping what the server
    /// owns: the status on a main-resource write when the kind has a status subresource, the spec on a status write.
    func write(_ target: Target, name: String, subresource: String?, sent: JSONValue) throws -> JSONValue {
        let resource = target.resource.type
        let namespace = target.namespace ?? ""
        if subresource == "scale" {
            guard let replicas = sent["spec"]?["replicas"]?.intValue else {
                throw APIStatusError.invalid(resource, name, field: "spec.replicas", "Required value")
            }
            var change: JSONValue = ["spec": ["replicas": .int(replicas)]]
            change["metadata"] = ["resourceVersion": sent["metadata"]?["resourceVersion"] ?? .null]
            let stored = try store.update(resource, namespace: namespace, name: name, object: change) { old, new in
                var result = old
                result["spec"]?["replicas"] = new["spec"]?["replicas"]
                return result
            }
            return Self.scale(of: stored)
        }
        let hasStatus = target.resource.hasStatus
        let admission = self.admission
        return try store.update(resource, namespace: namespace, name: name, object: sent) { old, new in
            var result = new
            if subresource == "status" {
                result = old
                result["status"] = new["status"]
                result["metadata"]?["resourceVersion"] = new["metadata"]?["resourceVersion"]
            } else if hasStatus {
                result["status"] = old["status"]
            }
            if resource == Service.resource, result["spec"]?["clusterIP"] != old["spec"]?["clusterIP"],
                result["spec"]?["clusterIP"] != nil
            {
                throw APIStatusError.invalid(
                    resource, name, field: "spec.clusterIP", "Invalid value: field is immutable")
            }
            if resource == ResourceRegistry.roleBinding || resource == ResourceRegistry.clusterRoleBinding,
                result["roleRef"] != old["roleRef"]
            {
                throw APIStatusError.invalid(resource, name, field: "roleRef", "Invalid value: cannot change roleRef")
            }
            if resource == Service.resource, result["spec"]?["clusterIP"] == nil {
                result["spec"]?["clusterIP"] = old["spec"]?["clusterIP"]
                result["spec"]?["clusterIPs"] = old["spec"]?["clusterIPs"]
            }
            try admission.validate(resource, result)
            return result
        }
    }

    func patch(_ target: Target, name: String, subresource: String?, _ request: APIServerRequest) throws -> JSONValue {
        let contentType = request.header("Content-Type")?.split(separator: ";").first.map(String.init) ?? ""
        let patchDocument: JSONValue
        do {
            patchDocument = try JSONValue(json: Data(request.body))
        } catch {
            throw APIStatusError.badRequest("the patch is not valid JSON: \(error)")
        }
        let resource = target.resource.type
        var current = try store.get(resource, namespace: target.namespace ?? "", name: name)
        if subresource == "scale" { current = Self.scale(of: current) }
        var patched: JSONValue
        switch contentType {
        case "application/merge-patch+json":
            patched = Patching.merge(patchDocument, into: current)
        case "application/strategic-merge-patch+json":
            patched = try Patching.strategic(patchDocument, into: current)
        case "application/json-patch+json":
            patched = try Patching.json(patchDocument, into: current)
        default:
            throw APIStatusError(
                code: 415, reason: "UnsupportedMediaType",
                message: "the body of the request was in an unknown format - accepted media types include: "
                    + "application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json"
            )
        }
        if subresource == nil {
            try admission.checkFields(target.resource.type, patched, validation: request.first("fieldValidation"))
        }
        // A patch without a resourceVersion applies to whatever is stored now; one with a stale version conflicts.
        if patchDocument["metadata"]?["resourceVersion"] == nil {
            patched["metadata"]?["resourceVersion"] = nil
        }
        try confirmNoEscalation(resource, patched, namespace: target.namespace ?? "", user: request.user)
        return try write(target, name: name, subresource: subresource, sent: patched)
    }

    func delete(_ target: Target, name: String, _ request: APIServerRequest) throws -> JSONValue {
        let options = request.body.isEmpty ? JSONValue.object([:]) : ((try? JSONValue(json: Data(request.body))) ?? [:])
        let propagation =
            options["propagationPolicy"]?.stringValue ?? request.first("propagationPolicy") ?? "Background"
        let precondition = options["preconditions"]?["resourceVersion"]?.stringValue
        let resource = target.resource.type
        let namespace = target.namespace ?? ""
        if let uid = options["preconditions"]?["uid"]?.stringValue {
            let current = try store.get(resource, namespace: namespace, name: name)
            let actual = current["metadata"]?["uid"]?.stringValue ?? ""
            guard actual == uid else {
                throw APIStatusError(
                    code: 409, reason: "Conflict",
                    message: "Operation cannot be fulfilled on \(resource.plural) \"\(name)\": Precondition failed: "
                        + "UID in precondition: \(uid), UID in object meta: \(actual)")
            }
        }
        if resource == Pod.resource {
            let grace =
                options["gracePeriodSeconds"]?.intValue ?? request.first("gracePeriodSeconds").flatMap(Int64.init)
            return try deletePod(namespace: namespace, name: name, grace: grace, precondition: precondition)
        }
        let deleted = try store.delete(resource, namespace: namespace, name: name, precondition: precondition)
        cleanUp(after: deleted, resource: resource, propagation: propagation)
        if resource == Namespace.resource {
            for (kind, child) in store.contents(ofNamespace: name) {
                if kind == Pod.resource {
                    _ = try? deletePod(namespace: name, name: child, grace: nil)
                } else if let object = try? store.delete(kind, namespace: name, name: child) {
                    cleanUp(after: object, resource: kind, propagation: "Background")
                }
            }
        }
        return deleted
    }

    /// Deletes a pod as an API server does. One on the node ends gracefully: it gets `deletionTimestamp` (now plus
    /// the grace period) and `deletionGracePeriodSeconds`, shows as Terminating, and the kubelet stops its
    /// containers (SIGTERM, then SIGKILL when the period is over) and removes it. A pod not on a node yet, or a
    /// grace period of 0 (`kubectl delete --grace-period=0 --force`), goes at once. Deleting a terminating pod
    /// again can only shorten its period. `grace` nil means the pod's `terminationGracePeriodSeconds`.
    @discardableResult
    public func deletePod(namespace: String, name: String, grace requested: Int64?, precondition: String? = nil)
        throws -> JSONValue
    {
        let pod = try store.get(Pod.resource, namespace: namespace, name: name)
        if let precondition, precondition != pod["metadata"]?["resourceVersion"]?.stringValue {
            throw APIStatusError.conflict(Pod.resource, name)
        }
        let grace = max(0, requested ?? pod["spec"]?["terminationGracePeriodSeconds"]?.intValue ?? 30)
        let onNode = !(pod["spec"]?["nodeName"]?.stringValue ?? "").isEmpty
        if grace == 0 || !onNode {
            return try store.delete(Pod.resource, namespace: namespace, name: name)
        }
        let now = Date()
        return try store.modify(Pod.resource, namespace: namespace, name: name) { object in
            if let current = object["metadata"]?["deletionGracePeriodSeconds"]?.intValue, current <= grace { return }
            object["metadata"]?["deletionTimestamp"] = .string(RFC3339.format(now.addingTimeInterval(Double(grace))))
            object["metadata"]?["deletionGracePeriodSeconds"] = .int(grace)
        }
    }

    /// Garbage collection: dependents go with their owner (Background, Foreground) or lose the owner reference
    /// (Orphan); a Service's ClusterIP is free again.
    func cleanUp(after deleted: JSONValue, resource: ResourceType, propagation: String) {
        if resource == Service.resource { admission.release(clusterIP: deleted["spec"]?["clusterIP"]?.stringValue) }
        guard let uid = deleted["metadata"]?["uid"]?.stringValue else { return }
        for (kind, namespace, child) in store.dependents(of: uid) {
            if propagation == "Orphan" {
                _ = try? store.modify(kind, namespace: namespace, name: child) { object in
                    let owners = object["metadata"]?["ownerReferences"]?.arrayValue ?? []
                    object["metadata"]?["ownerReferences"] = .array(owners.filter { $0["uid"]?.stringValue != uid })
                }
            } else if kind == Pod.resource {
                _ = try? deletePod(namespace: namespace, name: child, grace: nil)
            } else if let object = try? store.delete(kind, namespace: namespace, name: child) {
                cleanUp(after: object, resource: kind, propagation: propagation)
            }
        }
    }

    // MARK: - Watch

    func watch(_ target: Target, _ request: APIServerRequest) throws -> APIServerResponse {
        let selection = try selection(target, request)
        let from = request.first("resourceVersion").flatMap { Int64($0) }
        let events = try store.watch(selection, after: from)
        let bookmarks = request.first("allowWatchBookmarks") == "true"
        let timeout = request.first("timeoutSeconds").flatMap(Int.init).map { Duration.seconds($0) }
        let resource = target.resource.type
        let store = self.store
        let interval = bookmarkInterval
        let asTable = Tables.wants(request)
        let includeObject = request.first("includeObject")
        let (stream, continuation) = AsyncStream<[UInt8]>.makeStream()
        @Sendable func send(_ event: JSONValue) {
            var bytes = Array((try? event.jsonData()) ?? Data())
            bytes.append(UInt8(ascii: "\n"))
            continuation.yield(bytes)
        }
        let pump = Task {
            await withTaskGroup(of: Void.self) { group in
                group.addTask {
                    var first = true
                    for await event in events {
                        var object = event.object
                        if asTable {
                            // One row per event; the column definitions come with the first only.
                            object = Tables.table(
                                resource, [event.object],
                                resourceVersion: event.object["metadata"]?["resourceVersion"]?.stringValue,
                                includeObject: includeObject, headers: first)
                            first = false
                        }
                        send(["type": .string(event.kind.rawValue), "object": object])
                    }
                }
                if let timeout {
                    group.addTask { try? await Task.sleep(for: timeout) }
                }
                if bookmarks {
                    group.addTask {
                        while !Task.isCancelled {
                            try? await Task.sleep(for: interval)
                            if Task.isCancelled { break }
                            send([
                                "type": "BOOKMARK",
                                "object": [
                                    "kind": .string(resource.kind), "apiVersion": .string(resource.apiVersion),
                                    "metadata": ["resourceVersion": .string(String(store.revision))],
                                ],
                            ])
                        }
                    }
                }
                // The first to finish (the events ended, or the timeout passed) ends the watch.
                await group.next()
                group.cancelAll()
            }
            continuation.finish()
        }
        continuation.onTermination = { _ in pump.cancel() }
        return .stream(contentType: "application/json", stream)
    }
}

extension APIHandler {
    /// What every cluster has before anyone creates anything: the four system namespaces, the `default`
    /// service account of each, the `kubernetes` service on the service CIDR's first address, and the default
    /// ClusterRoles with `cluster-admin` bound to `system:masters`.
    public func bootstrap() throws {
        for name in ["default", "kube-system", "kube-public", "kube-node-lease"] {
            let namespace = try admission.defaulted(Namespace.resource, ["metadata": ["name": .string(name)]])
            _ = try store.create(Namespace.resource, namespace: "", object: namespace)
            _ = try store.create(
                ResourceRegistry.serviceAccount, namespace: name, object: ["metadata": ["name": "default"]])
        }
        let first = Admission.format(admission.serviceNetwork + 1)
        let kubernetes = try admission.defaulted(
            Service.resource,
            [
                "metadata": ["name": "kubernetes", "labels": ["component": "apiserver", "provider": "kubernetes"]],
                "spec": ["clusterIP": .string(first), "ports": [["name": "https", "port": 443, "targetPort": 6443]]],
            ])
        _ = try store.create(Service.resource, namespace: "default", object: kubernetes)
        for role in RBACDefaults.clusterRoles {
            _ = try store.create(ResourceRegistry.clusterRole, namespace: "", object: role)
        }
        for binding in RBACDefaults.clusterRoleBindings {
            _ = try store.create(ResourceRegistry.clusterRoleBinding, namespace: "", object: binding)
        }
    }
}

extension APIHandler {
    /// `pods/log`: the container's output so far (`tailLines`), and with `follow=true` what it writes next, until
    /// the pod is gone or the client leaves.
    func log(_ target: Target, name: String, _ request: APIServerRequest) throws -> APIServerResponse {
        let namespace = target.namespace ?? ""
        let pod = try store.get(Pod.resource, namespace: namespace, name: name)
        let containers = (pod["spec"]?["containers"]?.arrayValue ?? []).compactMap { $0["name"]?.stringValue }
        let container = request.first("container") ?? (containers.count == 1 ? containers[0] : nil)
        guard let container else {
            throw APIStatusError.badRequest(
                "a container name must be specified for pod \(name), choose one of: [\(containers.joined(separator: " "))]"
            )
        }
        guard containers.contains(container) else {
            throw APIStatusError.badRequest("container \(container) is not valid for pod \(name)")
        }
        guard let path = logPath(pod, container) else {
            throw APIStatusError.badRequest("container \"\(container)\" in pod \"\(name)\" is waiting to start")
        }
        var text = Array(FileManager.default.contents(atPath: path) ?? Data())
        if let tail = request.first("tailLines").flatMap(Int.init), tail >= 0 {
            let lines = text.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false)
            let kept = lines.last?.isEmpty == true ? Array(lines.dropLast()) : lines
            text =
                Array(kept.suffix(tail).joined(separator: [UInt8(ascii: "\n")]))
                + (kept.isEmpty ? [] : [UInt8(ascii: "\n")])
            if tail == 0 { text = [] }
        }
        guard request.first("follow") == "true" else { return .raw(200, contentType: "text/plain", text) }
        let store = self.store
        let (stream, continuation) = AsyncStream<[UInt8]>.makeStream()
        let start = FileManager.default.contents(atPath: path)?.count ?? 0
        let first = text
        let pump = Task {
            if !first.isEmpty { continuation.yield(first) }
            var offset = start
            while !Task.isCancelled, (try? store.get(Pod.resource, namespace: namespace, name: name)) != nil {
                if let data = FileManager.default.contents(atPath: path), data.count > offset {
                    continuation.yield(Array(data[offset...]))
                    offset = data.count
                }
                try? await Task.sleep(for: .milliseconds(200))
            }
            continuation.finish()
        }
        continuation.onTermination = { _ in pump.cancel() }
        return .stream(contentType: "text/plain", stream)
    }
}
