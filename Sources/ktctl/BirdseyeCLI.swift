import ArgumentParser
import Foundation
import KtctlKit

/// `ktctl birdseye`: flag parsing only; see KtctlKit's BirdseyeCommand.
struct BirdseyeCLI: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "birdseye",
        abstract: "Show who is doing what: each Service normal, exchanged, meshed (and by whom, with which mark) or "
            + "previewed, and who is connected.",
        discussion: """
            Built from the sessions' Leases and the Services' annotations, with every age judged by the API server's \
            clock: a session counts while its Lease is fresh (90 s after its ktctl was killed it drops out). A \
            Service that a gone session left changed says so, with the command that puts it back. Reads only.
            """)

    @OptionGroup var cluster: ClusterFlags

    @Flag(name: [.customShort("A"), .customLong("all-namespaces")], help: "Every namespace, not only one.")
    var allNamespaces = false

    @Flag(
        name: [.customLong("show-connectors"), .customLong("showConnector")],
        help: "Also list who runs `ktctl connect` (every namespace, when you may list Leases cluster-wide).")
    var showConnectors = false

    @Flag(
        name: [.customLong("hide-natural-services"), .customLong("hideNaturalService")],
        help: "Only the Services someone is working on.")
    var hideNaturalServices = false

    enum Sort: String, ExpressibleByArgument, CaseIterable {
        case status, name
    }

    @Option(
        name: [.customLong("sort-by"), .customLong("sortBy")],
        help: "status (Services someone works on first) or name.")
    var sortBy: Sort = .status

    enum Format: String, ExpressibleByArgument, CaseIterable {
        case text, json
    }

    @Option(name: .shortAndLong, help: "Output format: text or json.")
    var output: Format = .text

    func run() async throws {
        var options = BirdseyeOptions(cluster: try cluster.options())
        options.allNamespaces = allNamespaces
        options.showConnectors = showConnectors
        options.hideNaturalServices = hideNaturalServices
        options.sort = sortBy == .name ? .name : .status
        options.json = output == .json
        do {
            try await BirdseyeCommand.run(options, print: Output.line)
        } catch {
            Output.error("ktctl birdseye: \(error)")
            throw ExitCode.failure
        }
    }
}
