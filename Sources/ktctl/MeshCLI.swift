import ArgumentParser
import Foundation
import KtctlKit

extension MeshOptions.Mode: ExpressibleByArgument {}

struct MeshCLI: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "mesh",
        abstract: "Send the requests of a Service that carry your header to processes on this machine, until Ctrl-C.",
        discussion: """
            auto mode (the default): a router pod takes the Service (its original selector is kept on it) and sends \
            each request, or HTTP/2 stream, whose header matches a developer's mark to that developer's shadow, and \
            every other request to the original pods (through the <svc>-kt-stuntman Service). Several developers \
            mesh one Service at once, each with a mark; the last one out puts the Service back. The router reads the \
            routes from the sessions' Leases with its own service account: apply deploy/rbac/kt-router.yaml once \
            per namespace. manual mode: only a shadow pod with the Service's selector and the label KEY=VALUE, for \
            Istio or another mesh to route on.
            """)

    @OptionGroup var cluster: ClusterFlags

    @Argument(
        help: "svc/NAME, service/NAME, deploy/NAME, deployment/NAME, or a service's NAME.",
        completion: .custom { words, _, prefix in
            await ResourceNames.complete(.servicesAndDeployments, words: words, prefix: prefix)
        })
    var target: String

    @Option(help: "local[:remote], comma-separated: a local port, and the Service's port (number or name).")
    var expose: String

    @Option(help: "auto (default) or manual.")
    var mode: MeshOptions.Mode = .auto

    @Option(
        name: [.customLong("version-mark"), .customLong("versionMark")],
        help: "VALUE, KEY: or KEY:VALUE: the header (auto) or label (manual) to route on (default VERSION:<random>).")
    var versionMark: String?

    @Option(
        name: [.customLong("router-image"), .customLong("routerImage")],
        help: "The router's image (auto mode).")
    var routerImage: String = MeshOptions.defaultRouterImage

    @Flag(
        name: [.customLong("skip-port-checking"), .customLong("skipPortChecking")],
        help: "Go on when nothing listens on a local port yet.")
    var skipPortChecking = false

    @OptionGroup var session: SessionFlags

    func run() async throws {
        do {
            var options = MeshOptions(
                cluster: try cluster.options(), stateDirectory: session.root,
                target: try WorkloadTarget.parse(target), expose: try ExposedPort.parseList(expose),
                mark: try VersionMark.parse(versionMark))
            options.mode = mode
            options.routerImage = routerImage
            options.skipPortChecking = skipPortChecking
            options.leaseDuration = try session.validatedLeaseDuration()
            try await MeshCommand.run(options, logger: Output.logger(debug: cluster.debug), print: Output.line)
        } catch let error as ValidationError {
            throw error
        } catch {
            Output.error("ktctl mesh: \(error)")
            throw ExitCode.failure
        }
    }
}
