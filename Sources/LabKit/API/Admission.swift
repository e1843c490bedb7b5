import Foundation
import KubeKit
import NIOConcurrencyHelpers

/// What the API server fills in on create, as a real one's defaulting and allocation do: protocol TCP, pod phase
/// Pending, Service ClusterIPs from the service CIDR, Deployment replicas 1, and so on.
public final class Admission: Sendable {
    /// ClusterIPs in use, by address; the allocator never hands out the network, the broadcast address, `.1` (the
    /// `kubernetes` service) or the DNS address.
    private let allocated = NIOLockedValueBox<Set<UInt32>>([])
    public let serviceNetwork: UInt32
    public let servicePrefix: Int
    public let dnsAddress: String

    public init(serviceCIDR: String = "10.96.0.0/12", dnsAddress: String = "10.96.0.10") {
        let parts = serviceCIDR.split(separator: "/")
        serviceNetwork = Self.parse(String(parts.first ?? "10.96.0.0")) ?? 0x0A60_0000
        servicePrefix = parts.count > 1 ? Int(parts[1]) ?? 12 : 12
        self.dnsAddress = dnsAddress
    }

    static func parse(_ text: String) -> UInt32? {
        let octets = text.split(separator: ".").compactMap { UInt32($0) }
        guard octets.count == 4, octets.allSatisfy({ $0 < 256 }) else { return nil }
        return octets.reduce(0) { $0 << 8 | $1 }
    }

    static func format(_ address: UInt32) -> String {
        (0..<4).map { String(address >> (24 - 8 * $0) & 0xFF) }.joined(separator: ".")
    }

    func allocateClusterIP(requested: String?) throws -> String {
        let size = UInt32(1) << UInt32(32 - servicePrefix)
        return try allocated.withLockedValue { used in
            if let requested, let address = Self.parse(requested) {
                guard address & ~(size - 1) == serviceNetwork else {
                    throw APIStatusError(
                        code: 422, reason: "Invalid",
                        message:
                            "spec.clusterIPs: Invalid value: \"\(requested)\": the provided IP is not in the valid "
                            + "range. The range of valid IPs is \(Self.format(serviceNetwork))/\(servicePrefix)")
                }
                guard !used.contains(address) else {
                    throw APIStatusError(
                        code: 422, reason: "Invalid",
                        message: "spec.clusterIPs: Invalid value: \"\(requested)\": provided IP is already allocated")
                }
                used.insert(address)
                return requested
            }
            let reserved: Set<UInt32> = [serviceNetwork, serviceNetwork + 1, Self.parse(dnsAddress) ?? 0]
            for offset in UInt32(2)..<(size - 1) {
                let address = serviceNetwork + offset
                if !used.contains(address) && !reserved.contains(address) {
                    used.insert(address)
                    return Self.format(address)
                }
            }
            throw APIStatusError(code: 500, reason: "InternalError", message: "the service CIDR is full")
        }
    }

    func release(clusterIP: String?) {
        guard let clusterIP, let address = Self.parse(clusterIP) else { return }
        _ = allocated.withLockedValue { $0.remove(address) }
    }

    // MARK: - Create

