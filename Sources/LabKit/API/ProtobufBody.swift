import Foundation
import KubeKit

/// Decodes the Kubernetes protobuf encoding that kubectl 1.33's typed clients send (`kubectl create deployment`,
/// `create configmap`, ...): the `k8s\0` envelope around `runtime.Unknown`, then the object by the field numbers
/// of `k8s.io/api`'s generated.proto, into the JSON the server works with. Only the fields those commands set
/// are known; every other field is skipped by its wire type (so nothing is misread), and a body that cannot be
/// read is a 400 that says so.
enum ProtobufBody {
    /// How one field reads.
    indirect enum Kind: Sendable {
        case string
        case bytes  // JSON: base64
        case int  // varint
        case bool
        case message(Schema)
        case stringMap
        case bytesMap  // map<string, bytes> → base64 values
        case quantityMap  // map<string, Quantity{1: string}>
        case intOrString
        case time  // {1: seconds, 2: nanos} → RFC 3339
    }

    struct Field: Sendable {
        var name: String
        var kind: Kind
        var repeated = false
        /// A Go pointer: kept even when zero (`replicas: 0`).
        var pointer = false
    }

    typealias Schema = [Int: Field]

    // MARK: - Schemas (field numbers from k8s.io/api and apimachinery generated.proto)

