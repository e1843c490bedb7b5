import Foundation

/// Everything needed to talk to one cluster as one user: the result of choosing a context in a kubeconfig, with
/// every file it names already read and checked.
public struct ClusterAccess: Sendable, Hashable {
    public var contextName: String
    public var clusterName: String
    public var userName: String
    /// `https://host:port`, without the path.
    public var server: URL
    /// A path prefix the server was given under (`https://host/k8s/clusters/c1` → `/k8s/clusters/c1`), or "".
    public var apiPrefix: String
    public var namespace: String
    public var tls: TLSSettings
    public var proxyURL: URL?
    public var credentials: Credentials
    public var disableCompression: Bool
    /// The kubeconfig file the cluster entry came from (named in errors).
    public var clusterOrigin: String

    /// Trust and identity for the TLS connection.
    public struct TLSSettings: Sendable, Hashable {
        /// PEM bytes of the CA bundle, when one is configured.
        public var certificateAuthority: [UInt8]?
        /// Where the CA came from, e.g. `/home/u/.kube/ca.crt` or `certificate-authority-data of cluster "lab" in
        /// /home/u/.kube/config`.
        public var certificateAuthoritySource: String?
        public var insecureSkipVerify: Bool
        /// The name to verify the certificate against and to send as SNI, when it is not the server's host.
        public var serverName: String?
        public var clientCertificate: [UInt8]?
        public var clientKey: [UInt8]?
        public var clientCertificateSource: String?

        public init(insecureSkipVerify: Bool = false) {
            self.insecureSkipVerify = insecureSkipVerify
        }
    }

    /// How requests are authenticated, besides a TLS client certificate.
    public enum Credentials: Sendable, Hashable {
        case none
        /// A bearer token; when `file` is set, the file is re-read (at most once a minute) and wins when readable.
        case bearer(token: String, file: String?)
        case basic(username: String, password: String)
        case exec(ExecPluginConfiguration)
    }

    public init(
        server: URL, namespace: String = "default", tls: TLSSettings = TLSSettings(),
        credentials: Credentials = .none
    ) {
        self.contextName = ""
        self.clusterName = ""
        self.userName = ""
        self.server = server
        self.apiPrefix = ""
        self.namespace = namespace
        self.tls = tls
        self.proxyURL = nil
        self.credentials = credentials
        self.disableCompression = false
        self.clusterOrigin = ""
    }

