import Foundation
import Glibc

/// Who a session is: the names, labels and owner annotations of everything it creates in the cluster.
public struct SessionIdentity: Sendable, Hashable {
    /// Five lower-case letters, as kt-connect's `kt-connect-shadow-<rand5>`.
    public var id: String
    /// The person: `SUDO_USER` under sudo, else the user running ktctl.
    public var user: String
    public var host: String
    public var pid: Int32

    public init(id: String, user: String, host: String, pid: Int32) {
        self.id = id
        self.user = user
        self.host = host
        self.pid = pid
    }

    public static func fresh() -> SessionIdentity {
        let letters = Array("abcdefghijklmnopqrstuvwxyz")
        var generator = SystemRandomNumberGenerator()
        let id = String((0..<5).map { _ in letters[Int(generator.next(upperBound: UInt(letters.count)))] })
        return SessionIdentity(id: id, user: currentUser, host: ProcessInfo.processInfo.hostName, pid: getpid())
    }

    /// The person running ktctl: the one who ran sudo, else the effective user's name.
    static var currentUser: String {
        if let sudo = ProcessInfo.processInfo.environment["SUDO_USER"], !sudo.isEmpty { return sudo }
        if let entry = getpwuid(geteuid()), let name = entry.pointee.pw_name { return String(cString: name) }
        return ProcessInfo.processInfo.environment["USER"] ?? "uid \(geteuid())"
    }

    /// The Lease's `holderIdentity`: `alice@laptop pid 4242 session abcde`.
    public var holder: String { "\(user)@\(host) pid \(pid) session \(id)" }

    /// The labels every object of the session carries.
    public func labels(role: String) -> [String: String] {
        [SessionLabels.managedBy: SessionLabels.manager, SessionLabels.role: role, SessionLabels.session: id]
    }

    /// The owner annotations every object of the session carries.
    public var annotations: [String: String] {
        [SessionLabels.user: user, SessionLabels.host: host]
    }
}

/// Labels and annotations every object a ktctl session creates carries (DESIGN.md §5 and §12).
public enum SessionLabels {
    public static let managedBy = "app.kubernetes.io/managed-by"
    /// The value of `managedBy` on everything ktctl makes.
    public static let manager = "ktctl"
    public static let role = "ktctl.io/role"
    public static let session = "ktctl.io/session"
    public static let user = "ktctl.io/user"
    public static let host = "ktctl.io/host"
}
