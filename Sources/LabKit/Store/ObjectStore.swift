import Foundation
import KubeKit
import NIOConcurrencyHelpers

/// One change to an object, as a watch reports it.
public struct StoredEvent: Sendable {
    public enum Kind: String, Sendable {
        case added = "ADDED"
        case modified = "MODIFIED"
        case deleted = "DELETED"
    }
    public var kind: Kind
    public var resource: ResourceType
    public var namespace: String
    public var object: JSONValue
    public var revision: Int64
}

/// What a watch or list selects.
public struct Selection: Sendable {
    public var resource: ResourceType
    /// nil: every namespace.
    public var namespace: String?
    public var labels: LabelQuery?
    public var fields: FieldQuery?

    public init(resource: ResourceType, namespace: String?, labels: LabelQuery? = nil, fields: FieldQuery? = nil) {
        self.resource = resource
        self.namespace = namespace
        self.labels = labels
        self.fields = fields
    }

    func matches(resource other: ResourceType, namespace objectNamespace: String, object: JSONValue) -> Bool {
        guard other == resource else { return false }
        if let namespace, resource.namespaced, namespace != objectNamespace { return false }
        if let labels {
            let map = (object["metadata"]?["labels"]?.objectValue ?? [:]).compactMapValues(\.stringValue)
            if !labels.matches(map) { return false }
        }
        if let fields, !fields.matches(object) { return false }
        return true
    }
}

/// Every object of the lab, as JSON documents, with one resourceVersion counter for all of them (as etcd's
/// revision) and a log of recent changes so that a watch can start from any version still in it.
public final class ObjectStore: Sendable {
    /// How many changes are kept for watches that start in the past; older versions get 410 Gone, as from a real
    /// server's watch cache (whose default is also in the thousands).
    public static let eventLogCapacity = 8192

    struct Key: Hashable {
        var resource: ResourceType
        var namespace: String
        var name: String
    }

    struct Watcher {
        var selection: Selection
        var continuation: AsyncStream<StoredEvent>.Continuation
    }

    struct State {
        var objects: [Key: JSONValue] = [:]
        var revision: Int64 = 1
        var log: [StoredEvent] = []
        var logStart = 0
        var watchers: [UUID: Watcher] = [:]
    }

    private let state = NIOLockedValueBox(State())
    private let now: @Sendable () -> Date

    public init(now: @escaping @Sendable () -> Date = Date.init) {
        self.now = now
    }

    public var revision: Int64 { state.withLockedValue { $0.revision } }

    // MARK: - Reading

    public func get(_ resource: ResourceType, namespace: String, name: String) throws -> JSONValue {
        let key = Key(resource: resource, namespace: resource.namespaced ? namespace : "", name: name)
        guard let object = state.withLockedValue({ $0.objects[key] }) else {
            throw APIStatusError.notFound(resource, name)
        }
        return object
    }

    /// Objects sorted by namespace and name, and the revision they were read at.
    public func list(_ selection: Selection) -> (items: [JSONValue], revision: Int64) {
        state.withLockedValue { state in
            let items = state.objects.filter { key, object in
                selection.matches(resource: key.resource, namespace: key.namespace, object: object)
            }.sorted { ($0.key.namespace, $0.key.name) < ($1.key.namespace, $1.key.name) }.map(\.value)
            return (items, state.revision)
        }
    }

    // MARK: - Writing

    /// Whether the API server keeps `metadata.generation` for this kind: as kube-apiserver's strategies do, not for
    /// Services, Endpoints, ConfigMaps, Secrets, Leases, Namespaces, ServiceAccounts or Events (a Service whose
    /// selector went and came back is the object it was, generation included).
    static func tracksGeneration(_ resource: ResourceType) -> Bool {
        !(resource.group == ""
            && ["services", "endpoints", "configmaps", "secrets", "namespaces", "serviceaccounts", "events"]
                .contains(resource.plural))
            && resource.plural != "leases"
    }

