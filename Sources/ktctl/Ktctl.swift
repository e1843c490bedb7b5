import ArgumentParser

/// ktctl: joins this machine to a Kubernetes test cluster in both directions. This executable only parses
/// flags; every command's work lives in KtctlKit.
@main
struct Ktctl: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ktctl",
        abstract: "Join this machine to a Kubernetes test cluster, in both directions.",
        discussion: """
            `connect` (tun and socks modes), `exchange`, `preview`, `forward`, `recover`, `clean` and `route` exist \
            so far; `mesh` and the rest follow. Sessions keep their state in ~/.kt (the journal of every change, pid files). Shell \
            completion: ktctl --generate-completion-script bash|zsh|fish.
            """,
        version: "0.1.0-dev",
        subcommands: [
            ConnectCLI.self, ExchangeCLI.self, PreviewCLI.self, ForwardCLI.self, RecoverCLI.self, CleanCLI.self,
            RouteCommand.self,
        ]
    )
}
