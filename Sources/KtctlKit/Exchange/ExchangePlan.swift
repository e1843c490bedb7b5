import Foundation
import KubeKit

/// A port a command brings from the cluster to this machine: `--expose local[:remote]`.
public struct ExposedPort: Sendable, Hashable, CustomStringConvertible {
    /// The port on this machine's 127.0.0.1.
    public var local: Int
    /// A port of the Service, by number or by name; nil: the same number as `local`.
    public var remote: String?

    public init(local: Int, remote: String? = nil) {
        self.local = local
        self.remote = remote
    }

    public var description: String { remote.map { "\(local):\($0)" } ?? "\(local)" }

    /// `8080`, `8080:80`, `8080:http`, comma-separated.
    public static func parseList(_ text: String, flag: String = "--expose") throws -> [ExposedPort] {
        let parts = text.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
        guard !parts.isEmpty else { throw PlanError.badFlag(flag, "names no port (e.g. --expose 8080 or 8080:80)") }
        return try parts.map { part in
            let pieces = part.split(separator: ":", omittingEmptySubsequences: false).map(String.init)
            guard pieces.count <= 2, let local = Int(pieces[0]), (1...65535).contains(local) else {
                throw PlanError.badFlag(flag, "'\(part)' is not local[:remote] with a local port 1-65535")
            }
            guard pieces.count == 2 else { return ExposedPort(local: local) }
            let remote = pieces[1]
            guard !remote.isEmpty,
                Int(remote).map({ (1...65535).contains($0) })
                    ?? remote.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "-" })
            else { throw PlanError.badFlag(flag, "'\(remote)' in '\(part)' is neither a port nor a port's name") }
            return ExposedPort(local: local, remote: remote)
        }
    }
}

/// What went wrong while planning, in words that say what to do; nothing has been changed yet.
public enum PlanError: Error, CustomStringConvertible, Sendable, Equatable {
    case badFlag(String, String)
    case notFound(String)
    case ambiguous(String)

    public var description: String {
        switch self {
        case .badFlag(let flag, let why): return "\(flag): \(why); nothing was changed"
        case .notFound(let why): return "\(why); nothing was changed"
        case .ambiguous(let why): return "\(why); nothing was changed"
        }
    }
}

/// What a command names in the cluster: `tomcat`, `svc/tomcat`, `service/tomcat`, `deploy/tomcat`,
/// `deployment/tomcat`, `pod/tomcat-1`.
public enum WorkloadTarget: Sendable, Hashable, CustomStringConvertible {
    case service(String)
    case deployment(String)
    case pod(String)

    public static func parse(_ text: String, allowPods: Bool = false) throws -> WorkloadTarget {
        let parts = text.split(separator: "/", maxSplits: 1).map(String.init)
        let (kind, name) = parts.count == 2 ? (parts[0].lowercased(), parts[1]) : ("svc", parts.first ?? "")
        guard Self.isName(name) else {
            throw PlanError.badFlag("target", "'\(text)' does not name an object (svc/NAME, deploy/NAME or NAME)")
        }
        switch kind {
        case "svc", "service", "services": return .service(name)
        case "deploy", "deployment", "deployments": return .deployment(name)
        case "po", "pod", "pods":
            // (A `where` after the list would guard only its last pattern.)
            guard allowPods else {
                throw PlanError.badFlag("target", "this command does not take pods (svc/NAME, deploy/NAME)")
            }
            return .pod(name)
        default:
            throw PlanError.badFlag(
                "target",
                "'\(kind)' is not a kind this command takes (svc/NAME, deploy/NAME\(allowPods ? ", pod/NAME" : ""))")
        }
    }

    /// A DNS-1123 name as Kubernetes takes it.
    static func isName(_ text: String) -> Bool {
        !text.isEmpty && text.count <= 253
            && text.range(of: #"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"#, options: .regularExpression) != nil
    }

    public var description: String {
        switch self {
        case .service(let name): return "service/\(name)"
        case .deployment(let name): return "deployment/\(name)"
        case .pod(let name): return "pod/\(name)"
        }
    }
}

/// One Service port brought to this machine.
public struct PortMapping: Sendable, Hashable, CustomStringConvertible {
    /// The Service's port (what cluster clients dial).
    public var servicePort: Int
    public var name: String?
    /// The port the Service sends to on its pods: the shadow listens there.
    public var targetPort: Int
    /// The target port's name, when the Service names it (the shadow then declares it under that name).
    public var targetName: String?
    public var local: Int
    public var `protocol`: String