    static let objectMeta: Schema = [
        1: Field(name: "name", kind: .string), 2: Field(name: "generateName", kind: .string),
        3: Field(name: "namespace", kind: .string), 5: Field(name: "uid", kind: .string),
        6: Field(name: "resourceVersion", kind: .string), 7: Field(name: "generation", kind: .int),
        11: Field(name: "labels", kind: .stringMap), 12: Field(name: "annotations", kind: .stringMap),
        14: Field(name: "finalizers", kind: .string, repeated: true),
    ]
    static let labelSelector: Schema = [
        1: Field(name: "matchLabels", kind: .stringMap),
        2: Field(
            name: "matchExpressions",
            kind: .message([
                1: Field(name: "key", kind: .string), 2: Field(name: "operator", kind: .string),
                3: Field(name: "values", kind: .string, repeated: true),
            ]), repeated: true),
    ]
    static let containerPort: Schema = [
        1: Field(name: "name", kind: .string), 2: Field(name: "hostPort", kind: .int),
        3: Field(name: "containerPort", kind: .int), 4: Field(name: "protocol", kind: .string),
        5: Field(name: "hostIP", kind: .string),
    ]
    static let container: Schema = [
        1: Field(name: "name", kind: .string), 2: Field(name: "image", kind: .string),
        3: Field(name: "command", kind: .string, repeated: true), 4: Field(name: "args", kind: .string, repeated: true),
        5: Field(name: "workingDir", kind: .string),
        6: Field(name: "ports", kind: .message(containerPort), repeated: true),
        7: Field(
            name: "env",
            kind: .message([1: Field(name: "name", kind: .string), 2: Field(name: "value", kind: .string)]),
            repeated: true),
        8: Field(
            name: "resources",
            kind: .message([
                1: Field(name: "limits", kind: .quantityMap), 2: Field(name: "requests", kind: .quantityMap),
            ])),
        13: Field(name: "terminationMessagePath", kind: .string), 14: Field(name: "imagePullPolicy", kind: .string),
        16: Field(name: "stdin", kind: .bool), 18: Field(name: "tty", kind: .bool),
        20: Field(name: "terminationMessagePolicy", kind: .string),
    ]
    static let podSpec: Schema = [
        2: Field(name: "containers", kind: .message(container), repeated: true),
        3: Field(name: "restartPolicy", kind: .string),
        4: Field(name: "terminationGracePeriodSeconds", kind: .int, pointer: true),
        6: Field(name: "dnsPolicy", kind: .string), 7: Field(name: "nodeSelector", kind: .stringMap),
        8: Field(name: "serviceAccountName", kind: .string), 10: Field(name: "nodeName", kind: .string),
        11: Field(name: "hostNetwork", kind: .bool),
        15: Field(name: "imagePullSecrets", kind: .message([1: Field(name: "name", kind: .string)]), repeated: true),
        20: Field(name: "initContainers", kind: .message(container), repeated: true),
    ]
    static let podTemplateSpec: Schema = [
        1: Field(name: "metadata", kind: .message(objectMeta)), 2: Field(name: "spec", kind: .message(podSpec)),
    ]
    static let deployment: Schema = [
        1: Field(name: "metadata", kind: .message(objectMeta)),
        2: Field(
            name: "spec",
            kind: .message([
                1: Field(name: "replicas", kind: .int, pointer: true),
                2: Field(name: "selector", kind: .message(labelSelector)),
                3: Field(name: "template", kind: .message(podTemplateSpec)),
                4: Field(
                    name: "strategy",
                    kind: .message([
                        1: Field(name: "type", kind: .string),
                        2: Field(
                            name: "rollingUpdate",
                            kind: .message([
                                1: Field(name: "maxUnavailable", kind: .intOrString),
                                2: Field(name: "maxSurge", kind: .intOrString),
                            ])),
                    ])),
                5: Field(name: "minReadySeconds", kind: .int),
                6: Field(name: "revisionHistoryLimit", kind: .int, pointer: true),
                7: Field(name: "paused", kind: .bool),
                9: Field(name: "progressDeadlineSeconds", kind: .int, pointer: true),
            ])),
    ]
    static let servicePort: Schema = [
        1: Field(name: "name", kind: .string), 2: Field(name: "protocol", kind: .string),
        3: Field(name: "port", kind: .int), 4: Field(name: "targetPort", kind: .intOrString),
        5: Field(name: "nodePort", kind: .int),
    ]
    // k8s.io/api/rbac/v1 and authorization/v1, authentication/v1 (`kubectl create role`, `create rolebinding`,
    // `auth can-i`, `auth whoami`).
    static let policyRule: Schema = [
        1: Field(name: "verbs", kind: .string, repeated: true),
        2: Field(name: "apiGroups", kind: .string, repeated: true),
        3: Field(name: "resources", kind: .string, repeated: true),
        4: Field(name: "resourceNames", kind: .string, repeated: true),
        5: Field(name: "nonResourceURLs", kind: .string, repeated: true),
    ]
    static let binding: Schema = [
        1: Field(name: "metadata", kind: .message(objectMeta)),
        2: Field(
            name: "subjects",
            kind: .message([
                1: Field(name: "kind", kind: .string), 2: Field(name: "apiGroup", kind: .string),
                3: Field(name: "name", kind: .string), 4: Field(name: "namespace", kind: .string),
            ]), repeated: true),
        3: Field(
            name: "roleRef",
            kind: .message([
                1: Field(name: "apiGroup", kind: .string), 2: Field(name: "kind", kind: .string),
                3: Field(name: "name", kind: .string),
            ])),
    ]
    static let resourceAttributes: Schema = [
        1: Field(name: "namespace", kind: .string), 2: Field(name: "verb", kind: .string),
        3: Field(name: "group", kind: .string), 4: Field(name: "version", kind: .string),
        5: Field(name: "resource", kind: .string), 6: Field(name: "subresource", kind: .string),
        7: Field(name: "name", kind: .string),
    ]
    static let rbacSchemas: [String: Schema] = [
        "rbac.authorization.k8s.io/v1/Role": [
            1: Field(name: "metadata", kind: .message(objectMeta)),
            2: Field(name: "rules", kind: .message(policyRule), repeated: true),
        ],
        "rbac.authorization.k8s.io/v1/ClusterRole": [
            1: Field(name: "metadata", kind: .message(objectMeta)),
            2: Field(name: "rules", kind: .message(policyRule), repeated: true),
            3: Field(
                name: "aggregationRule",
                kind: .message([1: Field(name: "clusterRoleSelectors", kind: .message(labelSelector), repeated: true)])
            ),
        ],
        "rbac.authorization.k8s.io/v1/RoleBinding": binding,
        "rbac.authorization.k8s.io/v1/ClusterRoleBinding": binding,
        "authorization.k8s.io/v1/SelfSubjectAccessReview": [
            1: Field(name: "metadata", kind: .message(objectMeta)),
            2: Field(
                name: "spec",
                kind: .message([
                    1: Field(name: "resourceAttributes", kind: .message(resourceAttributes)),
                    2: Field(
                        name: "nonResourceAttributes",
                        kind: .message([1: Field(name: "path", kind: .string), 2: Field(name: "verb", kind: .string)])),
                ])),
        ],
        "authorization.k8s.io/v1/SelfSubjectRulesReview": [
            1: Field(name: "metadata", kind: .message(objectMeta)),
            2: Field(name: "spec", kind: .message([1: Field(name: "namespace", kind: .string)])),
        ],
        "authentication.k8s.io/v1/SelfSubjectReview": [1: Field(name: "metadata", kind: .message(objectMeta))],
    ]
    static let schemas: [String: Schema] = rbacSchemas.merging(coreSchemas) { first, _ in first }
    static let coreSchemas: [String: Schema] = [
        "apps/v1/Deployment": deployment,
        "v1/ConfigMap": [
            1: Field(name: "metadata", kind: .message(objectMeta)), 2: Field(name: "data", kind: .stringMap),
            3: Field(name: "binaryData", kind: .bytesMap), 4: Field(name: "immutable", kind: .bool, pointer: true),
        ],
        "v1/Secret": [
            1: Field(name: "metadata", kind: .message(objectMeta)), 2: Field(name: "data", kind: .bytesMap),
            3: Field(name: "type", kind: .string), 4: Field(name: "stringData", kind: .stringMap),
        ],
        "v1/Namespace": [1: Field(name: "metadata", kind: .message(objectMeta))],
        "v1/ServiceAccount": [1: Field(name: "metadata", kind: .message(objectMeta))],
        "v1/Service": [
            1: Field(name: "metadata", kind: .message(objectMeta)),
            2: Field(
                name: "spec",
                kind: .message([
                    1: Field(name: "ports", kind: .message(servicePort), repeated: true),
                    2: Field(name: "selector", kind: .stringMap), 3: Field(name: "clusterIP", kind: .string),
                    4: Field(name: "type", kind: .string), 10: Field(name: "externalName", kind: .string),
                ])),
        ],
        "v1/Pod": [
            1: Field(name: "metadata", kind: .message(objectMeta)), 2: Field(name: "spec", kind: .message(podSpec)),
        ],
    ]

