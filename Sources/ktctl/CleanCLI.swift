import ArgumentParser
import Foundation
import KtctlKit
import Logging

struct CleanCLI: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "clean",
        abstract: "Remove what ktctl sessions that did not end cleanly left behind.",
        discussion: """
            On this machine: the DNS change and pid file of a ktctl connect that was killed (its TUN and routes \
            went with it). In the cluster (the namespace of -n or the context): that session's pod and Secret, \
            and those of any session whose heartbeat is older than --threshold. A running session is never touched.
            """)

    @OptionGroup var cluster: ClusterFlags

    @Option(help: "Seconds without a heartbeat after which a session counts as dead.")
    var threshold: Int = 180

    @Flag(name: .customLong("dry-run"), help: "Only say what would be removed.")
    var dryRun = false

    @Option(name: .customLong("state-dir"), help: .hidden)
    var stateDirectory: String?

    func run() async throws {
        guard threshold > 0 else { throw ValidationError("--threshold must be a positive number of seconds") }
        var options = CleanOptions(
            cluster: try cluster.options(), stateDirectory: stateDirectory ?? (NSHomeDirectory() + "/.kt"))
        options.threshold = .seconds(threshold)
        options.dryRun = dryRun
        var logger = Logger(label: "ktctl")
        logger.logLevel = cluster.debug ? .debug : .warning
        do {
            try await CleanCommand.run(options, logger: logger) { line in
                FileHandle.standardOutput.write(Data((line + "\n").utf8))
            }
        } catch {
            FileHandle.standardError.write(Data("ktctl clean: \(error); nothing more was removed\n".utf8))
            throw ExitCode.failure
        }
    }
}
