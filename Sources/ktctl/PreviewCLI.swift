import ArgumentParser
import Foundation
import KtctlKit

struct PreviewCLI: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "preview",
        abstract: "Publish processes on this machine as a new Service until Ctrl-C.",
        discussion: """
            A shadow pod listens on the Service's ports and hands every connection to 127.0.0.1:<local>; the \
            Service (ClusterIP, or LoadBalancer with --external) selects it. Both are removed on exit, and by \
            `ktctl clean` after a crash.
            """,
        aliases: ["provide"])

    @OptionGroup var cluster: ClusterFlags

    @Argument(help: "The new Service's name.")
    var name: String

    @Option(help: "local[:remote], comma-separated: a local port, and the Service's port (the same by default).")
    var expose: String

    @Flag(help: "A LoadBalancer Service instead of a ClusterIP one.")
    var external = false

    @Flag(
        name: [.customLong("skip-port-checking"), .customLong("skipPortChecking")],
        help: "Go on when nothing listens on a local port yet.")
    var skipPortChecking = false

    @OptionGroup var session: SessionFlags

    func run() async throws {
        do {
            var options = PreviewOptions(
                cluster: try cluster.options(), stateDirectory: session.root,
                name: name, expose: try ExposedPort.parseList(expose))
            options.external = external
            options.skipPortChecking = skipPortChecking
            options.leaseDuration = try session.validatedLeaseDuration()
            try await PreviewCommand.run(options, logger: Output.logger(debug: cluster.debug), print: Output.line)
        } catch let error as ValidationError {
            throw error
        } catch {
            Output.error("ktctl preview: \(error)")
            throw ExitCode.failure
        }
    }
}
