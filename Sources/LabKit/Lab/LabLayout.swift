import Foundation
import KubeKit

/// Names, addresses and paths of one lab, all derived from its name and slot, so that `down` can find everything
/// `up` made even when `up` crashed half way.
public struct LabLayout: Codable, Sendable, Hashable {
    public var name: String
    /// 0..<64: picks the link network between the node and the workstation and the host port, so that labs with
    /// different names run side by side.
    public var slot: Int
    public var podCIDR: String
    public var serviceCIDR: String

    public init(name: String, slot: Int, podCIDR: String = "10.244.0.0/16", serviceCIDR: String = "10.96.0.0/12") {
        self.name = name
        self.slot = slot
        self.podCIDR = podCIDR
        self.serviceCIDR = serviceCIDR
    }

    public static let stateRoot = "/run/ktlab"

    public var directory: String { "\(Self.stateRoot)/\(name)" }
    public var stateFile: String { "\(directory)/state.json" }
    public var logFile: String { "\(directory)/server.log" }
    public var pkiDirectory: String { "\(directory)/pki" }
    public var hostKubeconfig: String { "\(directory)/kubeconfig" }
    public var workstationKubeconfig: String { "\(directory)/kubeconfig-ws" }
    public var podsDirectory: String { "\(directory)/pods" }
    /// Image archives loaded into this lab (`ktlab image load`).
    public var imagesDirectory: String { "\(directory)/images" }
    /// Images unpacked for crun, one tree per digest.
    public var rootfsDirectory: String { "\(directory)/rootfs" }
    /// crun's state (`--root`).
    public var runtimeDirectory: String { "\(directory)/crun" }
    /// Restricted users' bearer tokens (`UserTokens`, mode 0600), made by `ktlab kubeconfig --user`.
    public var usersFile: String { "\(directory)/users.json" }

    /// The kubeconfig of a user made by `ktlab kubeconfig --user`, for this machine or for the workstation.
    public func userKubeconfig(_ user: String, workstation: Bool) -> String {
        "\(directory)/kubeconfig-\(workstation ? "ws-" : "")user-\(user)"
    }

    public var nodeNamespace: String { "\(name)-node" }
    public var workstationNamespace: String { "\(name)-ws" }
    public func podNamespace(_ index: Int) -> String { "\(name)-pod-\(index)" }

    /// True for a namespace this lab made (node, workstation, or a pod's).
    public func owns(namespace: String) -> Bool {
        if namespace == nodeNamespace || namespace == workstationNamespace { return true }
        let prefix = "\(name)-pod-"
        return namespace.hasPrefix(prefix) && !namespace.dropFirst(prefix.count).isEmpty
            && namespace.dropFirst(prefix.count).allSatisfy(\.isNumber)
    }

    /// The node's end of the node–workstation link; the API server listens here for the workstation.
    public var nodeLinkAddress: String { "172.31.\(slot).1" }
    public var workstationLinkAddress: String { "172.31.\(slot).2" }
    public var linkPrefix: Int { 30 }
    public var apiPort: Int { 6443 }
    /// The API server's port on the host's 127.0.0.1.
    public var hostPort: Int { 16443 + slot }

    /// The node's pod range (`spec.podCIDR`): the first /24 of the pod CIDR; the bridge takes its `.1`.
    public var nodePodCIDR: String {
        let base = podCIDR.split(separator: "/").first.map(String.init) ?? "10.244.0.0"
        let octets = base.split(separator: ".")
        return octets.count == 4 ? "\(octets[0]).\(octets[1]).\(octets[2]).0/24" : "10.244.0.0/24"
    }

    public var bridgeAddress: String {
        let octets = nodePodCIDR.split(separator: "/")[0].split(separator: ".")
        return "\(octets[0]).\(octets[1]).\(octets[2]).1"
    }

    /// The cluster DNS service address: the service CIDR's tenth address (kube-dns's 10.96.0.10).
    public var dnsAddress: String {
        let base = serviceCIDR.split(separator: "/").first.map(String.init) ?? "10.96.0.0"
        let octets = base.split(separator: ".")
        return octets.count == 4 ? "\(octets[0]).\(octets[1]).\(octets[2]).10" : "10.96.0.10"
    }

    public static let bridgeName = "kt-br0"
    public static let token = "ktlab-admin-token"
}

/// What `up` recorded: the layout, the server's pid, and when.
public struct LabState: Codable, Sendable {
    public var layout: LabLayout
    public var serverPID: Int32?
    public var created: String

    public static func read(_ name: String) -> LabState? {
        let path = "\(LabLayout.stateRoot)/\(name)/state.json"
        guard let data = FileManager.default.contents(atPath: path) else { return nil }
        return try? JSONDecoder().decode(LabState.self, from: data)
    }

    public func write() throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        try FileManager.default.createDirectory(atPath: layout.directory, withIntermediateDirectories: true)
        try encoder.encode(self).write(to: URL(fileURLWithPath: layout.stateFile))
    }

    /// Every lab with a state directory.
    public static func all() -> [LabState] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: LabLayout.stateRoot)) ?? []
        return names.sorted().compactMap { read($0) }
    }
}
