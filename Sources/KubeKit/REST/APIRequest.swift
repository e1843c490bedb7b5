import Foundation

/// One API call as a value: built by pure functions, tested as a value, sent by a `KubeTransport`.
public struct APIRequest: Sendable, Hashable {
    public enum Method: String, Sendable, Hashable {
        case get = "GET"
        case post = "POST"
        case put = "PUT"
        case patch = "PATCH"
        case delete = "DELETE"
    }

    public var method: Method
    /// The path below the cluster's API prefix, percent-encoded (`/api/v1/namespaces/default/pods`).
    public var path: String
    public var query: [QueryItem]
    public var headers: [Header]
    public var body: [UInt8]?
    /// The Kubernetes verb, for messages (`get`, `list`, `watch`, `create`, `update`, `patch`, `delete`).
    public var verb: String
    /// What the call is about, for messages (`pods "web" in namespace "default"`).
    public var subject: String

    public struct QueryItem: Sendable, Hashable {
        public var name: String
        public var value: String
        public init(_ name: String, _ value: String) {
            self.name = name
            self.value = value
        }
    }

    public struct Header: Sendable, Hashable {
        public var name: String
        public var value: String
        public init(_ name: String, _ value: String) {
            self.name = name
            self.value = value
        }
    }

    public init(
        method: Method, path: String, query: [QueryItem] = [], headers: [Header] = [], body: [UInt8]? = nil,
        verb: String, subject: String
    ) {
        self.method = method
        self.path = path
        self.query = query
        self.headers = [Header("Accept", "application/json")] + headers
        self.body = body
        self.verb = verb
        self.subject = subject
    }

    public func header(_ name: String) -> String? {
        headers.last { $0.name.lowercased() == name.lowercased() }?.value
    }

    /// `path?query`, percent-encoded as a server receives it.
    public var target: String {
        query.isEmpty ? path : path + "?" + Self.encodeQuery(query.map { ($0.name, $0.value) })
    }

    static func encodeQuery(_ items: [(String, String)]) -> String {
        var allowed = CharacterSet.alphanumerics
        allowed.insert(charactersIn: "-._~")
        func escape(_ text: String) -> String { text.addingPercentEncoding(withAllowedCharacters: allowed) ?? text }
        return items.map { "\(escape($0.0))=\(escape($0.1))" }.joined(separator: "&")
    }
}

// MARK: - Options

/// `labelSelector`, `fieldSelector`, paging and the starting point of a list or watch.
public struct ListOptions: Sendable, Hashable {
    public var labelSelector: String?
    public var fieldSelector: String?
    /// Page size; the server returns `metadata.continue` when there is more.
    public var limit: Int?
    public var continueToken: String?
    public var resourceVersion: String?

    public init(
        labelSelector: String? = nil, fieldSelector: String? = nil, limit: Int? = nil, continueToken: String? = nil,
        resourceVersion: String? = nil
    ) {
        self.labelSelector = labelSelector
        self.fieldSelector = fieldSelector
        self.limit = limit
        self.continueToken = continueToken
        self.resourceVersion = resourceVersion
    }

    var queryItems: [APIRequest.QueryItem] {
        var items: [APIRequest.QueryItem] = []
        if let labelSelector, !labelSelector.isEmpty { items.append(.init("labelSelector", labelSelector)) }
        if let fieldSelector, !fieldSelector.isEmpty { items.append(.init("fieldSelector", fieldSelector)) }
        if let limit { items.append(.init("limit", String(limit))) }
        if let continueToken, !continueToken.isEmpty { items.append(.init("continue", continueToken)) }
        if let resourceVersion { items.append(.init("resourceVersion", resourceVersion)) }
        return items
    }
}

/// How a delete treats the object's dependents, and how long its pods get to stop.
public struct DeleteOptions: Sendable, Hashable {
    public enum Propagation: String, Sendable, Hashable {
        case foreground = "Foreground"
        case background = "Background"
        case orphan = "Orphan"
    }

