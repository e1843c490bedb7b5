import Foundation
import KubeKit

/// Resource quantities for the shadow pod from `--pod-quota`: `cpu=100m,memory=64Mi`, or kt-connect's `0.5c,512m`
/// (`c` cores; `k`/`m`/`g` KiB/MiB/GiB of memory). Requests and limits are set alike.
public struct PodQuota: Sendable, Hashable {
    public var cpu: String?
    public var memory: String?

    public init(cpu: String? = nil, memory: String? = nil) {
        self.cpu = cpu
        self.memory = memory
    }

    public static func parse(_ text: String) throws -> PodQuota {
        var quota = PodQuota()
        for part in text.split(separator: ",").map({ $0.trimmingCharacters(in: .whitespaces) }) where !part.isEmpty {
            if let equals = part.firstIndex(of: "=") {
                let key = part[..<equals].lowercased()
                let value = String(part[part.index(after: equals)...])
                guard Self.isQuantity(value) else {
                    throw ConnectError.badFlag("--pod-quota", "'\(value)' is not a quantity")
                }
                switch key {
                case "cpu": quota.cpu = value
                case "memory", "mem": quota.memory = value
                default: throw ConnectError.badFlag("--pod-quota", "'\(key)' is neither cpu nor memory")
                }
            } else if part.hasSuffix("c"), Double(part.dropLast()) != nil {
                quota.cpu = String(part.dropLast())
            } else if let unit = part.last.map(String.init)?.lowercased(), ["k", "m", "g"].contains(unit),
                Double(part.dropLast()) != nil
            {
                quota.memory = String(part.dropLast()) + ["k": "Ki", "m": "Mi", "g": "Gi"][unit]!
            } else {
                throw ConnectError.badFlag(
                    "--pod-quota", "'\(part)' is not cpu=Q, memory=Q, <cores>c or <n>k/m/g (e.g. cpu=100m,memory=64Mi)")
            }
        }
        return quota
    }

    static func isQuantity(_ text: String) -> Bool {
        text.range(of: #"^[0-9]+(\.[0-9]+)?(m|k|M|G|T|Ki|Mi|Gi|Ti)?$"#, options: .regularExpression) != nil
    }
}

/// `k=v,k2=v2` (labels, annotations, node selectors).
public func parsePairs(_ text: String, flag: String) throws -> [String: String] {
    var pairs: [String: String] = [:]
    for part in text.split(separator: ",") where !part.trimmingCharacters(in: .whitespaces).isEmpty {
        guard let equals = part.firstIndex(of: "="), equals != part.startIndex else {
            throw ConnectError.badFlag(flag, "'\(part)' is not key=value")
        }
        pairs[String(part[..<equals]).trimmingCharacters(in: .whitespaces)] = String(part[part.index(after: equals)...])
            .trimmingCharacters(in: .whitespaces)
    }
    return pairs
}

/// What a shadow is for, and so its name, labels and listeners. One plan for every command: connect's shadow dials
/// into the cluster; exchange's, mesh's and preview's also listen on the service's ports for reverse forwards.
public struct ShadowSpec: Sendable, Hashable {
    public enum Role: String, Sendable, Hashable {
        case connect, exchange, mesh, preview
    }

    /// A port the shadow listens on in the pod for a reverse forward (declared as a container port).
    public struct Port: Sendable, Hashable {
        public var name: String?
        public var port: Int
        public var `protocol`: String

        public init(name: String? = nil, port: Int, protocol proto: String = "TCP") {
            self.name = name
            self.port = port
            self.protocol = proto
        }
    }

    public var role: Role
    /// The pod's name; the Secret is named the same (kt-connect named its ConfigMap after the pod).
    public var podName: String
    /// Labels beyond the session's (an exchanged workload's selector, say).
    public var labels: [String: String]
    /// Annotations beyond the user's (`--with-annotation`): kt-connect's `kt-config` (`service=<svc>`), which its
    /// users' dashboards read.
    public var annotations: [String: String]
    public var ports: [Port]

    public init(
        role: Role, podName: String, labels: [String: String] = [:], annotations: [String: String] = [:],
        ports: [Port] = []
    ) {
        self.role = role
        self.podName = podName
        self.labels = labels
        self.annotations = annotations
        self.ports = ports
    }

    /// `kt-connect-shadow-<id>`, as kt-connect names it.
    public static func connect(_ session: SessionIdentity) -> ShadowSpec {
        ShadowSpec(role: .connect, podName: "kt-connect-shadow-\(session.id)")
    }

