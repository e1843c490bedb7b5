import ArgumentParser
import Foundation
import KtctlKit

extension ExchangeOptions.Mode: ExpressibleByArgument {}

struct ExchangeCLI: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "exchange",
        abstract: "Send a Service's traffic to processes on this machine until Ctrl-C.",
        discussion: """
            selector mode (the default): a shadow pod listens on the Service's target ports and hands every \
            connection to 127.0.0.1:<local>; the Service selects it (its own selector is kept on it, and put back \
            on Ctrl-C, or by `ktctl recover`). The workload's pods keep running. One session holds a Service at a \
            time. scale mode: the shadow carries the workload's labels and the workload scales to 0, and back on \
            Ctrl-C. The Service moves only once the shadow answers, and moves back before the shadow goes.
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

    @Option(help: "selector (default) or scale.")
    var mode: ExchangeOptions.Mode = .selector

    @Option(
        name: [.customLong("recover-wait-time"), .customLong("recoverWaitTime")],
        help: "scale mode: seconds to wait on the way out for the workload to be ready again.")
    var recoverWaitTime: Int = 120

    @Flag(
        name: [.customLong("skip-port-checking"), .customLong("skipPortChecking")],
        help: "Go on when nothing listens on a local port yet.")
    var skipPortChecking = false

    @OptionGroup var session: SessionFlags

    func run() async throws {
        do {
            var options = ExchangeOptions(
                cluster: try cluster.options(), stateDirectory: session.root,
                target: try WorkloadTarget.parse(target), expose: try ExposedPort.parseList(expose))
            options.mode = mode
            guard recoverWaitTime > 0 else { throw ValidationError("--recover-wait-time must be positive") }
            options.recoverWaitTime = .seconds(recoverWaitTime)
            options.skipPortChecking = skipPortChecking
            options.leaseDuration = try session.validatedLeaseDuration()
            try await ExchangeCommand.run(options, logger: Output.logger(debug: cluster.debug), print: Output.line)
        } catch let error as ValidationError {
            throw error
        } catch {
            Output.error("ktctl exchange: \(error)")
            throw ExitCode.failure
        }
    }
}