    public var propagationPolicy: Propagation?
    public var gracePeriodSeconds: Int?
    /// Delete only if the object still has this resourceVersion (409 otherwise).
    public var preconditionResourceVersion: String?
    /// Delete only if the object is still this one (409 when another object of that name took its place).
    public var preconditionUID: String?

    public init(
        propagationPolicy: Propagation? = nil, gracePeriodSeconds: Int? = nil,
        preconditionResourceVersion: String? = nil, preconditionUID: String? = nil
    ) {
        self.propagationPolicy = propagationPolicy
        self.gracePeriodSeconds = gracePeriodSeconds
        self.preconditionResourceVersion = preconditionResourceVersion
        self.preconditionUID = preconditionUID
    }

    var document: JSONValue {
        var members: [String: JSONValue] = ["kind": .string("DeleteOptions"), "apiVersion": .string("v1")]
        if let propagationPolicy { members["propagationPolicy"] = .string(propagationPolicy.rawValue) }
        if let gracePeriodSeconds { members["gracePeriodSeconds"] = .int(Int64(gracePeriodSeconds)) }
        var preconditions: [String: JSONValue] = [:]
        if let preconditionResourceVersion { preconditions["resourceVersion"] = .string(preconditionResourceVersion) }
        if let preconditionUID { preconditions["uid"] = .string(preconditionUID) }
        if !preconditions.isEmpty { members["preconditions"] = .object(preconditions) }
        return .object(members)
    }
}

/// A change to send with PATCH: the three kinds the API server accepts from kubectl.
public enum Patch: Sendable, Hashable {
    /// RFC 7386: maps merge, `null` deletes, lists are replaced whole.
    case merge(JSONValue)
    /// Kubernetes strategic merge: like merge, but lists with a merge key (containers by name, ports by port, ...)
    /// are merged element by element.
    case strategic(JSONValue)
    /// RFC 6902 operations.
    case json([JSONPatchOperation])

    public var contentType: String {
        switch self {
        case .merge: return "application/merge-patch+json"
        case .strategic: return "application/strategic-merge-patch+json"
        case .json: return "application/json-patch+json"
        }
    }

    public var document: JSONValue {
        switch self {
        case .merge(let value), .strategic(let value): return value
        case .json(let operations): return .array(operations.map(\.document))
        }
    }
}

/// One RFC 6902 operation.
public struct JSONPatchOperation: Sendable, Hashable {
    public enum Op: String, Sendable, Hashable { case add, remove, replace, move, copy, test }
    public var op: Op
    /// A JSON pointer (RFC 6901), e.g. `/spec/selector/app`.
    public var path: String
    public var value: JSONValue?
    public var from: String?

    public init(_ op: Op, _ path: String, value: JSONValue? = nil, from: String? = nil) {
        self.op = op
        self.path = path
        self.value = value
        self.from = from
    }

    /// Escapes one key for a JSON pointer (`~` → `~0`, `/` → `~1`).
    public static func escape(_ key: String) -> String {
        key.replacingOccurrences(of: "~", with: "~0").replacingOccurrences(of: "/", with: "~1")
    }

    var document: JSONValue {
        var members: [String: JSONValue] = ["op": .string(op.rawValue), "path": .string(path)]
        if let value { members["value"] = value }
        if let from { members["from"] = .string(from) }
        return .object(members)
    }
}

// MARK: - Builders

extension APIRequest {
    static func describe(_ resource: ResourceType, name: String?, namespace: String?) -> String {
        var text = resource.description
        if let name { text += " \"\(name)\"" }
        if resource.namespaced, let namespace { text += " in namespace \"\(namespace)\"" }
        return text
    }

    public static func get(_ resource: ResourceType, name: String, namespace: String?, subresource: String? = nil)
        -> APIRequest
    {
        APIRequest(
            method: .get, path: resource.objectPath(name: name, namespace: namespace, subresource: subresource),
            verb: "get", subject: describe(resource, name: name, namespace: namespace))
    }