    public var description: String { "\(servicePort)/\(self.protocol) → 127.0.0.1:\(local)" }
}

/// The pure part of exchange and preview: which Service, which ports, which workload. Tested as values.
public enum ExchangePlan {
    /// The Service a target names: itself, or the one Service that selects the deployment's pods.
    public static func service(
        for target: WorkloadTarget, services: [Service], deployments: [Deployment]
    ) throws -> Service {
        switch target {
        case .service(let name):
            guard let service = services.first(where: { $0.name == name }) else {
                throw PlanError.notFound(
                    "there is no service \(name) in this namespace (services: "
                        + "\(services.map(\.name).sorted().joined(separator: ", ")))")
            }
            return service
        case .deployment(let name):
            guard let deployment = deployments.first(where: { $0.name == name }) else {
                throw PlanError.notFound("there is no deployment \(name) in this namespace")
            }
            let labels = deployment.spec?.template.metadata?.labels ?? [:]
            let selecting = services.filter { service in
                guard let selector = service.spec?.selector, !selector.isEmpty else { return false }
                return selector.allSatisfy { labels[$0.key] == $0.value }
            }
            guard selecting.count == 1, let service = selecting.first else {
                throw selecting.isEmpty
                    ? PlanError.notFound("no service selects the pods of deployment \(name); expose it first")
                    : PlanError.ambiguous(
                        "services \(selecting.map(\.name).sorted().joined(separator: ", ")) all select deployment "
                            + "\(name); name one with svc/NAME")
            }
            return service
        case .pod(let name):
            throw PlanError.badFlag("target", "pod/\(name): this command takes a service or a deployment")
        }
    }

    /// The Deployment whose pods `service` selects (scale mode acts on it).
    public static func workload(of service: Service, deployments: [Deployment]) throws -> Deployment {
        let selector = service.spec?.selector ?? [:]
        let matching = deployments.filter { deployment in
            let labels = deployment.spec?.template.metadata?.labels ?? [:]
            return !selector.isEmpty && selector.allSatisfy { labels[$0.key] == $0.value }
        }
        guard matching.count == 1, let deployment = matching.first else {
            throw matching.isEmpty
                ? PlanError.notFound(
                    "no deployment's pods are selected by service \(service.name) (scale mode needs one)")
                : PlanError.ambiguous(
                    "deployments \(matching.map(\.name).sorted().joined(separator: ", ")) are all selected by service "
                        + "\(service.name); scale mode needs exactly one (or use --mode selector)")
        }
        return deployment
    }

    /// The ports: each `--expose` matched to a port of the Service (by number or name; a bare local port names the
    /// Service port of that number, or the only port there is), its target port resolved (a named target port
    /// through the container ports of the Service's pods).
    public static func ports(_ expose: [ExposedPort], of service: Service, pods: [Pod]) throws -> [PortMapping] {
        let available = service.spec?.ports ?? []
        let listing =
            available.map { port in
                (port.name.map { "\($0) " } ?? "") + "\(port.port)/\(port.protocol ?? "TCP")"
            }.joined(separator: ", ")
        return try expose.flatMap { exposed in
            // A port number names every protocol the Service serves on it (DNS: 53/TCP and 53/UDP).
            let matches: [ServicePort]
            if let remote = exposed.remote {
                // A Service port by number or name; kt-connect's form, a target port number, is taken too.
                let direct = available.filter { Int(remote) == $0.port || $0.name == remote }
                matches =
                    direct.isEmpty
                    ? available.filter { port in Int(remote).map { port.targetPort == .int($0) } ?? false } : direct
            } else {
                let direct = available.filter { $0.port == exposed.local }
                matches = direct.isEmpty && available.count == 1 ? available : direct
            }
            guard !matches.isEmpty else {
                throw PlanError.badFlag(
                    "--expose",
                    "service \(service.name) has no port \(exposed.remote ?? String(exposed.local)) (its ports: "
                        + "\(listing.isEmpty ? "none" : listing))")
            }
            return try matches.map { try mapping(exposed, to: $0, of: service, pods: pods) }
        }
    }

    static func mapping(_ exposed: ExposedPort, to port: ServicePort, of service: Service, pods: [Pod]) throws
        -> PortMapping
    {
        guard ["TCP", "UDP"].contains(port.protocol ?? "TCP") else {
            throw PlanError.badFlag(
                "--expose",
                "service \(service.name)'s port \(port.port) is \(port.protocol ?? "?"); only TCP and UDP are carried")
        }
        let target: Int
        var targetName: String?
        switch port.targetPort {
        case nil: target = port.port
        case .int(let number)?: target = number
        case .string(let name)?:
            targetName = name
            let declared = pods.flatMap { $0.spec?.containers ?? [] }.flatMap { $0.ports ?? [] }
            guard let found = declared.first(where: { $0.name == name }) else {
                throw PlanError.notFound(
                    "service \(service.name)'s port \(port.port) sends to the port named '\(name)', and no pod it "
                        + "selects declares that name")
            }
            target = found.containerPort
        }
        return PortMapping(
            servicePort: port.port, name: port.name, targetPort: target, targetName: targetName,
            local: exposed.local, protocol: port.protocol ?? "TCP")
    }

    /// The shadow's container ports for `ports`: each target port once per protocol, named as the Service names it
    /// (a name only once: a container's port names are unique).
    public static func containerPorts(_ ports: [PortMapping]) -> [ShadowSpec.Port] {
        var seen: Set<String> = []
        var names: Set<String> = []
        var result: [ShadowSpec.Port] = []
        for port in ports where seen.insert("\(port.targetPort)/\(port.protocol)").inserted {
            let name = port.targetName.flatMap { names.insert($0).inserted ? $0 : nil }
            result.append(ShadowSpec.Port(name: name, port: port.targetPort, protocol: port.protocol))
        }
        return result
    }
}