    /// Stores a new object; sets uid, creationTimestamp, resourceVersion (and generation 1). `generateName` gets
    /// a random suffix.
    public func create(_ resource: ResourceType, namespace: String, object: JSONValue) throws -> JSONValue {
        var object = object
        var metadata = object["metadata"]?.objectValue ?? [:]
        if metadata["name"]?.stringValue?.isEmpty ?? true, let prefix = metadata["generateName"]?.stringValue {
            metadata["name"] = .string(prefix + Self.randomSuffix())
        }
        guard let name = metadata["name"]?.stringValue, !name.isEmpty else {
            throw APIStatusError.invalid(
                resource, "", field: "metadata.name", "Required value: name or generateName is required")
        }
        guard Self.isValidName(name) else {
            throw APIStatusError.invalid(
                resource, name, field: "metadata.name",
                "Invalid value: \"\(name)\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric "
                    + "characters, '-' or '.', and must start and end with an alphanumeric character")
        }
        let scopedNamespace = resource.namespaced ? namespace : ""
        if resource.namespaced { metadata["namespace"] = .string(namespace) } else { metadata["namespace"] = nil }
        metadata["uid"] = .string(UUID().uuidString.lowercased())
        metadata["creationTimestamp"] = .string(RFC3339.format(now()))
        metadata["generation"] = Self.tracksGeneration(resource) ? .int(1) : nil
        metadata["deletionTimestamp"] = nil
        object["metadata"] = .object(metadata)
        object["apiVersion"] = .string(resource.apiVersion)
        object["kind"] = .string(resource.kind)
        let key = Key(resource: resource, namespace: scopedNamespace, name: name)
        return try state.withLockedValue { state in
            if resource.namespaced, resource.plural != "namespaces",
                state.objects[Key(resource: Namespace.resource, namespace: "", name: namespace)] == nil
            {
                throw APIStatusError.notFound(Namespace.resource, namespace)
            }
            guard state.objects[key] == nil else { throw APIStatusError.alreadyExists(resource, name) }
            return Self.commit(&state, .added, key: key, object: object)
        }
    }

    /// Replaces an object. A `metadata.resourceVersion` in `object` must match the stored one (409 otherwise);
    /// without one, the write is unconditional (as a PUT without resourceVersion is). `change` may refine the
    /// stored result (keep status on a spec update, bump generation).
    public func update(
        _ resource: ResourceType, namespace: String, name: String, object: JSONValue,
        merge: @Sendable (_ old: JSONValue, _ new: JSONValue) throws -> JSONValue = { _, new in new }
    ) throws -> JSONValue {
        let key = Key(resource: resource, namespace: resource.namespaced ? namespace : "", name: name)
        return try state.withLockedValue { state in
            guard let old = state.objects[key] else { throw APIStatusError.notFound(resource, name) }
            if let expected = object["metadata"]?["resourceVersion"]?.stringValue, !expected.isEmpty,
                expected != old["metadata"]?["resourceVersion"]?.stringValue
            {
                throw APIStatusError.conflict(resource, name)
            }
            if let sentName = object["metadata"]?["name"]?.stringValue, sentName != name {
                throw APIStatusError.badRequest(
                    "the name of the object (\(sentName)) does not match the name on the URL (\(name))")
            }
            var new = try merge(old, object)
            // What the server owns stays the server's.
            for field in [
                "uid", "creationTimestamp", "namespace", "generation", "deletionTimestamp",
                "deletionGracePeriodSeconds",
            ] {
                new["metadata"]?[field] = old["metadata"]?[field]
            }
            new["metadata"]?["name"] = .string(name)
            new["apiVersion"] = .string(resource.apiVersion)
            new["kind"] = .string(resource.kind)
            if Self.tracksGeneration(resource), Self.specChanged(old, new) {
                new["metadata"]?["generation"] = .int((old["metadata"]?["generation"]?.intValue ?? 1) + 1)
            }
            var stripped = new
            stripped["metadata"]?["resourceVersion"] = old["metadata"]?["resourceVersion"]
            if stripped == old { return old }  // no change: no new version, no event
            return Self.commit(&state, .modified, key: key, object: new)
        }
    }

    /// Reads, changes and writes in one step (controllers and the kubelet use this; never conflicts).
    @discardableResult
    public func modify(
        _ resource: ResourceType, namespace: String, name: String, _ change: (inout JSONValue) throws -> Void
    ) throws -> JSONValue {
        let key = Key(resource: resource, namespace: resource.namespaced ? namespace : "", name: name)
        return try state.withLockedValue { state in
            guard var object = state.objects[key] else { throw APIStatusError.notFound(resource, name) }
            let old = object
            try change(&object)
            if object == old { return old }
            if Self.tracksGeneration(resource), Self.specChanged(old, object) {
                object["metadata"]?["generation"] = .int((old["metadata"]?["generation"]?.intValue ?? 1) + 1)
            }
            return Self.commit(&state, .modified, key: key, object: object)
        }
    }

    /// Removes an object and returns its last state (with a new resourceVersion, as the DELETED event has).
    @discardableResult
    public func delete(_ resource: ResourceType, namespace: String, name: String, precondition version: String? = nil)
        throws -> JSONValue
    {
        let key = Key(resource: resource, namespace: resource.namespaced ? namespace : "", name: name)
        return try state.withLockedValue { state in
            guard let old = state.objects[key] else { throw APIStatusError.notFound(resource, name) }
            if let version, version != old["metadata"]?["resourceVersion"]?.stringValue {
                throw APIStatusError.conflict(resource, name)
            }
            return Self.commit(&state, .deleted, key: key, object: old)
        }
    }