    /// Defaults and allocations for a new object of `resource`.
    public func defaulted(_ resource: ResourceType, _ object: JSONValue) throws -> JSONValue {
        var object = object
        switch resource {
        case Pod.resource:
            object["spec"] = Self.defaultPodSpec(object["spec"] ?? [:])
            if object["status"]?.objectValue?.isEmpty ?? true {
                object["status"] = ["phase": "Pending", "qosClass": "BestEffort"]
            }
        case Service.resource:
            var spec = object["spec"] ?? [:]
            if spec["type"] == nil { spec["type"] = "ClusterIP" }
            if spec["sessionAffinity"] == nil { spec["sessionAffinity"] = "None" }
            if var ports = spec["ports"]?.arrayValue {
                for index in ports.indices {
                    if ports[index]["protocol"] == nil { ports[index]["protocol"] = "TCP" }
                    if ports[index]["targetPort"] == nil { ports[index]["targetPort"] = ports[index]["port"] }
                }
                spec["ports"] = .array(ports)
            }
            if spec["type"]?.stringValue != "ExternalName" {
                let requested = spec["clusterIP"]?.stringValue
                if requested == "None" {
                    spec["clusterIPs"] = ["None"]
                } else {
                    let address = try allocateClusterIP(requested: requested?.isEmpty == false ? requested : nil)
                    spec["clusterIP"] = .string(address)
                    spec["clusterIPs"] = [.string(address)]
                }
                spec["ipFamilies"] = ["IPv4"]
                spec["ipFamilyPolicy"] = "SingleStack"
                spec["internalTrafficPolicy"] = "Cluster"
            }
            object["spec"] = spec
            object["status"] = ["loadBalancer": [:]]
        case Deployment.resource, ReplicaSet.resource:
            var spec = object["spec"] ?? [:]
            if spec["replicas"] == nil { spec["replicas"] = 1 }
            if resource == Deployment.resource {
                if spec["strategy"] == nil {
                    spec["strategy"] = [
                        "type": "RollingUpdate", "rollingUpdate": ["maxUnavailable": "25%", "maxSurge": "25%"],
                    ]
                }
                if spec["revisionHistoryLimit"] == nil { spec["revisionHistoryLimit"] = 10 }
                if spec["progressDeadlineSeconds"] == nil { spec["progressDeadlineSeconds"] = 600 }
            }
            if var template = spec["template"] {
                template["spec"] = Self.defaultPodSpec(template["spec"] ?? [:])
                spec["template"] = template
            }
            object["spec"] = spec
            if object["status"] == nil || object["status"]?.objectValue?.isEmpty == true {
                object["status"] = ["replicas": 0]
            }
        case Namespace.resource:
            object["status"] = ["phase": "Active"]
            var metadata = object["metadata"] ?? [:]
            var labels = metadata["labels"]?.objectValue ?? [:]
            labels["kubernetes.io/metadata.name"] = metadata["name"]
            metadata["labels"] = .object(labels)
            object["metadata"] = metadata
        case Secret.resource:
            if object["type"] == nil { object["type"] = "Opaque" }
            // stringData is write-only: folded into data (base64).
            if let plain = object["stringData"]?.objectValue {
                var data = object["data"]?.objectValue ?? [:]
                for (key, value) in plain {
                    data[key] = .string(Data((value.stringValue ?? "").utf8).base64EncodedString())
                }
                object["data"] = .object(data)
                object["stringData"] = nil
            }
        default:
            break
        }
        return object
    }

    static func defaultPodSpec(_ spec: JSONValue) -> JSONValue {
        var spec = spec
        if spec["restartPolicy"] == nil { spec["restartPolicy"] = "Always" }
        if spec["terminationGracePeriodSeconds"] == nil { spec["terminationGracePeriodSeconds"] = 30 }
        if spec["dnsPolicy"] == nil { spec["dnsPolicy"] = "ClusterFirst" }
        if spec["schedulerName"] == nil { spec["schedulerName"] = "default-scheduler" }
        if spec["securityContext"] == nil { spec["securityContext"] = [:] }
        for field in ["containers", "initContainers"] {
            guard var containers = spec[field]?.arrayValue else { continue }
            for index in containers.indices {
                var container = containers[index]
                if container["imagePullPolicy"] == nil {
                    let image = container["image"]?.stringValue ?? ""
                    container["imagePullPolicy"] =
                        image.hasSuffix(":latest") || !image.contains(":") ? "Always" : "IfNotPresent"
                }
                if container["terminationMessagePath"] == nil {
                    container["terminationMessagePath"] = "/dev/termination-log"
                }
                if container["terminationMessagePolicy"] == nil { container["terminationMessagePolicy"] = "File" }
                if container["resources"] == nil { container["resources"] = [:] }
                if var ports = container["ports"]?.arrayValue {
                    for port in ports.indices where ports[port]["protocol"] == nil { ports[port]["protocol"] = "TCP" }
                    container["ports"] = .array(ports)
                }
                containers[index] = container
            }
            spec[field] = .array(containers)
        }
        return spec
    }

