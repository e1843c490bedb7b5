import Foundation
import KubeKit

/// Who a session is: the names and labels of what it creates in the cluster.
public struct SessionIdentity: Sendable, Hashable {
    /// Five lower-case letters, as kt-connect's `kt-connect-shadow-<rand5>`.
    public var id: String
    public var user: String
    public var host: String
    public var pid: Int32

    public init(id: String, user: String, host: String, pid: Int32) {
        self.id = id
        self.user = user
        self.host = host
        self.pid = pid
    }

    public static func fresh() -> SessionIdentity {
        let letters = Array("abcdefghijklmnopqrstuvwxyz")
        let id = String((0..<5).map { _ in letters.randomElement()! })
        let environment = ProcessInfo.processInfo.environment
        let user = environment["SUDO_USER"] ?? environment["USER"] ?? "unknown"
        return SessionIdentity(id: id, user: user, host: ProcessInfo.processInfo.hostName, pid: getpid())
    }
}

/// Labels and annotations every object a ktctl session creates carries (DESIGN.md §5 and §11).
public enum SessionLabels {
    public static let managedBy = "app.kubernetes.io/managed-by"
    /// The value of `managedBy` on everything ktctl makes.
    public static let manager = "ktctl"
    public static let role = "ktctl.io/role"
    public static let session = "ktctl.io/session"
    public static let heartbeat = "ktctl.io/heartbeat"
    public static let user = "ktctl.io/user"
    public static let host = "ktctl.io/host"
}

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

/// The Secret and the shadow Pod of a connect session, as documents (no I/O: tested as values).
public enum ShadowPlan {
    /// The port kt-shadow listens on in the pod.
    public static let sshPort = 2222
    public static let container = "shadow"

    public static func podName(_ session: SessionIdentity) -> String { "kt-connect-shadow-\(session.id)" }
    public static func secretName(_ session: SessionIdentity) -> String { "kt-connect-\(session.id)" }

    public static func labels(_ session: SessionIdentity, role: String, extra: [String: String]) -> JSONValue {
        var labels: [String: JSONValue] = extra.mapValues { .string($0) }
        labels[SessionLabels.managedBy] = .string(SessionLabels.manager)
        labels[SessionLabels.role] = .string(role)
        labels[SessionLabels.session] = .string(session.id)
        return .object(labels)
    }

    public static func annotations(_ session: SessionIdentity, extra: [String: String], now: Date) -> JSONValue {
        var annotations: [String: JSONValue] = extra.mapValues { .string($0) }
        annotations[SessionLabels.heartbeat] = .string(RFC3339.format(now))
        annotations[SessionLabels.user] = .string(session.user)
        annotations[SessionLabels.host] = .string(session.host)
        return .object(annotations)
    }

    public static func secret(_ options: ClusterOptions, session: SessionIdentity, authorizedKey: String, now: Date)
        -> JSONValue
    {
        [
            "apiVersion": "v1", "kind": "Secret",
            "metadata": [
                "name": .string(secretName(session)),
                "labels": labels(session, role: "connect", extra: options.labels),
                "annotations": annotations(session, extra: [:], now: now),
            ],
            "type": "Opaque",
            "stringData": ["authorized_keys": .string(authorizedKey)],
        ]
    }

    public static func pod(_ options: ClusterOptions, session: SessionIdentity, now: Date) -> JSONValue {
        var resources: JSONValue = ["requests": ["cpu": "50m", "memory": "32Mi"]]
        if options.quota.cpu != nil || options.quota.memory != nil {
            var quantities: [String: JSONValue] = [:]
            if let cpu = options.quota.cpu { quantities["cpu"] = .string(cpu) }
            if let memory = options.quota.memory { quantities["memory"] = .string(memory) }
            resources = ["requests": .object(quantities), "limits": .object(quantities)]
        }
        let container: JSONValue = [
            "name": .string(container), "image": .string(options.image), "imagePullPolicy": "IfNotPresent",
            "args": ["--listen", .string("0.0.0.0:\(sshPort)")],
            "env": [
                [
                    "name": "KT_AUTHORIZED_KEYS",
                    "valueFrom": ["secretKeyRef": ["name": .string(secretName(session)), "key": "authorized_keys"]],
                ]
            ],
            "ports": [["name": "ssh", "containerPort": .int(Int64(sshPort)), "protocol": "TCP"]],
            "readinessProbe": [
                "tcpSocket": ["port": .int(Int64(sshPort))], "periodSeconds": 2, "initialDelaySeconds": 0,
            ],
            "resources": resources,
            "securityContext": [
                "allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true,
                "capabilities": ["drop": ["ALL"]],
            ],
        ]
        var spec: JSONValue = [
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
        if let account = options.serviceAccount { spec["serviceAccountName"] = .string(account) }
        if !options.nodeSelector.isEmpty {
            spec["nodeSelector"] = .object(options.nodeSelector.mapValues { .string($0) })
        }
        if let pullSecret = options.imagePullSecret { spec["imagePullSecrets"] = [["name": .string(pullSecret)]] }
        return [
            "apiVersion": "v1", "kind": "Pod",
            "metadata": [
                "name": .string(podName(session)),
                "labels": labels(session, role: "connect", extra: options.labels),
                "annotations": annotations(session, extra: options.annotations, now: now),
            ],
            "spec": spec,
        ]
    }
}
