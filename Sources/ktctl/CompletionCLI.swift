import ArgumentParser

/// `ktctl completion bash|zsh|fish`: kt-connect's (cobra's) way to get the completion script, beside ArgumentParser's
/// own `--generate-completion-script`.
struct CompletionCLI: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "completion",
        abstract: "Print the shell completion script: ktctl completion bash|zsh|fish.",
        discussion: """
            bash: `source <(ktctl completion bash)`, or save it as /etc/bash_completion.d/ktctl. zsh: save it as \
            _ktctl in a folder of $fpath. fish: `ktctl completion fish > ~/.config/fish/completions/ktctl.fish`. \
            Service, Deployment and pod names are completed from the cluster (the namespace and kubeconfig the line \
            names), config keys and profile names from ~/.kt.
            """)

    @Argument(help: "bash, zsh or fish.", completion: .list(["bash", "zsh", "fish"]))
    var shell: String

    func run() throws {
        guard let kind = CompletionShell(rawValue: shell) else {
            throw ValidationError(
                "no completion script for '\(shell)': ktctl runs on Linux and completes bash, zsh and fish"
                    + (shell == "powershell" ? " (kt-connect's powershell script was for Windows)" : ""))
        }
        print(Ktctl.completionScript(for: kind))
    }
}