    public var secretName: String { podName }
}

/// The Secret and the shadow Pod of a session, as objects (no I/O: tested as values). The session adds its own
/// labels, owner annotations and the owner reference to its Lease when it creates them.
public enum ShadowPlan {
    /// The port kt-shadow listens on, on the pod's loopback only: port-forward reaches it there (a kubelet dials
    /// localhost in the pod's network namespace) and nothing else in the cluster can.
    public static let sshPort = 2222
    public static let container = "shadow"
    /// The Secret's keys.
    public static let authorizedKeysKey = "authorized_keys"
    public static let hostKeyKey = "host_key"

    /// The Secret: the session key's public half (who may log in) and the host key's seed (who the shadow is, so
    /// ktctl pins it before the pod exists and no log line can claim another key).
    public static func secret(_ spec: ShadowSpec, options: ClusterOptions, authorizedKey: String, hostKeySeed: String)
        -> Secret
    {
        Secret(
            metadata: ObjectMeta(name: spec.secretName, labels: options.labels),
            type: "Opaque",
            stringData: [authorizedKeysKey: authorizedKey, hostKeyKey: hostKeySeed])
    }

    public static func pod(_ spec: ShadowSpec, options: ClusterOptions) throws -> Pod {
        var resources: JSONValue = ["requests": ["cpu": "50m", "memory": "32Mi"]]
        if options.quota.cpu != nil || options.quota.memory != nil {
            var quantities: [String: JSONValue] = [:]
            if let cpu = options.quota.cpu { quantities["cpu"] = .string(cpu) }
            if let memory = options.quota.memory { quantities["memory"] = .string(memory) }
            resources = ["requests": .object(quantities), "limits": .object(quantities)]
        }
        func fromSecret(_ name: String, _ key: String) -> JSONValue {
            [
                "name": .string(name),
                "valueFrom": ["secretKeyRef": ["name": .string(spec.secretName), "key": .string(key)]],
            ]
        }
        var container: JSONValue = [
            "name": .string(container), "image": .string(options.image),
            "imagePullPolicy": .string(options.imagePullPolicy),
            "args": ["--listen", .string("127.0.0.1:\(sshPort)")],
            "env": [fromSecret("KT_AUTHORIZED_KEYS", authorizedKeysKey), fromSecret("KT_HOST_KEY", hostKeyKey)],
            "resources": resources,
            "securityContext": [
                "allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true,
                "capabilities": ["drop": ["ALL"]],
            ],
        ]
        // `ktctl --debug` makes the shadow log its dials and channels too (`kubectl logs` shows them).
        if options.debug { container["args"] = ["--listen", .string("127.0.0.1:\(sshPort)"), "--debug"] }
        // No readiness probe: the SSH port is on loopback, where a kubelet's probe cannot reach; ktctl's first
        // port-forward waits for it instead. Reverse-forward listeners are declared so that Services can name them.
        if !spec.ports.isEmpty {
            container["ports"] = .array(
                spec.ports.map { port in
                    var entry: JSONValue = [
                        "containerPort": .int(Int64(port.port)), "protocol": .string(port.protocol),
                    ]
                    if let name = port.name { entry["name"] = .string(name) }
                    return entry
                })
        }
        var podSpec: JSONValue = [
            "containers": [container],
            "restartPolicy": "Always",
            "terminationGracePeriodSeconds": 5,
            "automountServiceAccountToken": false,
            "securityContext": [
                "runAsNonRoot": true, "runAsUser": 65532, "runAsGroup": 65532,
                "seccompProfile": ["type": "RuntimeDefault"],
                // Unprivileged ping sockets for the shadow's group: ICMP echo through the tunnel.
                "sysctls": [["name": "net.ipv4.ping_group_range", "value": "65532 65532"]],
            ],
        ]
        if let account = options.serviceAccount { podSpec["serviceAccountName"] = .string(account) }
        if !options.nodeSelector.isEmpty {
            podSpec["nodeSelector"] = .object(options.nodeSelector.mapValues { .string($0) })
        }
        if let pullSecret = options.imagePullSecret { podSpec["imagePullSecrets"] = [["name": .string(pullSecret)]] }
        var labels: [String: JSONValue] = options.labels.mapValues { .string($0) }
        for (key, value) in spec.labels { labels[key] = .string(value) }
        var annotations: [String: JSONValue] = options.annotations.mapValues { .string($0) }
        for (key, value) in spec.annotations { annotations[key] = .string(value) }
        let document: JSONValue = [
            "apiVersion": "v1", "kind": "Pod",
            "metadata": [
                "name": .string(spec.podName),
                "labels": .object(labels),
                "annotations": .object(annotations),
            ],
            "spec": podSpec,
        ]
        return try Pod.decoding(document)
    }
}
