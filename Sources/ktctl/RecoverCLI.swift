import ArgumentParser
import Foundation
import KtctlKit

struct RecoverCLI: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "recover",
        abstract: "Put a Service back now, whoever left it exchanged.",
        discussion: """
            Restores the original selector (kept in its kt-selector annotation), drops its lock, scales back a \
            workload a scale-mode exchange scaled to 0, and ends the session that held it (its Lease is deleted, \
            its shadow goes with it).
            """)

    @OptionGroup var cluster: ClusterFlags

    @Argument(
        help: "The service's name (or svc/NAME).",
        completion: .custom { words, _, prefix in
            await ResourceNames.complete(.services, words: words, prefix: prefix)
        })
    var service: String

    func run() async throws {
        do {
            guard case .service(let name) = try WorkloadTarget.parse(service) else {
                throw ValidationError("recover takes a service: svc/NAME or NAME")
            }
            try await RecoverCommand.run(
                service: name, cluster: try cluster.options(), logger: Output.logger(debug: cluster.debug),
                print: Output.line)
        } catch let error as ValidationError {
            throw error
        } catch {
            Output.error("ktctl recover: \(error)")
            throw ExitCode.failure
        }
    }
}
