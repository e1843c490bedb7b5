import Foundation
import KtEngine
import KtTunnel
import KubeKit
import Logging
import NIOCore
import NIOPosix

/// `ktctl preview`'s flags.
public struct PreviewOptions: Sendable {
    public var cluster: ClusterOptions
    public var stateDirectory: String
    /// The new Service's name.
    public var name: String
    public var expose: [ExposedPort]
    /// A LoadBalancer Service instead of a ClusterIP one.
    public var external = false
    public var skipPortChecking = false
    public var leaseDuration = SessionLease.defaultDuration

    public init(cluster: ClusterOptions, stateDirectory: String, name: String, expose: [ExposedPort]) {
        self.cluster = cluster
        self.stateDirectory = stateDirectory
        self.name = name
        self.expose = expose
    }
}

/// The pure part of preview: the ports of the new Service (each `local[:remote]`, the Service port the remote
/// number, named `kt-<port>` as kt-connect names them).
public enum PreviewPlan {
    public static func ports(_ expose: [ExposedPort]) throws -> [PortMapping] {
        var seen: Set<Int> = []
        return try expose.map { exposed in
            let remote: Int
            if let text = exposed.remote {
                guard let number = Int(text) else {
                    throw PlanError.badFlag(
                        "--expose", "'\(exposed)': preview makes a new Service, so its port is a number, not a name")
                }
                remote = number
            } else {
                remote = exposed.local
            }
            guard seen.insert(remote).inserted else {
                throw PlanError.badFlag("--expose", "port \(remote) is named twice")
            }
            return PortMapping(
                servicePort: remote, name: "kt-\(remote)", targetPort: remote, targetName: nil, local: exposed.local,
                protocol: "TCP")
        }
    }

    /// A Service name the API server will take (an RFC 1035 label).
    public static func checkName(_ name: String) throws {
        let valid =
            !name.isEmpty && name.count <= 63 && name.first!.isLetter && name.last.map { $0 != "-" } == true
            && name.allSatisfy { ($0.isLetter && $0.isLowercase && $0.isASCII) || $0.isNumber || $0 == "-" }
        guard valid else {
            throw PlanError.badFlag(
                "NAME",
                "'\(name)' is not a Service name (lower-case letters, digits and '-', starting with a letter, at "
                    + "most 63)")
        }
    }
}

/// `ktctl preview` (kt-connect's `provide`): publishes processes on this machine as a new Service, until Ctrl-C.
///
/// Lease → shadow pod `<name>-kt-<id>` → tunnel → the shadow listens on the Service's ports (reverse forwards to
/// 127.0.0.1) → the pod is Ready → the Service `<name>` is created, selecting it. All of it the session's: journaled,
/// owned by the Lease, removed on exit (and by `ktctl clean` after a crash).
public enum PreviewCommand {
    public static func run(_ options: PreviewOptions, logger: Logger, print: @escaping @Sendable (String) -> Void)
        async throws
    {
        try PreviewPlan.checkName(options.name)
        let ports = try PreviewPlan.ports(options.expose)
        var sessionOptions = Session.Options(
            command: "preview", state: StateDirectory(options.stateDirectory),
            lockName: "preview-\(options.cluster.namespace ?? "_")-\(options.name)")
        sessionOptions.leaseDuration = options.leaseDuration
        try await Session.run(sessionOptions, logger: logger, print: print) { session in
            try await preview(options, ports: ports, session: session, logger: logger, print: print)
        }
        print("ktctl: the preview has ended; service \(options.name) and its shadow are removed")
    }

    static func preview(
        _ options: PreviewOptions, ports: [PortMapping], session: Session, logger: Logger,
        print: @escaping @Sendable (String) -> Void
    ) async throws {
        let cluster = try await session.connect(options.cluster)
        let client = cluster.client
        let namespace = cluster.namespace
        try await Permissions.require(
            Permissions.session + Permissions.preview, command: "preview", client: client, namespace: namespace)
        if (try? await client.get(Service.self, name: options.name, namespace: namespace)) != nil {
            throw ConnectError.other(
                "service \(options.name) already exists in namespace \(namespace); preview makes a new one (choose "
                    + "another name, or `ktctl exchange \(options.name)` to take that one over); nothing was changed")
        }
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        session.onStop("stop the event loops") { try? await group.shutdownGracefully() }
        if !options.skipPortChecking {
            try await ListeningShadow.checkLocalPorts(ports, what: { _ in "" }, on: group.next())
        }

        try await session.startLease(target: SessionTarget(service: options.name, mode: "preview"))
        let target = ExchangeCommand.randomTarget()
        let spec = ShadowSpec(
            role: .preview, podName: "\(options.name)-kt-\(session.identity.id)",
            labels: ["kt-role": "shadow-preview", "kt-target": target],
            annotations: ["kt-config": "service=\(options.name)"], ports: ExchangePlan.containerPorts(ports))
        let shadow = try await ListeningShadow.start(
            spec, ports: ports,
            use: .init(
                name: options.name, namespace: namespace, state: "previewed",
                detail: options.external ? "LoadBalancer" : "ClusterIP"),
            session: session, options: options.cluster, group: group, quiet: .milliseconds(500),
            drainTimeout: .seconds(3), logger: logger, print: print)

        var service = Service(
            metadata: ObjectMeta(name: options.name, annotations: ["kt-config": "service=\(options.name)"]),
            spec: Service.Spec(
                selector: ["kt-target": target],
                ports: ports.map {
                    ServicePort(name: $0.name, port: $0.servicePort, targetPort: .int($0.targetPort), protocol: "TCP")
                }))
        service.spec?.type = options.external ? "LoadBalancer" : "ClusterIP"
        let created = try await session.create(service, role: "preview")
        if !(await UndoRunner.waitForEndpoints(
            of: options.name, namespace: namespace, with: spec.podName, client: client, timeout: .seconds(15)))
        {
            print("ktctl: service \(options.name)'s endpoints do not list the shadow yet; it may not answer at once")
        }
        print(
            """
            ktctl: previewing service \(options.name) in namespace \(namespace)
              session    \(session.identity.id) (lease \(cluster.lease?.name ?? "?"))
              service    \(options.name) (\(service.spec?.type ?? "?"), cluster IP \(created.spec?.clusterIP ?? "?"))
              shadow     pod \(spec.podName) (\(shadow.podIP ?? "?"))
              traffic    \(ports.map { "\(options.name):\($0.servicePort) → 127.0.0.1:\($0.local)" }.joined(separator: ", "))
              stop       Ctrl-C (the service and the shadow are removed)
            """)
        try await session.waitUntilStopped()
    }
}
