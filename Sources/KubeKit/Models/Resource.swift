import Foundation

/// Where a kind of object lives in the API: `/api/v1/namespaces/NS/pods` or `/apis/apps/v1/...`.
public struct ResourceType: Hashable, Sendable, CustomStringConvertible {
    /// The API group; empty for the core group.
    public var group: String
    public var version: String
    /// The plural, lower-case name used in paths (`pods`).
    public var plural: String
    public var kind: String
    public var namespaced: Bool

    public init(group: String, version: String, plural: String, kind: String, namespaced: Bool) {
        self.group = group
        self.version = version
        self.plural = plural
        self.kind = kind
        self.namespaced = namespaced
    }

    /// `v1` or `apps/v1`, as in `apiVersion`.
    public var apiVersion: String { group.isEmpty ? version : "\(group)/\(version)" }

    /// `pods` or `deployments.apps`, as kubectl names a resource in messages.
    public var description: String { group.isEmpty ? plural : "\(plural).\(group)" }

    /// The path of the collection (`namespace` ignored for cluster-scoped kinds; nil lists every namespace).
    public func collectionPath(namespace: String?) -> String {
        let root = group.isEmpty ? "/api/\(version)" : "/apis/\(group)/\(version)"
        if namespaced, let namespace {
            return "\(root)/namespaces/\(Self.escape(namespace))/\(plural)"
        }
        return "\(root)/\(plural)"
    }

    /// The path of one object, optionally of one of its subresources (`status`, `scale`, `log`, `portforward`).
    public func objectPath(name: String, namespace: String?, subresource: String? = nil) -> String {
        var path = collectionPath(namespace: namespace) + "/" + Self.escape(name)
        if let subresource { path += "/" + subresource }
        return path
    }

    static func escape(_ segment: String) -> String {
        var allowed = CharacterSet.urlPathAllowed
        allowed.remove(charactersIn: "/")
        return segment.addingPercentEncoding(withAllowedCharacters: allowed) ?? segment
    }
}

/// A kind of object KubeKit can read and write: typed fields plus everything else the server sent, so that an
/// update sends back the fields this version of KubeKit does not know about.
public protocol KubeResource: Codable, Sendable {
    static var resource: ResourceType { get }
    var metadata: ObjectMeta { get set }
    /// The whole object as the server last sent it (`.null` for an object built here). Not encoded.
    var raw: JSONValue { get set }
}

extension KubeResource {
    public var name: String { metadata.name ?? "" }
    public var namespace: String? { metadata.namespace }

    /// Decodes an object from the server, keeping its document for later updates.
    public static func decoding(_ document: JSONValue) throws -> Self {
        var object = try document.decode(Self.self)
        object.raw = document
        return object
    }

    /// What to send to the server: the typed fields over the document the server sent. A field KubeKit models
    /// and the caller cleared is removed; a field it does not model is sent back as it came (at every depth,
    /// list elements matched by `name`).
    public func document() throws -> JSONValue {
        var current = try JSONValue(encoding: self)
        current["apiVersion"] = .string(Self.resource.apiVersion)
        current["kind"] = .string(Self.resource.kind)
        guard raw != .null else { return current }
        var base = try JSONValue(encoding: try raw.decode(Self.self))
        base["apiVersion"] = current["apiVersion"]
        base["kind"] = current["kind"]
        return Overlay.apply(changes: current, since: base, onto: raw)
    }
}

/// Three-way overlay used to preserve unknown fields: what changed between `base` (the typed view of `raw`) and
/// `changes` (the typed view after the caller's edits) is carried onto `raw`.
enum Overlay {
    static func apply(changes: JSONValue, since base: JSONValue, onto raw: JSONValue) -> JSONValue {
        if changes == base { return raw }
        switch (changes, base, raw) {
        case (.object(let new), .object(let old), .object(var result)):
            for key in old.keys where new[key] == nil { result[key] = nil }
            for (key, value) in new {
                result[key] = apply(changes: value, since: old[key] ?? .null, onto: result[key] ?? .null)
            }
            return .object(result)
        case (.array(let new), .array(let old), .array(let rawElements)) where old.count == rawElements.count:
            let oldByName = Dictionary(
                old.indices.compactMap { index in old[index]["name"]?.stringValue.map { ($0, index) } },
                uniquingKeysWith: { first, _ in first })
            return .array(
                new.enumerated().map { offset, element in
                    if let name = element["name"]?.stringValue {
                        guard let index = oldByName[name] else { return element }
                        return apply(changes: element, since: old[index], onto: rawElements[index])
                    }
                    guard new.count == old.count else { return element }
                    return apply(changes: element, since: old[offset], onto: rawElements[offset])
                })
        default:
            return changes
        }
    }
}

/// A list as the server sends it: `items` plus the list's resourceVersion and continue token.
public struct ObjectList<Item: KubeResource>: Sendable {
    public var items: [Item]
    public var metadata: ListMeta

    public init(items: [Item], metadata: ListMeta) {
        self.items = items
        self.metadata = metadata
    }

    static func decoding(_ document: JSONValue) throws -> ObjectList {
        let metadata = try (document["metadata"] ?? .object([:])).decode(ListMeta.self)
        let items = try (document["items"]?.arrayValue ?? []).map { try Item.decoding($0) }
        return ObjectList(items: items, metadata: metadata)
    }
}
