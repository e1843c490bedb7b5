import ArgumentParser
import Foundation
import KtctlKit

struct ForwardCLI: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "forward",
        abstract: "Map a Service's or pod's port to a local port, until Ctrl-C.",
        discussion: """
            Like `kubectl port-forward`, but every local connection gets its own stream through the API server, so a \
            dropped one costs only itself, and a Service's connections follow it to another ready pod when its pod \
            is deleted or restarts. Nothing in the cluster changes.
            """)

    @OptionGroup var cluster: ClusterFlags

    @Argument(
        help: "svc/NAME, pod/NAME, or NAME (a Service if one has that name, else a pod).",
        completion: .custom { words, _, prefix in
            await ResourceNames.complete(.servicesAndPods, words: words, prefix: prefix)
        })
    var target: String

    @Argument(help: "local[:remote]: the local port, and the Service's port (number or name) or the pod's.")
    var ports: String?

    @Option(help: "The local address to listen on.")
    var address = "127.0.0.1"

    @Option(name: .customLong("state-dir"), help: .hidden)
    var stateDirectory: String?

    func run() async throws {
        do {
            var options = ForwardOptions(cluster: try cluster.options(), target: target, ports: ports)
            options.address = address
            if let stateDirectory { options.stateDirectory = stateDirectory }
            try await ForwardCommand.run(options, logger: Output.logger(debug: cluster.debug), print: Output.line)
        } catch let error as ValidationError {
            throw error
        } catch {
            Output.error("ktctl forward: \(error)")
            throw ExitCode.failure
        }
    }
}