    /// Every object (of any kind) whose `ownerReferences` name `uid`.
    public func dependents(of uid: String) -> [(ResourceType, String, String)] {
        state.withLockedValue { state in
            state.objects.compactMap { key, object in
                let owners = object["metadata"]?["ownerReferences"]?.arrayValue ?? []
                return owners.contains { $0["uid"]?.stringValue == uid } ? (key.resource, key.namespace, key.name) : nil
            }
        }
    }

    /// Every object in a namespace (for deleting the namespace).
    public func contents(ofNamespace namespace: String) -> [(ResourceType, String)] {
        state.withLockedValue { state in
            state.objects.keys.filter { $0.resource.namespaced && $0.namespace == namespace }.map {
                ($0.resource, $0.name)
            }
        }
    }

    private static func commit(_ state: inout State, _ kind: StoredEvent.Kind, key: Key, object: JSONValue) -> JSONValue
    {
        state.revision += 1
        var stored = object
        stored["metadata"]?["resourceVersion"] = .string(String(state.revision))
        if kind == .deleted {
            state.objects[key] = nil
        } else {
            state.objects[key] = stored
        }
        let event = StoredEvent(
            kind: kind, resource: key.resource, namespace: key.namespace, object: stored, revision: state.revision)
        state.log.append(event)
        if state.log.count > eventLogCapacity {
            state.log.removeFirst(state.log.count - eventLogCapacity)
        }
        for watcher in state.watchers.values
        where watcher.selection.matches(resource: key.resource, namespace: key.namespace, object: stored) {
            watcher.continuation.yield(event)
        }
        return stored
    }

    static func specChanged(_ old: JSONValue, _ new: JSONValue) -> Bool {
        old["spec"] != new["spec"]
    }

    // MARK: - Watching

    /// Changes after `revision` (nil or 0: the current objects first, as ADDED events, then changes).
    /// Throws 410 Gone when `revision` is older than the log.
    public func watch(_ selection: Selection, after revision: Int64?) throws -> AsyncStream<StoredEvent> {
        let (stream, continuation) = AsyncStream<StoredEvent>.makeStream(bufferingPolicy: .unbounded)
        let id = UUID()
        try state.withLockedValue { state in
            if let revision, revision > 0 {
                let oldest = state.log.first.map { $0.revision - 1 } ?? state.revision
                guard revision >= oldest else {
                    throw APIStatusError.gone("too old resource version: \(revision) (\(oldest))")
                }
                for event in state.log
                where event.revision > revision
                    && selection.matches(resource: event.resource, namespace: event.namespace, object: event.object)
                {
                    continuation.yield(event)
                }
            } else {
                let current = state.objects.filter { key, object in
                    selection.matches(resource: key.resource, namespace: key.namespace, object: object)
                }.sorted { ($0.key.namespace, $0.key.name) < ($1.key.namespace, $1.key.name) }
                for (key, object) in current {
                    continuation.yield(
                        StoredEvent(
                            kind: .added, resource: key.resource, namespace: key.namespace, object: object,
                            revision: Int64(object["metadata"]?["resourceVersion"]?.stringValue ?? "") ?? 0))
                }
            }
            state.watchers[id] = Watcher(selection: selection, continuation: continuation)
        }
        continuation.onTermination = { [weak self] _ in
            self?.state.withLockedValue { _ = $0.watchers.removeValue(forKey: id) }
        }
        return stream
    }

    /// Ends every watch (the server is stopping, or a test wants to see clients re-watch).
    public func endWatches() {
        let watchers = state.withLockedValue { state in
            let all = Array(state.watchers.values)
            state.watchers = [:]
            return all
        }
        for watcher in watchers { watcher.continuation.finish() }
    }

    // MARK: - Names

    static func randomSuffix() -> String {
        let alphabet = Array("bcdfghjklmnpqrstvwxz2456789")
        return String((0..<5).map { _ in alphabet[Int.random(in: 0..<alphabet.count)] })
    }

    /// RFC 1123 subdomain: lower-case alphanumerics, '-' and '.', alphanumeric at both ends, at most 253.
    static func isValidName(_ name: String) -> Bool {
        guard !name.isEmpty, name.count <= 253, let first = name.first, let last = name.last else { return false }
        let allowed = name.allSatisfy { ($0.isASCII && ($0.isLowercase || $0.isNumber)) || $0 == "-" || $0 == "." }
        return allowed && (first.isLowercase || first.isNumber) && (last.isLowercase || last.isNumber)
    }
}
