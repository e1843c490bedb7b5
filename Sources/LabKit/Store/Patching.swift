import KubeKit

/// The three patch kinds the API server applies (apimachinery `pkg/types/patch.go`).
public enum Patching {
    /// RFC 7386 JSON merge patch: objects merge recursively, `null` removes, anything else replaces.
    public static func merge(_ patch: JSONValue, into target: JSONValue) -> JSONValue {
        guard case .object(let changes) = patch else { return patch }
        var result = target.objectValue ?? [:]
        for (key, value) in changes {
            if value == .null {
                result[key] = nil
            } else {
                result[key] = merge(value, into: result[key] ?? .null)
            }
        }
        return .object(result)
    }

    // MARK: - RFC 6902

    /// Applies JSON patch operations in order; any failure leaves the object unchanged (the caller keeps the old
    /// document) and says which operation failed.
    public static func json(_ operations: JSONValue, into target: JSONValue) throws -> JSONValue {
        guard let list = operations.arrayValue else {
            throw APIStatusError.badRequest("a JSON patch must be a list of operations")
        }
        var document = target
        for (index, operation) in list.enumerated() {
            guard let op = operation["op"]?.stringValue, let path = operation["path"]?.stringValue else {
                throw APIStatusError.badRequest("JSON patch operation \(index) has no op or path")
            }
            let pointer = try Self.pointer(path)
            switch op {
            case "add":
                guard let value = operation["value"] else { throw missingValue(index) }
                document = try set(document, pointer[...], value, inserting: true)
            case "replace":
                guard let value = operation["value"] else { throw missingValue(index) }
                _ = try get(document, pointer[...], index: index)
                document = try set(document, pointer[...], value, inserting: false)
            case "remove":
                _ = try get(document, pointer[...], index: index)
                document = try remove(document, pointer[...])
            case "test":
                guard try get(document, pointer[...], index: index) == operation["value"] else {
                    throw APIStatusError(
                        code: 422, reason: "Invalid", message: "the test operation \(index) on \(path) failed")
                }
            case "move", "copy":
                guard let fromText = operation["from"]?.stringValue else {
                    throw APIStatusError.badRequest("JSON patch operation \(index) (\(op)) has no from")
                }
                let from = try Self.pointer(fromText)
                let value = try get(document, from[...], index: index)
                if op == "move" { document = try remove(document, from[...]) }
                document = try set(document, pointer[...], value, inserting: true)
            default:
                throw APIStatusError.badRequest("JSON patch operation \(index) has the unknown op \"\(op)\"")
            }
        }
        return document
    }

    static func missingValue(_ index: Int) -> APIStatusError {
        APIStatusError.badRequest("JSON patch operation \(index) has no value")
    }

    /// RFC 6901: `/a/b~1c/0` → ["a", "b/c", "0"].
    static func pointer(_ text: String) throws -> [String] {
        if text.isEmpty { return [] }
        guard text.hasPrefix("/") else { throw APIStatusError.badRequest("JSON pointer \"\(text)\" must start with /") }
        return text.dropFirst().split(separator: "/", omittingEmptySubsequences: false).map {
            $0.replacingOccurrences(of: "~1", with: "/").replacingOccurrences(of: "~0", with: "~")
        }
    }

    static func get(_ document: JSONValue, _ path: ArraySlice<String>, index: Int) throws -> JSONValue {
        guard let key = path.first else { return document }
        switch document {
        case .object(let members):
            guard let child = members[key] else {
                throw APIStatusError(
                    code: 422, reason: "Invalid", message: "operation \(index): path /\(key) does not exist")
            }
            return try get(child, path.dropFirst(), index: index)
        case .array(let elements):
            guard let position = Int(key), elements.indices.contains(position) else {
                throw APIStatusError(code: 422, reason: "Invalid", message: "operation \(index): no element \(key)")
            }
            return try get(elements[position], path.dropFirst(), index: index)
        default:
            throw APIStatusError(
                code: 422, reason: "Invalid", message: "operation \(index): \(key) is not in a container")
        }
    }

    static func set(_ document: JSONValue, _ path: ArraySlice<String>, _ value: JSONValue, inserting: Bool) throws
        -> JSONValue
    {
        guard let key = path.first else { return value }
        let rest = path.dropFirst()
        switch document {
        case .object(var members):
            if rest.isEmpty {
                members[key] = value
            } else {
                guard let child = members[key] else {
                    throw APIStatusError(code: 422, reason: "Invalid", message: "path element \(key) does not exist")
                }
                members[key] = try set(child, rest, value, inserting: inserting)
            }
            return .object(members)
        case .array(var elements):
            let position = key == "-" ? elements.count : Int(key) ?? -1
            if rest.isEmpty {
                if inserting {
                    guard (0...elements.count).contains(position) else {
                        throw APIStatusError(code: 422, reason: "Invalid", message: "index \(key) is out of range")
                    }
                    elements.insert(value, at: position)
                } else {
                    guard elements.indices.contains(position) else {
                        throw APIStatusError(code: 422, reason: "Invalid", message: "index \(key) is out of range")
                    }
                    elements[position] = value
                }
            } else {
                guard elements.indices.contains(position) else {
                    throw APIStatusError(code: 422, reason: "Invalid", message: "index \(key) is out of range")
                }
                elements[position] = try set(elements[position], rest, value, inserting: inserting)
            }
            return .array(elements)
        default:
            throw APIStatusError(code: 422, reason: "Invalid", message: "\(key) is not in a container")
        }
    }

