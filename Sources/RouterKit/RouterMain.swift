import Foundation
import KubeKit
import Logging
import NIOCore
import NIOPosix

/// kt-router's settings, as its flags give them.
public struct RouterOptions: Sendable {
    /// The meshed Service: the router follows the Leases of the sessions that mesh it.
    public var service: String?
    public var namespace: String?
    public var ports: [RouterConfiguration.Port]
    public var defaultUpstream: Upstream
    public var healthPort: Int
    /// A kubeconfig instead of the pod's service account (to run the router outside a cluster).
    public var kubeconfig: String?
    /// Routes given on the command line (no API server needed: benchmarks, trials).
    public var staticRoutes: [Route]
    public var accessLog: Bool
    public var threads: Int
    /// The address the ports are bound on.
    public var host = "0.0.0.0"

    public init(
        service: String?, namespace: String?, ports: [RouterConfiguration.Port], defaultUpstream: Upstream,
        healthPort: Int, kubeconfig: String?, staticRoutes: [Route], accessLog: Bool, threads: Int
    ) {
        self.service = service
        self.namespace = namespace
        self.ports = ports
        self.defaultUpstream = defaultUpstream
        self.healthPort = healthPort
        self.kubeconfig = kubeconfig
        self.staticRoutes = staticRoutes
        self.accessLog = accessLog
        self.threads = threads
    }
}

/// Why kt-router's flags were refused.
public struct RouterFlagError: Error, CustomStringConvertible, Sendable, Equatable {
    public var description: String
    public init(_ description: String) { self.description = description }
}

public enum RouterFlags {
    /// `8080` or `8080:80` (listen, then the default upstream's port), comma-separated.
    public static func ports(_ text: String) throws -> [RouterConfiguration.Port] {
        let parts = text.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
        guard !parts.isEmpty else { throw RouterFlagError("--port names no port (e.g. --port 8080 or 8080:80)") }
        return try parts.map { part in
            let numbers = part.split(separator: ":", omittingEmptySubsequences: false).map { Int($0) }
            guard (1...2).contains(numbers.count), numbers.allSatisfy({ $0.map { (1...65535).contains($0) } ?? false })
            else { throw RouterFlagError("--port: '\(part)' is not LISTEN[:DEFAULT] with ports 1-65535") }
            return RouterConfiguration.Port(listen: numbers[0]!, defaultPort: numbers.last!!)
        }
    }

    /// `NAME` or `NAME=ADDRESS`: the default upstream (the stuntman Service), dialled at ADDRESS when given.
    public static func upstream(_ text: String) throws -> Upstream {
        let parts = text.split(separator: "=", maxSplits: 1).map(String.init)
        guard let name = parts.first, !name.isEmpty, parts.allSatisfy({ !$0.isEmpty && !$0.contains(" ") }) else {
            throw RouterFlagError("--default: '\(text)' is not NAME or NAME=ADDRESS")
        }
        return Upstream(name: name, host: parts.count == 2 ? parts[1] : name)
    }

    /// `HEADER:VALUE=HOST`: a route given on the command line.
    public static func route(_ text: String) throws -> Route {
        guard let equals = text.lastIndex(of: "="), let colon = text[..<equals].firstIndex(of: ":") else {
            throw RouterFlagError("--route: '\(text)' is not HEADER:VALUE=HOST")
        }
        let header = text[..<colon].trimmingCharacters(in: .whitespaces)
        let value = text[text.index(after: colon)..<equals].trimmingCharacters(in: .whitespaces)
        let host = String(text[text.index(after: equals)...])
        guard isToken(header), !value.isEmpty, !host.isEmpty, !host.contains(" ") else {
            throw RouterFlagError("--route: '\(text)' is not HEADER:VALUE=HOST (a header name is an HTTP token)")
        }
        return Route(header: header, value: value, upstream: Upstream(name: host, host: host), owner: "--route")
    }

    /// An HTTP field name (RFC 9110 §5.1: a token).
    public static func isToken(_ text: String) -> Bool {
        !text.isEmpty
            && text.utf8.allSatisfy { byte in
                (byte >= 0x30 && byte <= 0x39) || (byte >= 0x41 && byte <= 0x5a) || (byte >= 0x61 && byte <= 0x7a)
                    || Array("!#$%&'*+-.^_`|~".utf8).contains(byte)
            }
    }
}

/// kt-router's life: the routes from the Leases (or the command line), the health port at once, the proxied ports
/// once the routes are read, until SIGTERM.
public enum RouterMain {
    public static func run(_ options: RouterOptions, logger: Logger) async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: max(1, options.threads))
        let routes = RouteStore()
        var client: KubeClient?
        var source: Task<Void, Never>?
        if let service = options.service {
            let access: ClusterAccess
            if let kubeconfig = options.kubeconfig {
                access = try Kubeconfig.load(explicitPath: kubeconfig).access(
                    context: nil, namespace: options.namespace)
            } else {
                access = try ClusterAccess.inCluster()
            }
            let made = try KubeClient(access: access, logger: logger)
            client = made
            let namespace = options.namespace ?? access.namespace
            logger.info("following the Leases of the sessions that mesh service \(service) in \(namespace)")
            let leases = LeaseRouteSource(
                client: made, namespace: namespace, service: service, routes: routes, logger: logger)
            source = Task { await leases.run() }
        } else {
            routes.replace(RouteTable(options.staticRoutes))
        }
        let server = RouterServer(
            configuration: RouterConfiguration(
                ports: options.ports, defaultUpstream: options.defaultUpstream, healthPort: options.healthPort,
                accessLog: options.accessLog, host: options.host),
            routes: routes, group: group, logger: logger)
        let health = try await server.startHealth()
        logger.info("health on :\(options.healthPort) (/healthz, /routes)")
        while !routes.synced { try await Task.sleep(for: .milliseconds(50)) }
        if options.service != nil, !options.staticRoutes.isEmpty {
            logger.warning("--route is ignored when routes come from the sessions' Leases (--service)")
        }
        let proxies = try await server.startProxies()
        logger.info("ready: \(routes.table.routes.count) route(s)")

        let (stop, continuation) = AsyncStream<Int32>.makeStream()
        var sources: [DispatchSourceSignal] = []
        for number in [SIGTERM, SIGINT] {
            signal(number, SIG_IGN)
            let signalSource = DispatchSource.makeSignalSource(signal: number, queue: .global())
            signalSource.setEventHandler { continuation.yield(number) }
            signalSource.resume()
            sources.append(signalSource)
        }
        for await number in stop {
            logger.info("signal \(number): stopping")
            break
        }
        source?.cancel()
        for channel in proxies + [health] { try? await channel.close() }
        server.flushLog()
        await client?.shutdown()
        try? await group.shutdownGracefully()
        _ = sources
    }
}
