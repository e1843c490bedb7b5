import Foundation

/// core/v1 Pod, with the spec and status fields ktctl creates, reads and waits on.
public struct Pod: KubeResource, Hashable {
    public static let resource = ResourceType(group: "", version: "v1", plural: "pods", kind: "Pod", namespaced: true)

    public var metadata: ObjectMeta
    public var spec: PodSpec?
    public var status: PodStatus?
    public var raw: JSONValue = .null

    enum CodingKeys: String, CodingKey { case metadata, spec, status }

    public init(metadata: ObjectMeta, spec: PodSpec? = nil) {
        self.metadata = metadata
        self.spec = spec
    }
}

public struct PodSpec: Codable, Sendable, Hashable {
    public var containers: [Container]
    public var initContainers: [Container]?
    public var volumes: [Volume]?
    public var restartPolicy: String?
    public var nodeName: String?
    public var nodeSelector: [String: String]?
    public var serviceAccountName: String?
    public var automountServiceAccountToken: Bool?
    public var hostNetwork: Bool?
    public var imagePullSecrets: [LocalObjectReference]?
    public var securityContext: PodSecurityContext?
    public var terminationGracePeriodSeconds: Int64?
    public var dnsPolicy: String?
    public var hostname: String?
    public var subdomain: String?

    public init(containers: [Container]) {
        self.containers = containers
    }
}

public struct LocalObjectReference: Codable, Sendable, Hashable {
    public var name: String
    public init(name: String) { self.name = name }
}

public struct PodSecurityContext: Codable, Sendable, Hashable {
    public var runAsUser: Int64?
    public var runAsGroup: Int64?
    public var runAsNonRoot: Bool?
    public var fsGroup: Int64?
    public init(runAsUser: Int64? = nil, runAsGroup: Int64? = nil, runAsNonRoot: Bool? = nil) {
        self.runAsUser = runAsUser
        self.runAsGroup = runAsGroup
        self.runAsNonRoot = runAsNonRoot
    }
}

public struct Container: Codable, Sendable, Hashable {
    public var name: String
    public var image: String?
    public var imagePullPolicy: String?
    public var command: [String]?
    public var args: [String]?
    public var workingDir: String?
    public var env: [EnvVar]?
    public var ports: [ContainerPort]?
    public var resources: ResourceRequirements?
    public var volumeMounts: [VolumeMount]?
    public var readinessProbe: Probe?
    public var securityContext: SecurityContext?

    public init(name: String, image: String? = nil) {
        self.name = name
        self.image = image
    }
}

public struct ContainerPort: Codable, Sendable, Hashable {
    public var name: String?
    public var containerPort: Int
    public var `protocol`: String?

    public init(name: String? = nil, containerPort: Int, protocol proto: String? = nil) {
        self.name = name
        self.containerPort = containerPort
        self.protocol = proto
    }
}

public struct EnvVar: Codable, Sendable, Hashable {
    public struct Source: Codable, Sendable, Hashable {
        public struct FieldRef: Codable, Sendable, Hashable {
            public var fieldPath: String
            public var apiVersion: String?
        }
        public struct KeyRef: Codable, Sendable, Hashable {
            public var name: String?
            public var key: String
            public var optional: Bool?
        }
        public var fieldRef: FieldRef?
        public var configMapKeyRef: KeyRef?
        public var secretKeyRef: KeyRef?
    }

    public var name: String
    public var value: String?
    public var valueFrom: Source?

    public init(name: String, value: String) {
        self.name = name
        self.value = value
    }
}

/// CPU and memory, as quantity strings (`100m`, `64Mi`).
public struct ResourceRequirements: Codable, Sendable, Hashable {
    public var requests: [String: String]?
    public var limits: [String: String]?
    public init(requests: [String: String]? = nil, limits: [String: String]? = nil) {
        self.requests = requests
        self.limits = limits
    }
}

public struct VolumeMount: Codable, Sendable, Hashable {
    public var name: String
    public var mountPath: String
    public var readOnly: Bool?
    public var subPath: String?
    public init(name: String, mountPath: String, readOnly: Bool? = nil) {
        self.name = name
        self.mountPath = mountPath
        self.readOnly = readOnly
    }
}