    static func remove(_ document: JSONValue, _ path: ArraySlice<String>) throws -> JSONValue {
        guard let key = path.first else { return .null }
        let rest = path.dropFirst()
        switch document {
        case .object(var members):
            if rest.isEmpty {
                members[key] = nil
            } else if let child = members[key] {
                members[key] = try remove(child, rest)
            }
            return .object(members)
        case .array(var elements):
            guard let position = Int(key), elements.indices.contains(position) else {
                throw APIStatusError(code: 422, reason: "Invalid", message: "index \(key) is out of range")
            }
            if rest.isEmpty {
                elements.remove(at: position)
            } else {
                elements[position] = try remove(elements[position], rest)
            }
            return .array(elements)
        default:
            throw APIStatusError(code: 422, reason: "Invalid", message: "\(key) is not in a container")
        }
    }

    // MARK: - Strategic merge

    /// The merge key of each list that merges element by element (`patchMergeKey` in k8s.io/api), by the list's
    /// field name; every other list is replaced whole.
    static let mergeKeys: [String: String] = [
        "containers": "name", "initContainers": "name", "ephemeralContainers": "name", "env": "name",
        "volumeMounts": "mountPath", "volumes": "name", "imagePullSecrets": "name", "hostAliases": "ip",
        "conditions": "type", "ownerReferences": "uid", "volumeDevices": "devicePath",
        "topologySpreadConstraints": "topologyKey", "tolerations": "key",
    ]

    /// Lists of primitives that merge as sets.
    static let mergedPrimitiveLists: Set<String> = ["finalizers"]

    /// Kubernetes strategic merge patch for the lists kubectl and ktctl patch (`kubectl patch` without `--type`).
    /// `path` tells `ports` of a container (merge key `containerPort`) from `ports` of a Service (`port`).
    public static func strategic(_ patch: JSONValue, into target: JSONValue, path: [String] = []) throws -> JSONValue {
        guard case .object(var changes) = patch else { return patch }
        if changes["$patch"]?.stringValue == "replace" {
            changes["$patch"] = nil
            return .object(changes)
        }
        if changes["$patch"]?.stringValue == "delete" { return .null }
        var result = target.objectValue ?? [:]
        for (key, value) in changes {
            if key.hasPrefix("$setElementOrder/") || key == "$retainKeys" || key == "$patch" { continue }
            if key.hasPrefix("$deleteFromPrimitiveList/") {
                let field = String(key.dropFirst("$deleteFromPrimitiveList/".count))
                let removing = Set(value.arrayValue ?? [])
                result[field] = result[field]?.arrayValue.map { .array($0.filter { !removing.contains($0) }) }
                continue
            }
            if value == .null {
                result[key] = nil
                continue
            }
            let childPath = path + [key]
            switch value {
            case .object:
                result[key] = try strategic(value, into: result[key] ?? .null, path: childPath)
            case .array(let elements):
                if let mergeKey = mergeKey(for: key, path: path) {
                    result[key] = try mergeList(
                        elements, into: result[key]?.arrayValue ?? [], key: mergeKey, path: childPath)
                } else if mergedPrimitiveLists.contains(key) {
                    var merged = result[key]?.arrayValue ?? []
                    for element in elements where !merged.contains(element) { merged.append(element) }
                    result[key] = .array(merged)
                } else {
                    result[key] = .array(elements.filter { $0["$patch"] == nil })
                }
            default:
                result[key] = value
            }
        }
        return .object(result)
    }

    static func mergeKey(for field: String, path: [String]) -> String? {
        if field == "ports" {
            // Container ports merge by containerPort; a Service's by port.
            return path.last == "spec" && !path.contains("template") && !path.contains("containers")
                ? "port" : "containerPort"
        }
        return mergeKeys[field]
    }

    static func mergeList(_ patch: [JSONValue], into target: [JSONValue], key: String, path: [String]) throws
        -> JSONValue
    {
        if patch.contains(where: { $0["$patch"]?.stringValue == "replace" }) {
            return .array(patch.filter { $0["$patch"] == nil })
        }
        var result = target
        for element in patch {
            guard let identity = element[key] else {
                throw APIStatusError.badRequest("map: \(element.jsonText) does not contain declared merge key: \(key)")
            }
            let position = result.firstIndex { $0[key] == identity }
            if element["$patch"]?.stringValue == "delete" {
                if let position { result.remove(at: position) }
                continue
            }
            if let position {
                result[position] = try strategic(element, into: result[position], path: path)
            } else {
                result.append(try strategic(element, into: .object([:]), path: path))
            }
        }
        return .array(result)
    }
}
