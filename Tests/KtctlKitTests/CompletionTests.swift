import Foundation
import LabKit
import LabTestSupport
import NamespaceTestSupport
import Testing

@testable import KtctlKit

/// Shell completion of resource names from the cluster: bash's own completion function (the script ktctl generates)
/// asked as a shell asks it on Tab, against ktlab.
@Suite(.serialized) struct CompletionTests {
    static var kubectl: String? { RunningLab.tool("kubectl") }

    @Test func clusterFlagsAreReadFromTheWords() {
        let flags = ResourceNames.clusterFlags([
            "ktctl", "exchange", "--kubeconfig=/k", "--context", "lab", "-n", "dev", "to",
        ])
        #expect(flags.kubeconfig == "/k" && flags.context == "lab" && flags.namespace == "dev")
        let split = ResourceNames.clusterFlags(["ktctl", "recover", "--namespace", "=", "dev", ""])
        #expect(split.namespace == "dev")
        let none = ResourceNames.clusterFlags(["ktctl", "forward", "-n"])
        #expect(none.namespace == nil && none.kubeconfig == nil)
    }

    /// kt-connect's (cobra's) spellings: `ktctl completion bash|zsh|fish` and `-v`; config keys complete.
    @Test func ktConnectsCompletionCommandAndConfigKeys() async throws {
        let ktctl = try #require(builtExecutable("ktctl"))
        for shell in ["bash", "zsh", "fish"] {
            let ours = try await TestNamespace.run([ktctl, "completion", shell])
            let generated = try await TestNamespace.run([ktctl, "--generate-completion-script", shell])
            #expect(ours.status == 0 && ours.output == generated.output && ours.output.contains("ktctl"))
        }
        let powershell = try await TestNamespace.run([ktctl, "completion", "powershell"])
        #expect(powershell.status != 0 && powershell.error.contains("bash, zsh and fish"), "\(powershell.error)")
        let version = try await TestNamespace.run([ktctl, "-v"])
        #expect(version.status == 0 && version.output.hasPrefix("0."), "\(version.output)")
        let keys = try await TestNamespace.run([
            ktctl, "---completion", "config", "get", "--", "positional@0", "3", "4", "ktctl", "config", "get", "conn",
        ])
        let offered = keys.output.split(separator: "\n").map(String.init)
        #expect(offered.contains("connect.mode") && offered.allSatisfy { $0.hasPrefix("conn") }, "\(keys.output)")
    }

    @Test(.enabled(if: TestNamespace.unavailableReason == nil && kubectl != nil))
    func bashCompletesServicesDeploymentsAndPods() async throws {
        let kubectl = try #require(Self.kubectl)
        let ktctl = try #require(builtExecutable("ktctl"))
        try await RunningLab.with { lab in
            for command in [
                ["create", "deployment", "tomcat", "--image=tomcat:9", "--port=8080"],
                ["expose", "deployment", "tomcat", "--port=8080"],
                ["create", "deployment", "orders", "--image=tomcat:9"],
                ["create", "namespace", "dev"],
                ["create", "-n", "dev", "deployment", "billing", "--image=tomcat:9"],
                ["expose", "-n", "dev", "deployment", "billing", "--port=80"],
            ] {
                let made = try await lab.kubectl(kubectl, command)
                #expect(made.status == 0, "\(made.error)")
            }
            let script = "\(LabLayout.stateRoot)/\(lab.name)/ktctl.bash"
            let generated = try await TestNamespace.run([ktctl, "--generate-completion-script", "bash"])
            try generated.output.write(toFile: script, atomically: true, encoding: .utf8)
            let directory = (ktctl as NSString).deletingLastPathComponent
            /// What bash offers for the line typed so far (its last word being completed).
            func offered(_ words: [String]) async throws -> [String] {
                let quoted = words.map { "'\($0)'" }.joined(separator: " ")
                let program = """
                    source '\(script)'
                    COMP_WORDS=(\(quoted)); COMP_CWORD=\(words.count - 1)
                    COMP_LINE="${COMP_WORDS[*]}"; COMP_POINT=${#COMP_LINE}
                    _ktctl ktctl "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD-1]}"
                    printf '%s\\n' "${COMPREPLY[@]}"
                    """
                let result = try await TestNamespace.run([
                    "env", "PATH=\(directory):/usr/bin:/bin", "KUBECONFIG=\(lab.kubeconfig)", "bash", "-c", program,
                ])
                return result.output.split(separator: "\n").map(String.init).sorted()
            }
            #expect(try await offered(["ktctl", "exchange", "to"]) == ["tomcat"])
            let orders = try await offered(["ktctl", "mesh", "de"])
            #expect(orders == ["deployment/orders", "deployment/tomcat"], "\(orders)")
            #expect(try await offered(["ktctl", "exchange", "-n", "dev", ""]) == ["billing", "deployment/billing"])
            let forward = try await offered(["ktctl", "forward", ""])
            #expect(forward.contains("tomcat") && forward.contains { $0.hasPrefix("pod/orders-") }, "\(forward)")
            #expect(try await offered(["ktctl", "recover", "--namespace=dev", "b"]) == ["billing"])
            // A cluster that cannot be reached completes nothing, at once.
            let started = ContinuousClock.now
            #expect(try await offered(["ktctl", "exchange", "--kubeconfig", "/nonexistent", ""]).isEmpty)
            #expect(ContinuousClock.now - started < .seconds(5))
        }
    }
}