    /// Checks the fields without which an object cannot work (a container without an image, a Service port
    /// without a number).
    /// Fields an object of each kind may have at its top level (beyond apiVersion, kind and metadata).
    static let topLevelFields: [String: Set<String>] = [
        "ConfigMap": ["data", "binaryData", "immutable"],
        "Secret": ["data", "stringData", "type", "immutable"],
        "Endpoints": ["subsets"],
        "EndpointSlice": ["addressType", "endpoints", "ports"],
        "ServiceAccount": ["secrets", "imagePullSecrets", "automountServiceAccountToken"],
        "Role": ["rules"],
        "ClusterRole": ["rules", "aggregationRule"],
        "RoleBinding": ["subjects", "roleRef"],
        "ClusterRoleBinding": ["subjects", "roleRef"],
        "Event": [
            "involvedObject", "reason", "message", "source", "firstTimestamp", "lastTimestamp", "count", "type",
            "eventTime", "series", "action", "related", "reportingComponent", "reportingInstance",
        ],
    ]

    static let metadataFields: Set<String> = [
        "name", "generateName", "namespace", "selfLink", "uid", "resourceVersion", "generation", "creationTimestamp",
        "deletionTimestamp", "deletionGracePeriodSeconds", "labels", "annotations", "ownerReferences", "finalizers",
        "managedFields",
    ]

    /// `fieldValidation=Strict` (what kubectl sends by default): an unknown field at the top of the object or in
    /// its metadata is an error, worded as the API server words it, and nothing is stored.
    public func checkFields(_ resource: ResourceType, _ object: JSONValue, validation: String?) throws {
        guard validation == "Strict" else { return }
        let allowed =
            Self.topLevelFields[resource.kind] ?? ["spec", "status"]
        var unknown: [String] = []
        for key in (object.objectValue ?? [:]).keys.sorted()
        where !["apiVersion", "kind", "metadata"].contains(key) && !allowed.contains(key) {
            unknown.append(key)
        }
        for key in (object["metadata"]?.objectValue ?? [:]).keys.sorted() where !Self.metadataFields.contains(key) {
            unknown.append("metadata.\(key)")
        }
        guard !unknown.isEmpty else { return }
        let version = resource.apiVersion.split(separator: "/").last.map(String.init) ?? resource.apiVersion
        throw APIStatusError.badRequest(
            "\(resource.kind) in version \"\(version)\" cannot be handled as a \(resource.kind): strict decoding error: "
                + unknown.map { "unknown field \"\($0)\"" }.joined(separator: ", "))
    }

    public func validate(_ resource: ResourceType, _ object: JSONValue) throws {
        let name = object["metadata"]?["name"]?.stringValue ?? ""
        func containers(_ spec: JSONValue?, prefix: String) throws {
            let list = spec?["containers"]?.arrayValue ?? []
            guard !list.isEmpty else {
                throw APIStatusError.invalid(resource, name, field: "\(prefix).containers", "Required value")
            }
            for (index, container) in list.enumerated() {
                if container["name"]?.stringValue?.isEmpty ?? true {
                    throw APIStatusError.invalid(
                        resource, name, field: "\(prefix).containers[\(index)].name", "Required value")
                }
                if container["image"]?.stringValue?.isEmpty ?? true {
                    throw APIStatusError.invalid(
                        resource, name, field: "\(prefix).containers[\(index)].image", "Required value")
                }
            }
        }
        switch resource {
        case Pod.resource:
            try containers(object["spec"], prefix: "spec")
        case Deployment.resource, ReplicaSet.resource:
            try containers(object["spec"]?["template"]?["spec"], prefix: "spec.template.spec")
            let selector = (object["spec"]?["selector"]?["matchLabels"]?.objectValue ?? [:]).compactMapValues(
                \.stringValue)
            let labels = (object["spec"]?["template"]?["metadata"]?["labels"]?.objectValue ?? [:]).compactMapValues(
                \.stringValue)
            if selector.isEmpty || !selector.allSatisfy({ labels[$0.key] == $0.value }) {
                throw APIStatusError.invalid(
                    resource, name, field: "spec.template.metadata.labels",
                    "Invalid value: `selector` does not match template `labels`")
            }
        case Service.resource:
            for (index, port) in (object["spec"]?["ports"]?.arrayValue ?? []).enumerated()
            where port["port"]?.intValue == nil {
                throw APIStatusError.invalid(resource, name, field: "spec.ports[\(index)].port", "Required value")
            }
        case ResourceRegistry.role, ResourceRegistry.clusterRole:
            try Self.validateRules(resource, object, name: name)
        case ResourceRegistry.roleBinding, ResourceRegistry.clusterRoleBinding:
            try Self.validateBinding(resource, object, name: name)
        default:
            break
        }
    }
}

