import Crypto
import Foundation
import KubeKit

/// The lab's service-account tokens: `ktsa.<namespace>.<name>.<mac>`, where the mac is an HMAC-SHA256 of
/// `<namespace>/<name>` under a key the lab makes when it starts (so a token names its account and cannot be forged,
/// and none outlives the lab). The kubelet mounts one into each pod that asks for it; the API server takes it as the
/// user `system:serviceaccount:<namespace>:<name>` while that ServiceAccount exists, as a token controller would.
public struct ServiceAccountTokens: Sendable {
    /// The key's bytes (SymmetricKey is not Sendable).
    let secret: [UInt8]

    public init() {
        secret = SymmetricKey(size: .bits256).withUnsafeBytes { Array($0) }
    }

    var key: SymmetricKey { SymmetricKey(data: secret) }

    static let prefix = "ktsa."

    public func token(namespace: String, name: String) -> String {
        "\(Self.prefix)\(namespace).\(name).\(mac(namespace, name))"
    }

    func mac(_ namespace: String, _ name: String) -> String {
        let code = HMAC<SHA256>.authenticationCode(for: Data("\(namespace)/\(name)".utf8), using: key)
        return code.map { String(format: "%02x", $0) }.joined()
    }

    /// The account a token names, when it is one of ours (namespaces and names are DNS labels: no dots).
    public func account(of token: String) -> (namespace: String, name: String)? {
        guard token.hasPrefix(Self.prefix) else { return nil }
        let parts = token.dropFirst(Self.prefix.count).split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 3, !parts[0].isEmpty, !parts[1].isEmpty else { return nil }
        let (namespace, name) = (String(parts[0]), String(parts[1]))
        // Compared in constant time.
        let expected = Array(mac(namespace, name).utf8)
        let given = Array(parts[2].utf8)
        guard expected.count == given.count else { return nil }
        var difference: UInt8 = 0
        for index in expected.indices { difference |= expected[index] ^ given[index] }
        return difference == 0 ? (namespace, name) : nil
    }

    /// The user a service account authenticates as.
    public static func user(namespace: String, name: String) -> UserInfo {
        UserInfo(
            name: "system:serviceaccount:\(namespace):\(name)",
            groups: ["system:serviceaccounts", "system:serviceaccounts:\(namespace)", UserInfo.authenticatedGroup])
    }
}
