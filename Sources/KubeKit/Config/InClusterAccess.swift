import Foundation

extension ClusterAccess {
    /// Where a pod finds its service account's token, CA and namespace (the kubelet mounts them there).
    public static let serviceAccountDirectory = "/var/run/secrets/kubernetes.io/serviceaccount"
    /// ktlab runs containers without a root of their own, so its kubelet names the mounted directory here (the
    /// standard path is tried first).
    public static let labServiceAccountVariable = "KTLAB_SERVICEACCOUNT_DIR"

    /// The API server as a pod sees it, as client-go's `rest.InClusterConfig` finds it: `KUBERNETES_SERVICE_HOST` and
    /// `KUBERNETES_SERVICE_PORT`, and the service account's token (re-read as it rotates), CA and namespace.
    public static func inCluster(environment: [String: String] = ProcessInfo.processInfo.environment) throws
        -> ClusterAccess
    {
        guard let host = environment["KUBERNETES_SERVICE_HOST"], !host.isEmpty,
            let port = environment["KUBERNETES_SERVICE_PORT"].flatMap(Int.init)
        else {
            throw KubeconfigError(
                path: "the environment", field: "KUBERNETES_SERVICE_HOST",
                problem: "is not set: this is not running in a pod (in-cluster configuration needs it and "
                    + "KUBERNETES_SERVICE_PORT)")
        }
        var directory = serviceAccountDirectory
        if !FileManager.default.fileExists(atPath: "\(directory)/token"),
            let lab = environment[labServiceAccountVariable], !lab.isEmpty
        {
            directory = lab
        }
        let tokenFile = "\(directory)/token"
        let token = try read(tokenFile, origin: "the pod", field: "the service account token")
        var components = URLComponents()
        components.scheme = "https"
        // An IPv6 host goes in brackets.
        components.host = host.contains(":") ? "[\(host)]" : host
        components.port = port
        guard let server = components.url else {
            throw KubeconfigError(
                path: "the environment", field: "KUBERNETES_SERVICE_HOST", problem: "'\(host)' is not a host")
        }
        var tls = TLSSettings()
        tls.certificateAuthority = try read("\(directory)/ca.crt", origin: "the pod", field: "the service account CA")
        tls.certificateAuthoritySource = "\(directory)/ca.crt"
        let namespace =
            (FileManager.default.contents(atPath: "\(directory)/namespace").map { String(decoding: $0, as: UTF8.self) }
            ?? "default").trimmingCharacters(in: .whitespacesAndNewlines)
        var access = ClusterAccess(
            server: server, namespace: namespace, tls: tls,
            credentials: .bearer(
                token: String(decoding: token, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines),
                file: tokenFile))
        access.contextName = "in-cluster"
        access.clusterOrigin = directory
        return access
    }
}

extension Lease {
    /// When the holder last renewed it (`renewTime`, else `acquireTime`, else its creation), by the API server's
    /// clock as the holder wrote it.
    public var renewed: Date {
        spec?.renewTime.flatMap(MicroTime.parse) ?? spec?.acquireTime.flatMap(MicroTime.parse)
            ?? metadata.creationTimestamp.flatMap(RFC3339.parse) ?? .distantPast
    }

    /// Whether the holder has gone longer than its `leaseDurationSeconds` (default `defaultDuration`) without
    /// renewing, at `serverNow` (the API server's time, from the `Date` of an answer).
    public func isExpired(at serverNow: Date, defaultDuration: Int) -> Bool {
        serverNow.timeIntervalSince(renewed) > TimeInterval(spec?.leaseDurationSeconds ?? defaultDuration)
    }
}
