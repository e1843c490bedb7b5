import ArgumentParser
import Foundation
import Logging
import RouterKit

/// kt-router: the mesh router. This executable only parses flags; the router lives in RouterKit.
@main
struct KtRouter: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "kt-router",
        abstract: "ktctl mesh's router: each request (or HTTP/2 stream) to the developer whose header it carries.",
        discussion: """
            Listens on the meshed Service's target ports. A request whose header matches a route goes to that \
            developer's shadow on the same port; every other request goes to --default (the stuntman Service, which \
            selects the original pods). HTTP/1.1 (keep-alive, chunked, 100-continue, WebSocket and other Upgrades) \
            and HTTP/2 cleartext (prior knowledge and h2c upgrade, gRPC) are routed. With --service, routes come \
            from the Leases of the sessions that mesh it (ktctl writes them; the pod's service account needs get, \
            list and watch on Leases: deploy/rbac/kt-router.yaml); a route goes when its session's Lease does, or \
            turns stale.
            """,
        version: "0.1.0-dev"
    )

    @Option(help: "The meshed Service: routes come from its mesh sessions' Leases.")
    var service: String?

    @Option(help: "The namespace of the Service and the Leases (default: the pod's).")
    var namespace: String?

    @Option(help: "Ports as LISTEN[:DEFAULT], comma-separated (DEFAULT: the --default upstream's port).")
    var port: String

    @Option(name: .customLong("default"), help: "Where unrouted requests go: NAME or NAME=ADDRESS.")
    var defaultUpstream: String

    @Option(help: "Port of /healthz and /routes.")
    var healthPort: Int = 18021

    @Option(help: "A kubeconfig to read the Leases with, instead of the pod's service account.")
    var kubeconfig: String?

    @Option(help: "A route HEADER:VALUE=HOST (repeatable), when there is no --service.")
    var route: [String] = []

    @Flag(inversion: .prefixedNo, help: "Log each request and its route.")
    var accessLog = true

    @Option(help: "The address to listen on.")
    var bind = "0.0.0.0"

    @Option(help: "Event-loop threads.")
    var threads: Int = 1

    @Flag(help: "Debug logs.")
    var debug = false

    func run() async throws {
        let level: Logger.Level = debug ? .debug : .info
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardOutput(label: label)
            handler.logLevel = level
            return handler
        }
        let logger = Logger(label: "kt-router")
        let options: RouterOptions
        do {
            options = RouterOptions(
                service: service, namespace: namespace, ports: try RouterFlags.ports(port),
                defaultUpstream: try RouterFlags.upstream(defaultUpstream),
                healthPort: healthPort, kubeconfig: kubeconfig, staticRoutes: try route.map(RouterFlags.route),
                accessLog: accessLog, threads: threads)
        } catch let error as RouterFlagError {
            throw ValidationError(error.description)
        }
        var bound = options
        bound.host = bind
        try await RouterMain.run(bound, logger: logger)
    }
}
