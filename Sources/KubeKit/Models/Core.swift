import Foundation

/// core/v1 Service.
public struct Service: KubeResource, Hashable {
    public static let resource = ResourceType(
        group: "", version: "v1", plural: "services", kind: "Service", namespaced: true)

    public struct Spec: Codable, Sendable, Hashable {
        public var type: String?
        public var selector: [String: String]?
        public var ports: [ServicePort]?
        public var clusterIP: String?
        public var clusterIPs: [String]?
        public var ipFamilies: [String]?
        public var externalName: String?
        public var sessionAffinity: String?
        public init(selector: [String: String]? = nil, ports: [ServicePort]? = nil) {
            self.selector = selector
            self.ports = ports
        }
    }

    public var metadata: ObjectMeta
    public var spec: Spec?
    public var status: JSONValue?
    public var raw: JSONValue = .null

    enum CodingKeys: String, CodingKey { case metadata, spec, status }

    public init(metadata: ObjectMeta, spec: Spec? = nil) {
        self.metadata = metadata
        self.spec = spec
    }

    /// True for `clusterIP: None`.
    public var isHeadless: Bool { spec?.clusterIP == "None" }
}

public struct ServicePort: Codable, Sendable, Hashable {
    public var name: String?
    public var `protocol`: String?
    public var port: Int
    public var targetPort: IntOrString?
    public var nodePort: Int?
    public var appProtocol: String?

    public init(name: String? = nil, port: Int, targetPort: IntOrString? = nil, protocol proto: String? = nil) {
        self.name = name
        self.port = port
        self.targetPort = targetPort
        self.protocol = proto
    }
}

/// core/v1 Endpoints.
public struct Endpoints: KubeResource, Hashable {
    public static let resource = ResourceType(
        group: "", version: "v1", plural: "endpoints", kind: "Endpoints", namespaced: true)

    public struct Subset: Codable, Sendable, Hashable {
        public struct Address: Codable, Sendable, Hashable {
            public var ip: String
            public var hostname: String?
            public var nodeName: String?
            public var targetRef: ObjectReference?
        }
        public struct Port: Codable, Sendable, Hashable {
            public var name: String?
            public var port: Int
            public var `protocol`: String?
        }
        public var addresses: [Address]?
        public var notReadyAddresses: [Address]?
        public var ports: [Port]?
    }

    public var metadata: ObjectMeta
    public var subsets: [Subset]?
    public var raw: JSONValue = .null

    enum CodingKeys: String, CodingKey { case metadata, subsets }
}

public struct ObjectReference: Codable, Sendable, Hashable {
    public var kind: String?
    public var namespace: String?
    public var name: String?
    public var uid: String?
    public var apiVersion: String?
    public var resourceVersion: String?
    public var fieldPath: String?
}

/// discovery.k8s.io/v1 EndpointSlice.
public struct EndpointSlice: KubeResource, Hashable {
    public static let resource = ResourceType(
        group: "discovery.k8s.io", version: "v1", plural: "endpointslices", kind: "EndpointSlice", namespaced: true)

    public struct Endpoint: Codable, Sendable, Hashable {
        public struct Conditions: Codable, Sendable, Hashable {
            public var ready: Bool?
            public var serving: Bool?
            public var terminating: Bool?
        }
        public var addresses: [String]
        public var conditions: Conditions?
        public var hostname: String?
        public var nodeName: String?
        public var targetRef: ObjectReference?
    }
    public struct Port: Codable, Sendable, Hashable {
        public var name: String?
        public var port: Int?
        public var `protocol`: String?
        public var appProtocol: String?
    }

    public var metadata: ObjectMeta
    public var addressType: String
    public var endpoints: [Endpoint]?
    public var ports: [Port]?
    public var raw: JSONValue = .null

    enum CodingKeys: String, CodingKey { case metadata, addressType, endpoints, ports }
}

/// core/v1 ConfigMap.
public struct ConfigMap: KubeResource, Hashable {
    public static let resource = ResourceType(
        group: "", version: "v1", plural: "configmaps", kind: "ConfigMap", namespaced: true)

