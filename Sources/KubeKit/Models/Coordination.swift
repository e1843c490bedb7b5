import Foundation

/// coordination.k8s.io/v1 Lease: a holder's claim, renewed while it lives. ktctl keeps one per session; every object
/// of the session names it as owner, so that deleting the Lease lets garbage collection take the rest.
public struct Lease: KubeResource, Hashable {
    public static let resource = ResourceType(
        group: "coordination.k8s.io", version: "v1", plural: "leases", kind: "Lease", namespaced: true)

    public struct Spec: Codable, Sendable, Hashable {
        public var holderIdentity: String?
        public var leaseDurationSeconds: Int?
        /// MicroTime (`2026-12-04T19:36:05.123456Z`).
        public var acquireTime: String?
        /// MicroTime; ktctl writes it in the API server's clock (`ServerClock`), never the laptop's.
        public var renewTime: String?
        public var leaseTransitions: Int?

        public init(
            holderIdentity: String? = nil, leaseDurationSeconds: Int? = nil, acquireTime: String? = nil,
            renewTime: String? = nil
        ) {
            self.holderIdentity = holderIdentity
            self.leaseDurationSeconds = leaseDurationSeconds
            self.acquireTime = acquireTime
            self.renewTime = renewTime
        }
    }

    public var metadata: ObjectMeta
    public var spec: Spec?
    public var raw: JSONValue = .null

    enum CodingKeys: String, CodingKey { case metadata, spec }

    public init(metadata: ObjectMeta, spec: Spec? = nil) {
        self.metadata = metadata
        self.spec = spec
    }
}

/// authorization.k8s.io/v1 SelfSubjectAccessReview: "may I do this?", answered by the API server for the caller.
public struct SelfSubjectAccessReview: KubeResource, Hashable {
    public static let resource = ResourceType(
        group: "authorization.k8s.io", version: "v1", plural: "selfsubjectaccessreviews",
        kind: "SelfSubjectAccessReview", namespaced: false)

    public struct ResourceAttributes: Codable, Sendable, Hashable {
        public var namespace: String?
        public var verb: String?
        public var group: String?
        public var version: String?
        public var resource: String?
        public var subresource: String?
        public var name: String?

        public init(
            verb: String, group: String = "", resource: String, subresource: String? = nil, namespace: String? = nil,
            name: String? = nil
        ) {
            self.verb = verb
            self.group = group
            self.resource = resource
            self.subresource = subresource
            self.namespace = namespace
            self.name = name
        }
    }

    public struct Spec: Codable, Sendable, Hashable {
        public var resourceAttributes: ResourceAttributes?
        public init(resourceAttributes: ResourceAttributes? = nil) { self.resourceAttributes = resourceAttributes }
    }

    public struct Status: Codable, Sendable, Hashable {
        public var allowed: Bool
        public var denied: Bool?
        public var reason: String?
        public var evaluationError: String?
    }

    public var metadata: ObjectMeta = ObjectMeta()
    public var spec: Spec
    public var status: Status?
    public var raw: JSONValue = .null

    enum CodingKeys: String, CodingKey { case metadata, spec, status }

    public init(_ attributes: ResourceAttributes) {
        self.spec = Spec(resourceAttributes: attributes)
    }
}