extension Admission {
    /// `rbac/validation`: every rule has verbs; a Role's rules name API groups and resources, and only a
    /// ClusterRole's may name non-resource URLs instead.
    static func validateRules(_ resource: ResourceType, _ object: JSONValue, name: String) throws {
        for (index, rule) in (object["rules"]?.arrayValue ?? []).enumerated() {
            let field = "rules[\(index)]"
            func count(_ member: String) -> Int { rule[member]?.arrayValue?.count ?? 0 }
            if count("verbs") == 0 {
                throw APIStatusError.invalid(
                    resource, name, field: "\(field).verbs", "Required value: verbs must contain at least one value")
            }
            if count("nonResourceURLs") > 0 {
                if resource == ResourceRegistry.role {
                    throw APIStatusError.invalid(
                        resource, name, field: "\(field).nonResourceURLs",
                        "Invalid value: namespaced rules cannot apply to non-resource URLs")
                }
                if count("apiGroups") > 0 || count("resources") > 0 {
                    throw APIStatusError.invalid(
                        resource, name, field: "\(field).nonResourceURLs",
                        "Invalid value: rules cannot apply to both regular resources and non-resource URLs")
                }
                continue
            }
            if count("apiGroups") == 0 {
                throw APIStatusError.invalid(
                    resource, name, field: "\(field).apiGroups",
                    "Required value: resource rules must supply at least one api group")
            }
            if count("resources") == 0 {
                throw APIStatusError.invalid(
                    resource, name, field: "\(field).resources",
                    "Required value: resource rules must supply at least one resource")
            }
        }
    }

    /// A binding names a role (a ClusterRole, or for a RoleBinding also a Role) and subjects of the three kinds.
    static func validateBinding(_ resource: ResourceType, _ object: JSONValue, name: String) throws {
        let kinds = resource == ResourceRegistry.roleBinding ? ["Role", "ClusterRole"] : ["ClusterRole"]
        let kind = object["roleRef"]?["kind"]?.stringValue ?? ""
        guard kinds.contains(kind) else {
            throw APIStatusError.invalid(
                resource, name, field: "roleRef.kind",
                "Unsupported value: \(quoted(kind)): supported values: "
                    + kinds.map(quoted).joined(separator: ", "))
        }
        if object["roleRef"]?["name"]?.stringValue?.isEmpty ?? true {
            throw APIStatusError.invalid(resource, name, field: "roleRef.name", "Required value")
        }
        for (index, subject) in (object["subjects"]?.arrayValue ?? []).enumerated() {
            let field = "subjects[\(index)]"
            let subjectKind = subject["kind"]?.stringValue ?? ""
            guard ["User", "Group", "ServiceAccount"].contains(subjectKind) else {
                throw APIStatusError.invalid(
                    resource, name, field: "\(field).kind",
                    "Unsupported value: \(quoted(subjectKind)): supported values: \"ServiceAccount\", \"User\", "
                        + "\"Group\"")
            }
            if subject["name"]?.stringValue?.isEmpty ?? true {
                throw APIStatusError.invalid(resource, name, field: "\(field).name", "Required value")
            }
            if subjectKind == "ServiceAccount", resource == ResourceRegistry.clusterRoleBinding,
                subject["namespace"]?.stringValue?.isEmpty ?? true
            {
                throw APIStatusError.invalid(resource, name, field: "\(field).namespace", "Required value")
            }
        }
    }
}
