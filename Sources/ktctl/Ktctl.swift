import ArgumentParser
import Foundation
import KtctlKit

/// ktctl: joins this machine to a Kubernetes test cluster in both directions. This executable only parses
/// flags; every command's work lives in KtctlKit.
@main
struct Ktctl: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ktctl",
        abstract: "Join this machine to a Kubernetes test cluster, in both directions.",
        discussion: """
            Sessions (connect, exchange, mesh, preview) keep their state in ~/.kt: the journal of every change, pid \
            files, and what `ktctl status` shows. `ktctl birdseye` shows who is doing what in the cluster; `ktctl \
            clean` removes what a killed session left. Defaults for any flag: `ktctl config set connect.mode socks`. \
            Shell completion: `source <(ktctl completion bash)` (zsh and fish too).
            """,
        version: "0.1.0-dev",
        subcommands: [
            ConnectCLI.self, ExchangeCLI.self, MeshCLI.self, PreviewCLI.self, ForwardCLI.self, RecoverCLI.self,
            CleanCLI.self,
            RouteCommand.self, ConfigCLI.self, StatusCLI.self, BirdseyeCLI.self, CompletionCLI.self,
        ]
    )

    /// ArgumentParser's own main, after kt-connect's global flags before the subcommand are moved after it
    /// (`ktctl -n dev -d exchange tomcat --expose 8080`).
    static func main() async {
        var names: Set<String> = []
        for command in configuration.subcommands {
            if let name = command.configuration.commandName { names.insert(name) }
            names.formUnion(command.configuration.aliases)
        }
        var arguments = Array(CommandLine.arguments.dropFirst())
        // A shell asking for completions (`---completion exchange -- ktctl exchange to`) gets ArgumentParser's answer
        // for the words as typed.
        let completing = arguments.first == "---completion"
        // cobra's `-v` (kt-connect's) for the version.
        if arguments == ["-v"] { arguments = ["--version"] }
        if !completing {
            do {
                // kt-connect 0.3.7's flags and values, as ktctl's (or refused with what to use instead).
                arguments = try KtConnectFlags.translate(arguments)
            } catch {
                exit(withError: error)
            }
            arguments = GlobalFlags.reorder(arguments, subcommands: names)
        }
        do {
            // ~/.kt/config's defaults, for the flags the command line does not give.
            if !completing, let command = arguments.first, names.contains(command), command != "config",
                FileManager.default.fileExists(atPath: KtConfig.directory + "/config")
            {
                do {
                    let config = try KtConfig.load(KtConfig.directory + "/config")
                    if !config.values.isEmpty {
                        // kt-connect's values in a kt-connect config file (connect.mode: tun2socks) are translated too.
                        arguments = try KtConnectFlags.translate(
                            config.defaults(for: arguments, schema: try configSchema()))
                    }
                } catch let error as ConfigError {
                    throw ValidationError("\(error.description) (ktctl config show; nothing was changed)")
                }
            }
            // The async parse, for the completions that ask the cluster (`ResourceNames`).
            var command = try await asyncParseAsRoot(arguments)
            if var asynchronous = command as? any AsyncParsableCommand {
                try await asynchronous.run()
            } else {
                try command.run()
            }
        } catch {
            exit(withError: error)
        }
    }

    /// The keys ~/.kt/config may set, from the command tree.
    static func configSchema() throws -> ConfigSchema {
        try ConfigSchema(dumpHelp: Data(_dumpHelp().utf8))
    }
}
