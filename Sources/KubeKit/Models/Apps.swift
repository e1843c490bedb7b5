import Foundation

/// The pod template of a Deployment or ReplicaSet.
public struct PodTemplateSpec: Codable, Sendable, Hashable {
    public var metadata: ObjectMeta?
    public var spec: PodSpec?

    public init(metadata: ObjectMeta? = nil, spec: PodSpec? = nil) {
        self.metadata = metadata
        self.spec = spec
    }
}

/// apps/v1 Deployment.
public struct Deployment: KubeResource, Hashable {
    public static let resource = ResourceType(
        group: "apps", version: "v1", plural: "deployments", kind: "Deployment", namespaced: true)

    public struct Spec: Codable, Sendable, Hashable {
        public var replicas: Int?
        public var selector: LabelSelector
        public var template: PodTemplateSpec
        public var strategy: JSONValue?
        public var paused: Bool?

        public init(replicas: Int? = nil, selector: LabelSelector, template: PodTemplateSpec) {
            self.replicas = replicas
            self.selector = selector
            self.template = template
        }
    }

    public struct Status: Codable, Sendable, Hashable {
        public var observedGeneration: Int64?
        public var replicas: Int?
        public var updatedReplicas: Int?
        public var readyReplicas: Int?
        public var availableReplicas: Int?
        public var unavailableReplicas: Int?
        public var conditions: [Condition]?
    }

    public var metadata: ObjectMeta
    public var spec: Spec?
    public var status: Status?
    public var raw: JSONValue = .null

    enum CodingKeys: String, CodingKey { case metadata, spec, status }

    public init(metadata: ObjectMeta, spec: Spec? = nil) {
        self.metadata = metadata
        self.spec = spec
    }
}

/// apps/v1 ReplicaSet.
public struct ReplicaSet: KubeResource, Hashable {
    public static let resource = ResourceType(
        group: "apps", version: "v1", plural: "replicasets", kind: "ReplicaSet", namespaced: true)

    public struct Spec: Codable, Sendable, Hashable {
        public var replicas: Int?
        public var selector: LabelSelector
        public var template: PodTemplateSpec?
    }

    public struct Status: Codable, Sendable, Hashable {
        public var replicas: Int
        public var readyReplicas: Int?
        public var availableReplicas: Int?
        public var observedGeneration: Int64?
    }

    public var metadata: ObjectMeta
    public var spec: Spec?
    public var status: Status?
    public var raw: JSONValue = .null

    enum CodingKeys: String, CodingKey { case metadata, spec, status }
}

/// autoscaling/v1 Scale, the `scale` subresource of a Deployment.
public struct Scale: KubeResource, Hashable {
    public static let resource = ResourceType(
        group: "autoscaling", version: "v1", plural: "scale", kind: "Scale", namespaced: true)

    public struct Spec: Codable, Sendable, Hashable {
        public var replicas: Int?
    }
    public struct Status: Codable, Sendable, Hashable {
        public var replicas: Int
        /// A label selector in query form (`app=tomcat`).
        public var selector: String?
    }

    public var metadata: ObjectMeta
    public var spec: Spec?
    public var status: Status?
    public var raw: JSONValue = .null

    enum CodingKeys: String, CodingKey { case metadata, spec, status }
}