    struct Malformed: Error {
        var problem: String
    }

    /// The object in a `application/vnd.kubernetes.protobuf` body, as JSON (with apiVersion and kind).
    static func decode(_ body: [UInt8]) throws -> JSONValue {
        guard body.count >= 4, Array(body.prefix(4)) == [0x6B, 0x38, 0x73, 0x00] else {
            throw APIStatusError.badRequest("the protobuf body does not start with the k8s\\0 envelope")
        }
        do {
            var reader = Reader(bytes: body[4...])
            var apiVersion = ""
            var kind = ""
            var raw: ArraySlice<UInt8> = []
            while let (field, wire) = try reader.key() {
                switch (field, wire) {
                case (1, 2):
                    var typeMeta = Reader(bytes: try reader.lengthDelimited())
                    while let (inner, innerWire) = try typeMeta.key() {
                        if inner == 1, innerWire == 2 {
                            apiVersion = try typeMeta.string()
                        } else if inner == 2, innerWire == 2 {
                            kind = try typeMeta.string()
                        } else {
                            try typeMeta.skip(innerWire)
                        }
                    }
                case (2, 2): raw = try reader.lengthDelimited()
                default: try reader.skip(wire)
                }
            }
            guard let schema = schemas["\(apiVersion)/\(kind)"] else {
                throw APIStatusError(
                    code: 415, reason: "UnsupportedMediaType",
                    message:
                        "ktlab reads protobuf bodies of \(schemas.keys.sorted().joined(separator: ", ")), not \(apiVersion) \(kind); send JSON"
                )
            }
            var object = try message(raw, schema)
            object["apiVersion"] = .string(apiVersion)
            object["kind"] = .string(kind)
            return object
        } catch let error as Malformed {
            throw APIStatusError.badRequest("the protobuf body cannot be read: \(error.problem)")
        }
    }