public struct Volume: Codable, Sendable, Hashable {
    public struct ConfigMapSource: Codable, Sendable, Hashable {
        public var name: String?
        public var optional: Bool?
    }
    public struct SecretSource: Codable, Sendable, Hashable {
        public var secretName: String?
        public var optional: Bool?
        public var defaultMode: Int?
    }
    public struct EmptyDirSource: Codable, Sendable, Hashable {
        public var medium: String?
    }
    public var name: String
    public var configMap: ConfigMapSource?
    public var secret: SecretSource?
    public var emptyDir: EmptyDirSource?

    public init(name: String, secretName: String, defaultMode: Int? = nil) {
        self.name = name
        self.secret = SecretSource(secretName: secretName, optional: nil, defaultMode: defaultMode)
    }
}

public struct Probe: Codable, Sendable, Hashable {
    public struct TCPSocket: Codable, Sendable, Hashable {
        public var port: IntOrString
    }
    public var tcpSocket: TCPSocket?
    public var initialDelaySeconds: Int?
    public var periodSeconds: Int?
    public init(tcpPort: Int, periodSeconds: Int? = nil) {
        self.tcpSocket = TCPSocket(port: .int(tcpPort))
        self.periodSeconds = periodSeconds
    }
}

public struct SecurityContext: Codable, Sendable, Hashable {
    public struct Capabilities: Codable, Sendable, Hashable {
        public var add: [String]?
        public var drop: [String]?
    }
    public var runAsUser: Int64?
    public var runAsNonRoot: Bool?
    public var privileged: Bool?
    public var allowPrivilegeEscalation: Bool?
    public var readOnlyRootFilesystem: Bool?
    public var capabilities: Capabilities?
    public init(runAsNonRoot: Bool? = nil, allowPrivilegeEscalation: Bool? = nil, dropAll: Bool = false) {
        self.runAsNonRoot = runAsNonRoot
        self.allowPrivilegeEscalation = allowPrivilegeEscalation
        if dropAll { self.capabilities = Capabilities(add: nil, drop: ["ALL"]) }
    }
}

public struct PodStatus: Codable, Sendable, Hashable {
    /// `Pending`, `Running`, `Succeeded`, `Failed`, `Unknown`.
    public var phase: String?
    public var conditions: [Condition]?
    public var message: String?
    public var reason: String?
    public var hostIP: String?
    public var podIP: String?
    public var podIPs: [PodIP]?
    public var startTime: String?
    public var containerStatuses: [ContainerStatus]?
    public var initContainerStatuses: [ContainerStatus]?

    public init(phase: String? = nil) { self.phase = phase }

    /// True when the `Ready` condition is `True`.
    public var isReady: Bool { conditions?.contains { $0.type == "Ready" && $0.status == "True" } ?? false }
}

public struct PodIP: Codable, Sendable, Hashable {
    public var ip: String
}

/// A status condition (pods, deployments, nodes, ...).
public struct Condition: Codable, Sendable, Hashable {
    public var type: String
    /// `True`, `False` or `Unknown`.
    public var status: String
    public var reason: String?
    public var message: String?
    public var lastTransitionTime: String?
    public var lastProbeTime: String?
    public var lastUpdateTime: String?

    public init(type: String, status: String, reason: String? = nil, message: String? = nil) {
        self.type = type
        self.status = status
        self.reason = reason
        self.message = message
    }
}

public struct ContainerStatus: Codable, Sendable, Hashable {
    public struct State: Codable, Sendable, Hashable {
        public struct Waiting: Codable, Sendable, Hashable {
            public var reason: String?
            public var message: String?
        }
        public struct Running: Codable, Sendable, Hashable {
            public var startedAt: String?
        }
        public struct Terminated: Codable, Sendable, Hashable {
            public var exitCode: Int
            public var reason: String?
            public var message: String?
            public var startedAt: String?
            public var finishedAt: String?
        }
        public var waiting: Waiting?
        public var running: Running?
        public var terminated: Terminated?
    }

    public var name: String
    public var ready: Bool
    public var restartCount: Int
    public var image: String
    public var imageID: String
    public var containerID: String?
    public var started: Bool?
    public var state: State?
    public var lastState: State?
}