    init(
        contextName: String, clusterName: String, cluster: Kubeconfig.Entry<KubeconfigFile.Cluster>,
        userName: String, user: Kubeconfig.Entry<KubeconfigFile.User>, namespace: String
    ) throws {
        self.contextName = contextName
        self.clusterName = clusterName
        self.userName = userName
        self.namespace = namespace
        self.clusterOrigin = cluster.origin
        let clusterField = "clusters[\(clusterName)].cluster"
        let userField = "users[\(userName)].user"

        // Server URL: scheme and host required; a path is the API prefix (query and fragment dropped).
        guard let serverText = cluster.value.server, !serverText.isEmpty else {
            throw KubeconfigError(path: cluster.origin, field: "\(clusterField).server", problem: "is not set")
        }
        guard let components = URLComponents(string: serverText), let scheme = components.scheme?.lowercased(),
            scheme == "https" || scheme == "http", let host = components.host, !host.isEmpty
        else {
            throw KubeconfigError(
                path: cluster.origin, field: "\(clusterField).server",
                problem: "is \"\(serverText)\", not an https:// (or http://) URL with a host")
        }
        var base = URLComponents()
        base.scheme = scheme
        base.host = host
        base.port = components.port ?? (scheme == "https" ? 443 : 80)
        guard let url = base.url else {
            throw KubeconfigError(
                path: cluster.origin, field: "\(clusterField).server", problem: "is not a valid URL: \(serverText)")
        }
        server = url
        let path = components.percentEncodedPath
        apiPrefix = path.count > 1 ? String(path.hasSuffix("/") ? path.dropLast() : path[...]) : ""
        disableCompression = cluster.value.disableCompression ?? false

        // TLS.
        var tls = TLSSettings(insecureSkipVerify: cluster.value.insecureSkipTLSVerify ?? false)
        tls.serverName = cluster.value.tlsServerName.flatMap { $0.isEmpty ? nil : $0 }
        if let data = cluster.value.certificateAuthorityData, !data.isEmpty {
            tls.certificateAuthority = try Self.base64(
                data, origin: cluster.origin, field: "\(clusterField).certificate-authority-data")
            tls.certificateAuthoritySource =
                "certificate-authority-data of cluster \"\(clusterName)\" in \(cluster.origin)"
        } else if let file = cluster.value.certificateAuthority, !file.isEmpty {
            tls.certificateAuthority = try Self.read(
                file, origin: cluster.origin, field: "\(clusterField).certificate-authority")
            tls.certificateAuthoritySource = file
        }
        if tls.insecureSkipVerify && tls.certificateAuthority != nil {
            throw KubeconfigError(
                path: cluster.origin, field: "\(clusterField).insecure-skip-tls-verify",
                problem: "is true while a certificate authority is also set (kubectl refuses this too)",
                hint: "remove one of the two")
        }
        if scheme == "https", tls.certificateAuthority == nil, !tls.insecureSkipVerify {
            tls.certificateAuthoritySource = "the system's trusted CAs"
        }

        // Client certificate: data wins over file; a certificate needs its key.
        let userValue = user.value
        if let data = userValue.clientCertificateData, !data.isEmpty {
            tls.clientCertificate = try Self.base64(
                data, origin: user.origin, field: "\(userField).client-certificate-data")
            tls.clientCertificateSource = "client-certificate-data of user \"\(userName)\" in \(user.origin)"
        } else if let file = userValue.clientCertificate, !file.isEmpty {
            tls.clientCertificate = try Self.read(file, origin: user.origin, field: "\(userField).client-certificate")
            tls.clientCertificateSource = file
        }
        if let data = userValue.clientKeyData, !data.isEmpty {
            tls.clientKey = try Self.base64(data, origin: user.origin, field: "\(userField).client-key-data")
        } else if let file = userValue.clientKey, !file.isEmpty {
            tls.clientKey = try Self.read(file, origin: user.origin, field: "\(userField).client-key")
        }
        if (tls.clientCertificate == nil) != (tls.clientKey == nil) {
            throw KubeconfigError(
                path: user.origin,
                field: tls.clientCertificate == nil ? "\(userField).client-certificate" : "\(userField).client-key",
                problem: "is missing: a client certificate and its key go together")
        }
        self.tls = tls

        // Proxy.
        if let proxy = cluster.value.proxyURL, !proxy.isEmpty {
            guard let proxyURL = URL(string: proxy), let proxyScheme = proxyURL.scheme?.lowercased(),
                ["http", "https", "socks5"].contains(proxyScheme), proxyURL.host != nil
            else {
                throw KubeconfigError(
                    path: cluster.origin, field: "\(clusterField).proxy-url",
                    problem: "is \"\(proxy)\"; expected http://, https:// or socks5:// with a host")
            }
            self.proxyURL = proxyURL
        } else {
            self.proxyURL = nil
        }

        // Credentials: one method only; exec is ignored when another is configured (as client-go does).
        var methods: [String] = []
        if tls.clientCertificate != nil { methods.append("client certificate") }
        let token = userValue.token.flatMap { $0.isEmpty ? nil : $0 }
        let tokenFile = userValue.tokenFile.flatMap { $0.isEmpty ? nil : $0 }
        if token != nil || tokenFile != nil { methods.append("token") }
        if let username = userValue.username, !username.isEmpty { methods.append("username/password") }
        if userValue.authProvider != nil { methods.append("auth-provider") }
        if methods.count > 1 {
            throw KubeconfigError(
                path: user.origin, field: userField,
                problem: "has more than one authentication method (\(methods.joined(separator: ", ")))",
                hint: "keep one")
        }
        if userValue.authProvider != nil {
            throw KubeconfigError(
                path: user.origin, field: "\(userField).auth-provider",
                problem: "is a legacy auth provider, which neither kubectl (since 1.26) nor ktctl supports",
                hint: "use an exec credential plugin (for GKE: gke-gcloud-auth-plugin)")
        }
        if let token {
            credentials = .bearer(token: token, file: tokenFile)
        } else if let tokenFile {
            let bytes = try Self.read(tokenFile, origin: user.origin, field: "\(userField).tokenFile")
            credentials = .bearer(
                token: String(decoding: bytes, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines),
                file: tokenFile)
        } else if let username = userValue.username, !username.isEmpty {
            credentials = .basic(username: username, password: userValue.password ?? "")
        } else if let exec = userValue.exec, methods.isEmpty {
            credentials = .exec(
                try ExecPluginConfiguration(
                    exec, origin: user.origin, field: "\(userField).exec",
                    cluster: cluster.value, clusterCA: tls.certificateAuthority, server: serverText))
        } else {
            credentials = .none
        }
    }

    static func read(_ path: String, origin: String, field: String) throws -> [UInt8] {
        guard let data = FileManager.default.contents(atPath: path) else {
            let reason = FileManager.default.fileExists(atPath: path) ? "is not readable" : "does not exist"
            throw KubeconfigError(
                path: origin, field: field, problem: "names \(path), which \(reason)",
                hint: "fix the path (relative paths are relative to the kubeconfig's own directory)")
        }
        return Array(data)
    }

    static func base64(_ text: String, origin: String, field: String) throws -> [UInt8] {
        let compact = text.filter { !$0.isWhitespace }
        guard let data = Data(base64Encoded: compact) else {
            throw KubeconfigError(path: origin, field: field, problem: "is not valid base64")
        }
        return Array(data)
    }

    /// The URL of an API path on this cluster (prefix included).
    public func url(path: String, query: [(String, String)] = []) -> URL {
        var components = URLComponents(url: server, resolvingAgainstBaseURL: false) ?? URLComponents()
        components.percentEncodedPath = apiPrefix + path
        if !query.isEmpty {
            components.percentEncodedQuery = APIRequest.encodeQuery(query)
        }
        return components.url ?? server
    }
}