    public var metadata: ObjectMeta
    public var data: [String: String]?
    public var binaryData: [String: String]?
    public var raw: JSONValue = .null

    enum CodingKeys: String, CodingKey { case metadata, data, binaryData }

    public init(metadata: ObjectMeta, data: [String: String]? = nil) {
        self.metadata = metadata
        self.data = data
    }
}

/// core/v1 Secret. `data` values are base64 on the wire; `stringData` is write-only plain text.
public struct Secret: KubeResource, Hashable {
    public static let resource = ResourceType(
        group: "", version: "v1", plural: "secrets", kind: "Secret", namespaced: true)

    public var metadata: ObjectMeta
    public var type: String?
    public var data: [String: String]?
    public var stringData: [String: String]?
    public var raw: JSONValue = .null

    enum CodingKeys: String, CodingKey { case metadata, type, data, stringData }

    public init(metadata: ObjectMeta, type: String? = nil, stringData: [String: String]? = nil) {
        self.metadata = metadata
        self.type = type
        self.stringData = stringData
    }

    /// The decoded value of `data[key]`, or nil when absent or not base64.
    public func value(_ key: String) -> Data? {
        data?[key].flatMap { Data(base64Encoded: $0) }
    }
}

/// core/v1 Namespace.
public struct Namespace: KubeResource, Hashable {
    public static let resource = ResourceType(
        group: "", version: "v1", plural: "namespaces", kind: "Namespace", namespaced: false)

    public struct Status: Codable, Sendable, Hashable {
        public var phase: String?
    }

    public var metadata: ObjectMeta
    public var status: Status?
    public var raw: JSONValue = .null

    enum CodingKeys: String, CodingKey { case metadata, status }

    public init(metadata: ObjectMeta) { self.metadata = metadata }
}

/// core/v1 Node: ktctl reads its pod CIDRs and addresses.
public struct Node: KubeResource, Hashable {
    public static let resource = ResourceType(
        group: "", version: "v1", plural: "nodes", kind: "Node", namespaced: false)

    public struct Spec: Codable, Sendable, Hashable {
        public var podCIDR: String?
        public var podCIDRs: [String]?
        public var unschedulable: Bool?
    }
    public struct Status: Codable, Sendable, Hashable {
        public struct Address: Codable, Sendable, Hashable {
            public var type: String
            public var address: String
        }
        public var addresses: [Address]?
        public var conditions: [Condition]?
    }

    public var metadata: ObjectMeta
    public var spec: Spec?
    public var status: Status?
    public var raw: JSONValue = .null

    enum CodingKeys: String, CodingKey { case metadata, spec, status }
}

/// core/v1 Event: what ktctl reports when a pod cannot be scheduled or its image cannot be pulled.
public struct Event: KubeResource, Hashable {
    public static let resource = ResourceType(
        group: "", version: "v1", plural: "events", kind: "Event", namespaced: true)

    public var metadata: ObjectMeta
    public var involvedObject: ObjectReference?
    public var reason: String?
    public var message: String?
    public var type: String?
    public var count: Int?
    public var firstTimestamp: String?
    public var lastTimestamp: String?
    public var raw: JSONValue = .null

    enum CodingKeys: String, CodingKey {
        case metadata, involvedObject, reason, message, type, count, firstTimestamp, lastTimestamp
    }
}

/// networking.k8s.io/v1 ServiceCIDR (Kubernetes 1.33+): the ranges ClusterIPs come from.
public struct ServiceCIDR: KubeResource, Hashable {
    public static let resource = ResourceType(
        group: "networking.k8s.io", version: "v1", plural: "servicecidrs", kind: "ServiceCIDR", namespaced: false)

    public struct Spec: Codable, Sendable, Hashable {
        public var cidrs: [String]?
    }

    public var metadata: ObjectMeta
    public var spec: Spec?
    public var status: JSONValue?
    public var raw: JSONValue = .null

    enum CodingKeys: String, CodingKey { case metadata, spec, status }
}
