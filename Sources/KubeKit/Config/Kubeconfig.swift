import Foundation

/// Every kubeconfig file kubectl would read, merged with kubectl's rules (client-go `clientcmd` loader):
/// `--kubeconfig` alone if given; else each file in `KUBECONFIG` in order, the first definition of each named
/// cluster, user and context winning whole and the first non-empty `current-context` winning; else
/// `~/.kube/config`. Relative paths are resolved against the directory of the file that wrote them.
public struct Kubeconfig: Sendable, Hashable {
    /// A value and the file it came from (for error messages and relative paths).
    public struct Entry<Value: Sendable & Hashable>: Sendable, Hashable {
        public var value: Value
        public var origin: String
    }

    public var clusters: [String: Entry<KubeconfigFile.Cluster>] = [:]
    public var users: [String: Entry<KubeconfigFile.User>] = [:]
    public var contexts: [String: Entry<KubeconfigFile.Context>] = [:]
    public var currentContext: String?
    /// The files that were read, in order (missing `KUBECONFIG` entries are left out).
    public var files: [String] = []
    /// What was looked at, for the message when nothing usable was found.
    public var searched: String = ""

    public init() {}

    // MARK: - Loading

    /// Loads with kubectl's precedence. `environment` and `home` are parameters so that tests need no real home.
    public static func load(
        explicitPath: String? = nil, environment: [String: String] = ProcessInfo.processInfo.environment,
        home: String? = nil
    ) throws -> Kubeconfig {
        let home = home ?? environment["HOME"] ?? NSHomeDirectory()
        if let explicitPath, !explicitPath.isEmpty {
            let path = absolute(explicitPath)
            guard FileManager.default.fileExists(atPath: path) else {
                throw KubeconfigError(
                    path: path, field: nil, problem: "does not exist",
                    hint: "check the --kubeconfig path (nothing was read or changed)")
            }
            var config = try merge([path])
            config.searched = "--kubeconfig \(path)"
            return config
        }
        if let list = environment["KUBECONFIG"], !list.isEmpty {
            var seen = Set<String>()
            let paths = list.split(separator: ":").map { absolute(String($0)) }.filter { seen.insert($0).inserted }
            var config = try merge(paths.filter { FileManager.default.fileExists(atPath: $0) })
            config.searched = "KUBECONFIG=\(list)"
            return config
        }
        let path = home + "/.kube/config"
        var config = try merge(FileManager.default.fileExists(atPath: path) ? [path] : [])
        config.searched = path
        return config
    }

    /// Merges files in order, first definition winning.
    public static func merge(_ paths: [String]) throws -> Kubeconfig {
        var config = Kubeconfig()
        for path in paths {
            let text: String
            do {
                text = try String(contentsOfFile: path, encoding: .utf8)
            } catch {
                throw KubeconfigError(path: path, field: nil, problem: "cannot be read: \(error.localizedDescription)")
            }
            config.add(try KubeconfigFile.parse(text, path: path), from: path)
        }
        return config
    }

    /// Adds one parsed file: entries already defined by an earlier file are kept as they are.
    public mutating func add(_ file: KubeconfigFile, from path: String) {
        files.append(path)
        let directory = (path as NSString).deletingLastPathComponent
        for named in file.clusters ?? [] where clusters[named.name] == nil {
            var cluster = named.cluster ?? KubeconfigFile.Cluster()
            cluster.certificateAuthority = Self.resolve(cluster.certificateAuthority, in: directory)
            clusters[named.name] = Entry(value: cluster, origin: path)
        }
        for named in file.users ?? [] where users[named.name] == nil {
            var user = named.user ?? KubeconfigFile.User()
            user.clientCertificate = Self.resolve(user.clientCertificate, in: directory)
            user.clientKey = Self.resolve(user.clientKey, in: directory)
            user.tokenFile = Self.resolve(user.tokenFile, in: directory)
            if let command = user.exec?.command, command.contains("/") {
                user.exec?.command = Self.resolve(command, in: directory)
            }
            users[named.name] = Entry(value: user, origin: path)
        }
        for named in file.contexts ?? [] where contexts[named.name] == nil {
            contexts[named.name] = Entry(value: named.context ?? KubeconfigFile.Context(), origin: path)
        }
        if currentContext?.isEmpty ?? true, let current = file.currentContext, !current.isEmpty {
            currentContext = current
        }
    }

    static func resolve(_ path: String?, in directory: String) -> String? {
        guard let path, !path.isEmpty, !path.hasPrefix("/") else { return path }
        return ((directory as NSString).appendingPathComponent(path) as NSString).standardizingPath
    }

    static func absolute(_ path: String) -> String {
        if path.hasPrefix("/") { return path }
        if path.hasPrefix("~/") { return NSHomeDirectory() + path.dropFirst() }
        return (FileManager.default.currentDirectoryPath as NSString).appendingPathComponent(path)
    }

    // MARK: - Choosing a context

    /// The cluster, credentials and namespace to use: `--context` or `current-context`, and `-n` or the
    /// context's namespace or `default`. Reads CA, certificate, key and token files now, so that every problem with
    /// the kubeconfig shows up here, before anything is done to the cluster.
    public func access(context requested: String? = nil, namespace: String? = nil) throws -> ClusterAccess {
        guard !files.isEmpty else {
            throw KubeconfigError(
                path: searched, field: nil, problem: "was not found",
                hint: "point --kubeconfig or KUBECONFIG at a kubeconfig file (for the lab: `ktlab kubeconfig`)")
        }
        let contextName: String
        if let requested, !requested.isEmpty {
            contextName = requested
        } else if let currentContext, !currentContext.isEmpty {
            contextName = currentContext
        } else {
            throw KubeconfigError(
                path: files.joined(separator: ":"), field: "current-context", problem: "is not set",
                hint: "pass --context (contexts: \(contexts.keys.sorted().joined(separator: ", ")))")
        }
        guard let context = contexts[contextName] else {
            throw KubeconfigError(
                path: files.joined(separator: ":"), field: "contexts", problem: "has no context \"\(contextName)\"",
                hint: "known contexts: \(contexts.keys.sorted().joined(separator: ", "))")
        }
        guard let clusterName = context.value.cluster, !clusterName.isEmpty else {
            throw KubeconfigError(
                path: context.origin, field: "contexts[\(contextName)].context.cluster", problem: "is not set")
        }
        guard let cluster = clusters[clusterName] else {
            throw KubeconfigError(
                path: context.origin, field: "contexts[\(contextName)].context.cluster",
                problem: "names cluster \"\(clusterName)\", which no kubeconfig file defines")
        }
        let userName = context.value.user ?? ""
        let user: Entry<KubeconfigFile.User>
        if userName.isEmpty {
            user = Entry(value: KubeconfigFile.User(), origin: context.origin)
        } else if let found = users[userName] {
            user = found
        } else {
            throw KubeconfigError(
                path: context.origin, field: "contexts[\(contextName)].context.user",
                problem: "names user \"\(userName)\", which no kubeconfig file defines")
        }
        let chosenNamespace: String
        if let namespace, !namespace.isEmpty {
            chosenNamespace = namespace
        } else if let fromContext = context.value.namespace, !fromContext.isEmpty {
            chosenNamespace = fromContext
        } else {
            chosenNamespace = "default"
        }
        return try ClusterAccess(
            contextName: contextName, clusterName: clusterName, cluster: cluster, userName: userName, user: user,
            namespace: chosenNamespace)
    }
}
