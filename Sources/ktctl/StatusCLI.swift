import ArgumentParser
import Foundation
import KtctlKit

/// `ktctl status`: flag parsing only; see KtctlKit's StatusCommand.
struct StatusCLI: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "status",
        abstract: "Show the ktctl sessions running on this machine: mode, shadow, routes, DNS, flows and bytes.",
        discussion: """
            Each running session (connect, exchange, mesh, preview; forward too) writes what it is doing to \
            ~/.kt/status twice \
            a second; this reads those files and never talks to the cluster. Sessions started with sudo are in \
            root's ~/.kt: run `sudo ktctl status` for them. --watch redraws once a second (a terminal in place, \
            anything else one block after the other; with -o json, one JSON document per line).
            """)

    enum Format: String, ExpressibleByArgument, CaseIterable {
        case text, json
    }

    @Option(name: .shortAndLong, help: "Output format: text or json.")
    var output: Format = .text

    @Flag(name: [.short, .long], help: "Redraw once a second until Ctrl-C.")
    var watch = false

    @Option(name: .customLong("state-dir"), help: .hidden)
    var stateDirectory: String?

    func run() async throws {
        var options = StatusOptions(stateDirectory: stateDirectory ?? StateDirectory.defaultRoot)
        options.json = output == .json
        options.watch = watch
        // Written straight to the descriptor: a pipe (`ktctl status --watch | …`) sees each redraw at once.
        try await StatusCommand.run(options) { text in
            FileHandle.standardOutput.write(Data((text + "\n").utf8))
        }
    }
}