    static func message(_ bytes: ArraySlice<UInt8>, _ schema: Schema) throws -> JSONValue {
        var reader = Reader(bytes: bytes)
        var members: [String: JSONValue] = [:]
        while let (number, wire) = try reader.key() {
            guard let field = schema[number] else {
                try reader.skip(wire)
                continue
            }
            let value: JSONValue?
            switch (field.kind, wire) {
            case (.string, 2):
                let text = try reader.string()
                value = text.isEmpty && !field.repeated ? nil : .string(text)
            case (.bytes, 2):
                value = .string(Data(try reader.lengthDelimited()).base64EncodedString())
            case (.int, 0):
                let number = Int64(bitPattern: try reader.varint())
                value = number == 0 && !field.pointer ? nil : .int(number)
            case (.bool, 0):
                let flag = try reader.varint() != 0
                value = !flag && !field.pointer ? nil : .bool(flag)
            case (.message(let inner), 2):
                let decoded = try message(try reader.lengthDelimited(), inner)
                value = decoded.objectValue?.isEmpty == true && !field.repeated ? nil : decoded
            case (.stringMap, 2), (.bytesMap, 2), (.quantityMap, 2):
                var entry = Reader(bytes: try reader.lengthDelimited())
                var key = ""
                var item: JSONValue = .string("")
                while let (entryField, entryWire) = try entry.key() {
                    switch (entryField, entryWire) {
                    case (1, 2): key = try entry.string()
                    case (2, 2):
                        switch field.kind {
                        case .bytesMap: item = .string(Data(try entry.lengthDelimited()).base64EncodedString())
                        case .quantityMap:
                            var quantity = Reader(bytes: try entry.lengthDelimited())
                            while let (q, qWire) = try quantity.key() {
                                if q == 1, qWire == 2 {
                                    item = .string(try quantity.string())
                                } else {
                                    try quantity.skip(qWire)
                                }
                            }
                        default: item = .string(try entry.string())
                        }
                    default: try entry.skip(entryWire)
                    }
                }
                var map = members[field.name]?.objectValue ?? [:]
                map[key] = item
                members[field.name] = .object(map)
                continue
            case (.intOrString, 2):
                var inner = Reader(bytes: try reader.lengthDelimited())
                var type: UInt64 = 0
                var intValue: Int64 = 0
                var stringValue = ""
                while let (f, w) = try inner.key() {
                    switch (f, w) {
                    case (1, 0): type = try inner.varint()
                    case (2, 0): intValue = Int64(Int32(truncatingIfNeeded: try inner.varint()))
                    case (3, 2): stringValue = try inner.string()
                    default: try inner.skip(w)
                    }
                }
                value = type == 1 ? .string(stringValue) : .int(intValue)
            case (.time, 2):
                var inner = Reader(bytes: try reader.lengthDelimited())
                var seconds: Int64 = 0
                while let (f, w) = try inner.key() {
                    if f == 1, w == 0 { seconds = Int64(bitPattern: try inner.varint()) } else { try inner.skip(w) }
                }
                value = seconds == 0 ? nil : .string(RFC3339.format(Date(timeIntervalSince1970: TimeInterval(seconds))))
            default:
                throw Malformed(problem: "field \(field.name) (\(number)) has wire type \(wire)")
            }
            guard let value else { continue }
            if field.repeated {
                members[field.name] = .array((members[field.name]?.arrayValue ?? []) + [value])
            } else {
                members[field.name] = value
            }
        }
        return .object(members)
    }

    /// Protobuf wire format: varints, tags, length-delimited slices; every read checks what is left.
    struct Reader {
        var bytes: ArraySlice<UInt8>

        mutating func varint() throws -> UInt64 {
            var result: UInt64 = 0
            var shift: UInt64 = 0
            while let byte = bytes.popFirst() {
                guard shift < 64 else { throw Malformed(problem: "a varint longer than 10 bytes") }
                result |= UInt64(byte & 0x7F) << shift
                if byte & 0x80 == 0 { return result }
                shift += 7
            }
            throw Malformed(problem: "the body ends inside a varint")
        }

        /// The next field number and wire type, or nil at the end.
        mutating func key() throws -> (Int, UInt64)? {
            guard !bytes.isEmpty else { return nil }
            let key = try varint()
            let field = key >> 3
            guard field > 0, field < 1 << 29 else { throw Malformed(problem: "field number \(field)") }
            return (Int(field), key & 7)
        }

        mutating func lengthDelimited() throws -> ArraySlice<UInt8> {
            let length = try varint()
            guard length <= UInt64(bytes.count) else { throw Malformed(problem: "a length of \(length) past the end") }
            let slice = bytes.prefix(Int(length))
            bytes = bytes.dropFirst(Int(length))
            return slice
        }

        mutating func string() throws -> String {
            String(decoding: try lengthDelimited(), as: UTF8.self)
        }

        mutating func skip(_ wire: UInt64) throws {
            switch wire {
            case 0: _ = try varint()
            case 1:
                guard bytes.count >= 8 else { throw Malformed(problem: "a fixed64 past the end") }
                bytes = bytes.dropFirst(8)
            case 2: _ = try lengthDelimited()
            case 5:
                guard bytes.count >= 4 else { throw Malformed(problem: "a fixed32 past the end") }
                bytes = bytes.dropFirst(4)
            default: throw Malformed(problem: "wire type \(wire)")
            }
        }
    }
}
