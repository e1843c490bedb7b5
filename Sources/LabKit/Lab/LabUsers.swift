import Foundation
import Glibc

/// `ktlab kubeconfig --user NAME`: a restricted user of a running lab. Its random bearer token is kept in the lab's
/// users file, which the server reads again when it meets a token it does not know; the user is in
/// `system:authenticated` only, so it may do nothing but discovery until RBAC grants more.
public enum LabUsers {
    /// How many random bytes a token has (256 bits, printed as 64 hex digits).
    static let tokenBytes = 32

    /// Makes NAME's token (or reuses the one it has) and writes its kubeconfig: for this machine
    /// (`https://127.0.0.1:<hostPort>`) or, with `workstation`, for the workstation namespace (the node's link
    /// address). Returns the kubeconfig's path.
    public static func kubeconfig(lab: String, user: String, workstation: Bool) throws -> String {
        try LabControl.checkName(lab)
        guard UserTokens.isValidName(user) else {
            throw LabControl.Failure(
                "user name \"\(user)\" must be 1-63 lower-case letters, digits, '-' or '.', starting and ending with "
                    + "a letter or digit; nothing was changed")
        }
        guard user != UserInfo.admin.name else {
            throw LabControl.Failure(
                "\"\(user)\" is the administrator's name (its kubeconfig is \(LabLayout.stateRoot)/\(lab)/kubeconfig); "
                    + "choose another; nothing was changed")
        }
        guard let state = LabState.read(lab) else {
            throw LabControl.Failure("lab \"\(lab)\" is not up (ktlab up --name \(lab)); nothing was changed")
        }
        let layout = state.layout
        let token = try withLock("\(layout.directory)/users.lock") {
            var tokens = try UserTokens.read(layout.usersFile)
            if let existing = tokens.token(of: user) { return existing }
            let token = newToken()
            tokens.users.append(.init(name: user, token: token))
            try tokens.write(layout.usersFile)
            return token
        }
        let server =
            workstation
            ? "https://\(layout.nodeLinkAddress):\(layout.apiPort)" : "https://127.0.0.1:\(layout.hostPort)"
        let path = layout.userKubeconfig(user, workstation: workstation)
        let text = try LabPKI.userKubeconfig(layout, server: server, user: user, token: token)
        try UserTokens.writePrivately(Data(text.utf8), to: path)
        return path
    }

    static func newToken() -> String {
        var generator = SystemRandomNumberGenerator()
        return (0..<tokenBytes).map { _ in String(format: "%02x", UInt8.random(in: 0...255, using: &generator)) }
            .joined()
    }

    /// Runs `body` holding an exclusive lock on `path` (two `ktlab kubeconfig --user` at once add both users).
    static func withLock<T>(_ path: String, _ body: () throws -> T) throws -> T {
        let lock = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        guard lock >= 0 else { throw LabControl.Failure("cannot open \(path): errno \(errno)") }
        defer { close(lock) }
        flock(lock, LOCK_EX)
        defer { flock(lock, LOCK_UN) }
        return try body()
    }
}
