import Foundation
import KubeKit
import Logging

/// `ktctl clean`'s flags.
public struct CleanOptions: Sendable {
    public var cluster: ClusterOptions
    /// Where `ktctl connect` keeps its pid file and resolv.conf journal.
    public var stateDirectory: String
    /// A session whose heartbeat is older than this is dead (connect refreshes it every 60 s).
    public var threshold: Duration = .seconds(180)
    public var dryRun = false

    public init(cluster: ClusterOptions, stateDirectory: String) {
        self.cluster = cluster
        self.stateDirectory = stateDirectory
    }
}

/// `ktctl clean`: what sessions that did not end cleanly (`kill -9`, a crash, a lost laptop) left behind. On this
/// machine: the resolv.conf change and the pid file of a ktctl that is gone (the TUN and its routes go with the
/// process). In the cluster: the objects of that session, and of any session whose heartbeat is older than the
/// threshold. A running session's objects are never touched.
public enum CleanCommand {
    public static func run(_ options: CleanOptions, logger: Logger, print: @escaping @Sendable (String) -> Void)
        async throws
    {
        let verb = options.dryRun ? "would remove" : "removed"
        var deadSessions: [String: String?] = [:]
        var liveSession: String?
        let pidPath = "\(options.stateDirectory)/connect.pid"
        if let record = PidFile.read(pidPath) {
            if record.isAlive {
                liveSession = record.session
                print("ktctl clean: ktctl connect is running (pid \(record.pid)); its session is left alone")
            } else {
                if let session = record.session { deadSessions[session] = record.namespace }
                if !options.dryRun { try? FileManager.default.removeItem(atPath: pidPath) }
                print("ktctl clean: \(verb) \(pidPath) (pid \(record.pid) is gone)")
            }
        }
        if liveSession == nil {
            let resolvConf = ResolvConfWiring(stateDirectory: options.stateDirectory)
            if options.dryRun {
                if resolvConf.hasJournal { print("ktctl clean: would restore /etc/resolv.conf") }
            } else if (try? resolvConf.restore()) == true {
                print("ktctl clean: restored /etc/resolv.conf")
            }
        }

        let config = try Kubeconfig.load(explicitPath: options.cluster.kubeconfig)
        let access = try config.access(context: options.cluster.context, namespace: options.cluster.namespace)
        let client = try KubeClient(access: access, logger: logger)
        defer { Task { await client.shutdown() } }
        let now = Date()
        var removed: [String] = []
        var namespaces = Set([access.namespace])
        for case let namespace? in deadSessions.values { namespaces.insert(namespace) }
        for namespace in namespaces.sorted() {
            let selector = ListOptions(labelSelector: "\(SessionLabels.managedBy)=\(SessionLabels.manager)")
            let pods = try await client.list(Pod.self, namespace: namespace, options: selector).items.map(\.raw)
            let secrets = try await client.list(Secret.self, namespace: namespace, options: selector).items.map(\.raw)
            for (kind, objects) in [("pod", pods), ("secret", secrets)] {
                for object in objects {
                    let metadata = object["metadata"]
                    guard let name = metadata?["name"]?.stringValue else { continue }
                    let session = metadata?["labels"]?[SessionLabels.session]?.stringValue
                    if let session, session == liveSession { continue }
                    let beat =
                        (metadata?["annotations"]?[SessionLabels.heartbeat]?.stringValue
                        ?? metadata?["creationTimestamp"]?.stringValue).flatMap(RFC3339.parse) ?? .distantPast
                    let age = now.timeIntervalSince(beat)
                    let dead = session.map { deadSessions.keys.contains($0) } ?? false
                    guard dead || age > Double(options.threshold.components.seconds) else { continue }
                    let why = dead ? "its ktctl was killed" : "no heartbeat for \(Int(age)) s"
                    if !options.dryRun {
                        if kind == "pod" {
                            try await client.delete(Pod.self, name: name, namespace: namespace)
                        } else {
                            try await client.delete(Secret.self, name: name, namespace: namespace)
                        }
                    }
                    removed.append("\(kind)/\(name)")
                    print("ktctl clean: \(verb) \(kind)/\(name) in \(namespace) (\(why))")
                }
            }
        }
        if removed.isEmpty && deadSessions.isEmpty {
            print("ktctl clean: nothing to clean in namespace \(namespaces.sorted().joined(separator: ", "))")
        }
    }

    /// Deletes the Pod and Secret of session `id`; returns what went.
    static func removeSession(_ id: String, client: KubeClient, namespace: String, logger: Logger) async -> [String] {
        var removed: [String] = []
        let selector = ListOptions(labelSelector: "\(SessionLabels.session)=\(id)")
        for pod in (try? await client.list(Pod.self, namespace: namespace, options: selector).items) ?? [] {
            if (try? await client.delete(Pod.self, name: pod.name, namespace: namespace)) == true {
                removed.append("pod/\(pod.name)")
            }
        }
        for secret in (try? await client.list(Secret.self, namespace: namespace, options: selector).items) ?? [] {
            if (try? await client.delete(Secret.self, name: secret.name, namespace: namespace)) == true {
                removed.append("secret/\(secret.name)")
            }
        }
        logger.debug("removed session \(id): \(removed)")
        return removed
    }
}
