import Foundation
import Yams

/// One kubeconfig file as written (client-go `clientcmd/api/v1`), with the YAML spellings kubectl uses.
public struct KubeconfigFile: Codable, Sendable, Hashable {
    public struct Cluster: Codable, Sendable, Hashable {
        public var server: String?
        public var certificateAuthority: String?
        public var certificateAuthorityData: String?
        public var insecureSkipTLSVerify: Bool?
        public var tlsServerName: String?
        public var proxyURL: String?
        public var disableCompression: Bool?
        public var extensions: [NamedExtension]?

        enum CodingKeys: String, CodingKey {
            case server
            case certificateAuthority = "certificate-authority"
            case certificateAuthorityData = "certificate-authority-data"
            case insecureSkipTLSVerify = "insecure-skip-tls-verify"
            case tlsServerName = "tls-server-name"
            case proxyURL = "proxy-url"
            case disableCompression = "disable-compression"
            case extensions
        }

        public init(server: String? = nil) { self.server = server }
    }

    public struct NamedExtension: Codable, Sendable, Hashable {
        public var name: String
        public var `extension`: JSONValue?
    }

    public struct ExecConfig: Codable, Sendable, Hashable {
        public struct EnvEntry: Codable, Sendable, Hashable {
            public var name: String
            public var value: String
        }
        public var command: String?
        public var args: [String]?
        public var env: [EnvEntry]?
        public var apiVersion: String?
        public var installHint: String?
        public var provideClusterInfo: Bool?
        public var interactiveMode: String?

        public init(command: String, args: [String]? = nil, apiVersion: String, interactiveMode: String? = nil) {
            self.command = command
            self.args = args
            self.apiVersion = apiVersion
            self.interactiveMode = interactiveMode
        }
    }

    public struct User: Codable, Sendable, Hashable {
        public var clientCertificate: String?
        public var clientCertificateData: String?
        public var clientKey: String?
        public var clientKeyData: String?
        public var token: String?
        public var tokenFile: String?
        public var username: String?
        public var password: String?
        public var impersonate: String?
        public var impersonateGroups: [String]?
        public var authProvider: JSONValue?
        public var exec: ExecConfig?

        enum CodingKeys: String, CodingKey {
            case clientCertificate = "client-certificate"
            case clientCertificateData = "client-certificate-data"
            case clientKey = "client-key"
            case clientKeyData = "client-key-data"
            case token, tokenFile, username, password
            case impersonate = "as"
            case impersonateGroups = "as-groups"
            case authProvider = "auth-provider"
            case exec
        }

        public init() {}
    }

    public struct Context: Codable, Sendable, Hashable {
        public var cluster: String?
        public var user: String?
        public var namespace: String?

        public init(cluster: String? = nil, user: String? = nil, namespace: String? = nil) {
            self.cluster = cluster
            self.user = user
            self.namespace = namespace
        }
    }

    public var apiVersion: String?
    public var kind: String?
    public var currentContext: String?
    public var clusters: [NamedCluster]?
    public var users: [NamedUser]?
    public var contexts: [NamedContext]?

    enum CodingKeys: String, CodingKey {
        case apiVersion, kind, clusters, users, contexts
        case currentContext = "current-context"
    }

    public init() {}

    /// Parses YAML (or JSON, which is YAML); an empty text is an empty config, as in kubectl.
    public static func parse(_ text: String, path: String) throws -> KubeconfigFile {
        if text.allSatisfy(\.isWhitespace) { return KubeconfigFile() }
        do {
            return try YAMLDecoder().decode(KubeconfigFile.self, from: text)
        } catch let error as DecodingError {
            throw KubeconfigError.decoding(path: path, error)
        } catch {
            throw KubeconfigError(path: path, field: nil, problem: "is not valid YAML: \(error)")
        }
    }

    public func yaml() throws -> String {
        try YAMLEncoder().encode(self)
    }
}

// The list entries: `{name: x, cluster: {...}}` and so on.
extension KubeconfigFile {
    public struct NamedCluster: Codable, Sendable, Hashable {
        public var name: String
        public var cluster: Cluster?
        public init(name: String, cluster: Cluster) {
            self.name = name
            self.cluster = cluster
        }
    }

    public struct NamedUser: Codable, Sendable, Hashable {
        public var name: String
        public var user: User?
        public init(name: String, user: User) {
            self.name = name
            self.user = user
        }
    }

    public struct NamedContext: Codable, Sendable, Hashable {
        public var name: String
        public var context: Context?
        public init(name: String, context: Context) {
            self.name = name
            self.context = context
        }
    }
}

/// A kubeconfig that cannot be used: which file, which field, what is wrong. Nothing is ever changed on disk by
/// reading a kubeconfig.
public struct KubeconfigError: Error, Sendable, Hashable, CustomStringConvertible {
    /// The file, or a description of where the value came from (`KUBECONFIG`, flags).
    public var path: String
    /// The field in kubectl's spelling, e.g. `clusters[lab].cluster.certificate-authority`.
    public var field: String?
    public var problem: String
    public var hint: String?

    public init(path: String, field: String?, problem: String, hint: String? = nil) {
        self.path = path
        self.field = field
        self.problem = problem
        self.hint = hint
    }

    public var description: String {
        var text = "kubeconfig \(path)"
        if let field { text += ": \(field)" }
        text += " \(problem)"
        if let hint { text += "; \(hint)" }
        return text
    }

    static func decoding(path: String, _ error: DecodingError) -> KubeconfigError {
        func fieldPath(_ codingPath: [any CodingKey]) -> String {
            var text = ""
            for key in codingPath {
                if let index = key.intValue {
                    text += "[\(index)]"
                } else {
                    text += text.isEmpty ? key.stringValue : ".\(key.stringValue)"
                }
            }
            return text.isEmpty ? "(top level)" : text
        }
        switch error {
        case .typeMismatch(let type, let context):
            return KubeconfigError(
                path: path, field: fieldPath(context.codingPath), problem: "has the wrong type (expected \(type))")
        case .valueNotFound(let type, let context):
            return KubeconfigError(
                path: path, field: fieldPath(context.codingPath), problem: "is missing (expected \(type))")
        case .keyNotFound(let key, let context):
            return KubeconfigError(
                path: path, field: fieldPath(context.codingPath + [key]), problem: "is missing")
        case .dataCorrupted(let context):
            if let underlying = context.underlyingError {
                let detail = String(describing: underlying).split(separator: "\n").first ?? ""
                return KubeconfigError(path: path, field: nil, problem: "is not valid YAML: \(detail)")
            }
            return KubeconfigError(
                path: path, field: fieldPath(context.codingPath),
                problem: "cannot be read: \(context.debugDescription)")
        @unknown default:
            return KubeconfigError(path: path, field: nil, problem: "cannot be read: \(error)")
        }
    }
}
