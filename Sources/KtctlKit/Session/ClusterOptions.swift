import Foundation

/// Where the cluster is and how ktctl's pods look (the global flags every command shares).
public struct ClusterOptions: Sendable {
    public var kubeconfig: String?
    public var context: String?
    /// nil: the context's namespace (then `default`).
    public var namespace: String?
    public var image: String
    public var imagePullSecret: String?
    public var serviceAccount: String?
    public var nodeSelector: [String: String] = [:]
    public var labels: [String: String] = [:]
    public var annotations: [String: String] = [:]
    public var quota = PodQuota()
    /// How long to wait for the shadow pod to be ready.
    public var timeout: Duration = .seconds(120)
    public var debug = false
    /// `--force-update` (kt-connect's `-f`): pull the image every time (`imagePullPolicy: Always`).
    public var forceUpdate = false
    public var imagePullPolicy: String { forceUpdate ? "Always" : "IfNotPresent" }

    public static let defaultImage = "kt-shadow:0.1.0"

    public init(image: String = ClusterOptions.defaultImage) {
        self.image = image
    }
}
