import Foundation
import Glibc
import NIOConcurrencyHelpers

/// Who a request comes from: authentication's answer, and what the authorizer judges.
public struct UserInfo: Sendable, Hashable, CustomStringConvertible {
    public var name: String
    public var groups: [String]

    public init(name: String, groups: [String]) {
        self.name = name
        self.groups = groups
    }

    /// The lab's administrator: the admin bearer token and every client certificate the lab CA signed (kubeadm's
    /// `kubernetes-admin`, in the group that RBAC never refuses).
    public static let admin = UserInfo(
        name: "kubernetes-admin", groups: [RBACAuthorizer.privilegedGroup, UserInfo.authenticatedGroup])

    /// The group every authenticated user is in (the default ClusterRoleBindings of discovery name it).
    public static let authenticatedGroup = "system:authenticated"

    /// A user made by `ktlab kubeconfig --user NAME`: nothing but authenticated until RBAC grants more.
    public static func restricted(_ name: String) -> UserInfo {
        UserInfo(name: name, groups: [authenticatedGroup])
    }

    public var description: String { "\(name) (groups \(groups.joined(separator: ",")))" }
}

/// The lab's users file (`/run/ktlab/<lab>/users.json`, mode 0600): one random bearer token per user name. Written
/// by `ktlab kubeconfig --user`, read by the running server.
public struct UserTokens: Codable, Sendable, Hashable {
    public struct Entry: Codable, Sendable, Hashable {
        public var name: String
        public var token: String

        public init(name: String, token: String) {
            self.name = name
            self.token = token
        }
    }

    public var users: [Entry] = []

    public init(users: [Entry] = []) { self.users = users }

    /// The longest user name: a DNS label's length, which keeps `kubeconfig-ws-user-<name>` well inside a file
    /// name's 255 bytes.
    public static let maximumNameLength = 63

    /// User names are DNS-like, so that they are safe in file names, kubeconfig entries and RBAC subjects, and
    /// cannot pose as a system identity (`system:...` has a colon).
    public static func isValidName(_ name: String) -> Bool {
        name.utf8.count <= maximumNameLength
            && name.range(of: "^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$", options: .regularExpression) != nil
    }

    /// The file's users, or none when it does not exist; a file that cannot be read is an error naming it.
    public static func read(_ path: String) throws -> UserTokens {
        guard FileManager.default.fileExists(atPath: path) else { return UserTokens() }
        guard let data = FileManager.default.contents(atPath: path) else {
            throw CocoaError(.fileReadNoPermission, userInfo: [NSFilePathErrorKey: path])
        }
        return try JSONDecoder().decode(UserTokens.self, from: data)
    }

    public func write(_ path: String) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        try Self.writePrivately(try encoder.encode(self), to: path)
    }

    /// Writes a file whole: a temporary file made with mode 0600, renamed over the old one (a reader never sees
    /// half a file, and a token in it is never readable by others, not even for a moment).
    public static func writePrivately(_ data: Data, to path: String) throws {
        let temporary = "\(path).tmp-\(getpid())"
        let fd = open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw POSIXError(POSIXErrorCode(rawValue: errno) ?? .EIO) }
        let written = data.withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
        let synced = fsync(fd)
        close(fd)
        guard written == data.count, synced == 0, rename(temporary, path) == 0 else {
            let code = POSIXErrorCode(rawValue: errno) ?? .EIO
            unlink(temporary)
            throw POSIXError(code)
        }
    }

    public func token(of name: String) -> String? { users.first { $0.name == name }?.token }
}

/// Bearer tokens to users: the admin tokens given at start, and the users file, read again when a token is not
/// known and the file changed since it was last read (so `ktlab kubeconfig --user` works without a restart).
public final class TokenAuthenticator: Sendable {
    private struct FileStamp: Equatable {
        var device: UInt64
        var inode: UInt64
        var size: Int64
        var seconds: Int
        var nanoseconds: Int
    }

    private struct Cache {
        var stamp: FileStamp?
        var users: [String: UserInfo] = [:]
    }

    private let adminTokens: Set<String>
    private let userFile: String?
    private let cache = NIOLockedValueBox(Cache())
    /// Service-account tokens, and whether an account exists (a deleted account's token stops working).
    private let serviceAccounts: (tokens: ServiceAccountTokens, exists: @Sendable (String, String) -> Bool)?

    public init(
        adminTokens: Set<String>, userFile: String?,
        serviceAccounts: (tokens: ServiceAccountTokens, exists: @Sendable (String, String) -> Bool)? = nil
    ) {
        self.adminTokens = adminTokens
        self.userFile = userFile
        self.serviceAccounts = serviceAccounts
    }

    /// The user a bearer token stands for, or nil (401).
    public func user(forToken token: String) -> UserInfo? {
        if adminTokens.contains(token) { return .admin }
        if let serviceAccounts, let account = serviceAccounts.tokens.account(of: token) {
            guard serviceAccounts.exists(account.namespace, account.name) else { return nil }
            return ServiceAccountTokens.user(namespace: account.namespace, name: account.name)
        }
        guard let userFile else { return nil }
        return cache.withLockedValue { cache in
            if let user = cache.users[token] { return user }
            let stamp = Self.stamp(userFile)
            guard stamp != cache.stamp else { return nil }
            // Read before the stamp is kept: a file replaced meanwhile has a new stamp and is read again next time.
            guard let tokens = try? UserTokens.read(userFile) else { return nil }
            cache.stamp = stamp
            cache.users = [:]
            for entry in tokens.users where !entry.token.isEmpty && UserTokens.isValidName(entry.name) {
                cache.users[entry.token] = .restricted(entry.name)
            }
            return cache.users[token]
        }
    }

    private static func stamp(_ path: String) -> FileStamp? {
        var info = stat()
        guard stat(path, &info) == 0 else { return nil }
        return FileStamp(
            device: UInt64(info.st_dev), inode: UInt64(info.st_ino), size: Int64(info.st_size),
            seconds: info.st_mtim.tv_sec, nanoseconds: info.st_mtim.tv_nsec)
    }
}