    /// A list; `namespace` nil lists every namespace.
    public static func list(_ resource: ResourceType, namespace: String?, options: ListOptions = ListOptions())
        -> APIRequest
    {
        APIRequest(
            method: .get, path: resource.collectionPath(namespace: namespace), query: options.queryItems,
            verb: "list", subject: describe(resource, name: nil, namespace: namespace))
    }

    /// A watch from `options.resourceVersion` ("0" or nil: the current state first, as ADDED events).
    public static func watch(
        _ resource: ResourceType, namespace: String?, options: ListOptions = ListOptions(),
        timeoutSeconds: Int? = nil, bookmarks: Bool = true
    ) -> APIRequest {
        var query = options.queryItems.filter { $0.name != "limit" && $0.name != "continue" }
        if bookmarks { query.append(.init("allowWatchBookmarks", "true")) }
        if let timeoutSeconds { query.append(.init("timeoutSeconds", String(timeoutSeconds))) }
        query.append(.init("watch", "true"))
        return APIRequest(
            method: .get, path: resource.collectionPath(namespace: namespace), query: query,
            verb: "watch", subject: describe(resource, name: nil, namespace: namespace))
    }

    public static func create(_ resource: ResourceType, namespace: String?, body: JSONValue, fieldManager: String?)
        throws -> APIRequest
    {
        APIRequest(
            method: .post, path: resource.collectionPath(namespace: namespace),
            query: fieldManager.map { [.init("fieldManager", $0)] } ?? [],
            headers: [Header("Content-Type", "application/json")], body: Array(try body.jsonData()),
            verb: "create",
            subject: describe(resource, name: body["metadata"]?["name"]?.stringValue, namespace: namespace))
    }

    public static func update(
        _ resource: ResourceType, name: String, namespace: String?, body: JSONValue, subresource: String? = nil,
        fieldManager: String?
    ) throws -> APIRequest {
        APIRequest(
            method: .put, path: resource.objectPath(name: name, namespace: namespace, subresource: subresource),
            query: fieldManager.map { [.init("fieldManager", $0)] } ?? [],
            headers: [Header("Content-Type", "application/json")], body: Array(try body.jsonData()),
            verb: "update", subject: describe(resource, name: name, namespace: namespace))
    }

    public static func patch(
        _ resource: ResourceType, name: String, namespace: String?, patch: Patch, subresource: String? = nil,
        fieldManager: String?
    ) throws -> APIRequest {
        APIRequest(
            method: .patch, path: resource.objectPath(name: name, namespace: namespace, subresource: subresource),
            query: fieldManager.map { [.init("fieldManager", $0)] } ?? [],
            headers: [Header("Content-Type", patch.contentType)], body: Array(try patch.document.jsonData()),
            verb: "patch", subject: describe(resource, name: name, namespace: namespace))
    }

    public static func delete(
        _ resource: ResourceType, name: String, namespace: String?, options: DeleteOptions = DeleteOptions()
    ) throws -> APIRequest {
        APIRequest(
            method: .delete, path: resource.objectPath(name: name, namespace: namespace),
            headers: [Header("Content-Type", "application/json")], body: Array(try options.document.jsonData()),
            verb: "delete", subject: describe(resource, name: name, namespace: namespace))
    }

    /// The WebSocket port-forward of a pod (`ports=8080,9090`).
    public static func portForward(pod: String, namespace: String, ports: [Int]) -> APIRequest {
        APIRequest(
            method: .get, path: Pod.resource.objectPath(name: pod, namespace: namespace, subresource: "portforward"),
            query: [.init("ports", ports.map(String.init).joined(separator: ","))],
            verb: "create", subject: "pods/portforward \"\(pod)\" in namespace \"\(namespace)\"")
    }
}

/// What came back: status, headers and the whole body.
public struct APIResponse: Sendable, Hashable {
    public var status: Int
    public var headers: [APIRequest.Header]
    public var body: [UInt8]

    public init(status: Int, headers: [APIRequest.Header] = [], body: [UInt8]) {
        self.status = status
        self.headers = headers
        self.body = body
    }

    public func header(_ name: String) -> String? {
        headers.last { $0.name.lowercased() == name.lowercased() }?.value
    }
}
