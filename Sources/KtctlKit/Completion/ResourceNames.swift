import Foundation
import KubeKit
import Logging

/// Shell completion of resource names from the cluster (the shells ask `ktctl ---completion … -- <words>` as the user
/// presses Tab): the Services of the namespace the words name (`-n`, `--namespace`, else the context's), through the
/// kubeconfig and context they name. One list request, given up after `timeout` (a cluster that is far away or down
/// must not freeze the shell); any failure completes nothing, as kubectl's completion does.
public enum ResourceNames {
    /// How long Tab may wait for the cluster: kubectl's own completion has no bound, and a hung prompt is worse than
    /// no suggestion.
    public static let timeout = Duration.seconds(2)

    public enum Kind: Sendable {
        /// Services (`exchange`, `mesh`, `recover`).
        case services
        /// Services and, prefixed, `deployment/NAME` (`exchange`'s scale mode names the Deployment).
        case servicesAndDeployments
        /// Services, then pods as `pod/NAME` (`forward`).
        case servicesAndPods
    }

    /// The names of `kind` that start with `prefix`, for the words typed so far.
    public static func complete(_ kind: Kind, words: [String], prefix: String) async -> [String] {
        let flags = clusterFlags(words)
        let found = await withTaskGroup(of: [String]?.self) { group -> [String] in
            group.addTask { try? await list(kind, flags: flags) }
            group.addTask {
                try? await Task.sleep(for: timeout)
                return nil
            }
            let first = await group.next() ?? nil
            group.cancelAll()
            return first ?? []
        }
        return found.filter { $0.hasPrefix(prefix) }.sorted()
    }

    /// `--kubeconfig`/`-c`, `--context` and `--namespace`/`-n` as the words give them (either `--flag value` or
    /// `--flag=value`); kt-connect's spellings too.
    static func clusterFlags(_ words: [String]) -> (kubeconfig: String?, context: String?, namespace: String?) {
        var result: (kubeconfig: String?, context: String?, namespace: String?) = (nil, nil, nil)
        var index = 0
        while index < words.count {
            let word = words[index]
            let (name, inline) =
                word.hasPrefix("--") && word.contains("=")
                ? (String(word.prefix { $0 != "=" }), String(word.drop { $0 != "=" }.dropFirst()))
                : (word, nil)
            var value = inline ?? (index + 1 < words.count ? words[index + 1] : nil)
            // bash splits `--namespace=dev` at the `=` (COMP_WORDBREAKS): `--namespace`, `=`, `dev`.
            var used = inline == nil ? 2 : 1
            if inline == nil && value == "=" {
                value = index + 2 < words.count ? words[index + 2] : nil
                used = 3
            }
            switch name {
            case "-c", "--kubeconfig": result.kubeconfig = value
            case "--context": result.context = value
            case "-n", "--namespace": result.namespace = value
            default:
                index += 1
                continue
            }
            index += used
        }
        return result
    }

    static func list(_ kind: Kind, flags: (kubeconfig: String?, context: String?, namespace: String?)) async throws
        -> [String]
    {
        let config = try Kubeconfig.load(explicitPath: flags.kubeconfig)
        let access = try config.access(context: flags.context, namespace: flags.namespace)
        var logger = Logger(label: "ktctl.completion")
        logger.logLevel = .critical
        let client = try KubeClient(access: access, logger: logger)
        defer { Task { await client.shutdown() } }
        let namespace = access.namespace
        // ktctl's own Services (a mesh's stuntman) are not what anyone exchanges or forwards to by hand.
        let services = try await client.list(Service.self, namespace: namespace).items.filter {
            $0.metadata.labels?[SessionLabels.managedBy] != SessionLabels.manager
                || $0.metadata.labels?[SessionLabels.role] == "preview"
        }.map(\.name)
        switch kind {
        case .services:
            return services
        case .servicesAndDeployments:
            let deployments = try await client.list(Deployment.self, namespace: namespace).items.map {
                "deployment/\($0.name)"
            }
            return services + deployments
        case .servicesAndPods:
            let pods = try await client.list(Pod.self, namespace: namespace).items.filter {
                $0.metadata.labels?[SessionLabels.managedBy] != SessionLabels.manager
            }.map { "pod/\($0.name)" }
            return services + pods
        }
    }
}
