import Foundation
import Glibc

/// Where ktctl keeps what it knows of its sessions on this machine: `~/.kt/` of the user running ktctl (root's
/// under sudo), laid out as kt-connect 0.3.7 lays it out, plus two folders of ours:
///
/// | path | what |
/// |---|---|
/// | `pid/<command>-<pid>.pid` | the pid of a running command, as kt-connect writes it; deleting the file stops that ktctl |
/// | `lock/<name>.lock` | `flock`ed by the session that holds it (one `connect` per directory) |
/// | `journal/<command>-<pid>.json` | every change the session made, written before it was made (`Journal`) |
/// | `status/<command>-<pid>.json` | what the session is doing now, rewritten twice a second (`StatusBoard`) |
public struct StateDirectory: Sendable, Hashable {
    public let root: String

    public init(_ root: String) {
        self.root = root
    }

    /// `~/.kt` of the effective user (from the password database, not `$HOME`: under sudo that is root's).
    public static var defaultRoot: String {
        if let entry = getpwuid(geteuid()), let home = entry.pointee.pw_dir {
            return String(cString: home) + "/.kt"
        }
        return NSHomeDirectory() + "/.kt"
    }

    public var pidDirectory: String { root + "/pid" }
    public var lockDirectory: String { root + "/lock" }
    public var journalDirectory: String { root + "/journal" }
    public var statusDirectory: String { root + "/status" }

    public func pidFile(command: String, pid: Int32) -> String { "\(pidDirectory)/\(command)-\(pid).pid" }
    public func lockFile(_ name: String) -> String { "\(lockDirectory)/\(name).lock" }
    public func journalFile(command: String, pid: Int32) -> String { "\(journalDirectory)/\(command)-\(pid).json" }
    public func statusFile(command: String, pid: Int32) -> String { "\(statusDirectory)/\(command)-\(pid).json" }

    /// Makes the folders (0700: they name the user's sessions and hold resolv.conf's original).
    public func prepare() throws {
        for directory in [root, pidDirectory, lockDirectory, journalDirectory, statusDirectory] {
            try FileManager.default.createDirectory(
                atPath: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        }
    }

    /// The journals on disk, oldest first.
    public func journals() -> [String] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: journalDirectory)) ?? []
        return names.filter { $0.hasSuffix(".json") }.sorted().map { "\(journalDirectory)/\($0)" }
    }

    /// The status files on disk.
    public func statusFiles() -> [String] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: statusDirectory)) ?? []
        return names.filter { $0.hasSuffix(".json") && !$0.hasPrefix(".") }.sorted().map { "\(statusDirectory)/\($0)" }
    }

    /// The pid files on disk.
    public func pidFiles() -> [String] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: pidDirectory)) ?? []
        return names.filter { $0.hasSuffix(".pid") }.sorted().map { "\(pidDirectory)/\($0)" }
    }
}

/// An exclusive `flock` on a file under `lock/`, held for as long as the session lives (the kernel drops it when the
/// process ends, however it ends). The holder writes its pid into the file right after taking it, so that the one
/// refused can name it.
public final class SessionLock: @unchecked Sendable {
    public let path: String
    private var fd: CInt

    private init(path: String, fd: CInt) {
        self.path = path
        self.fd = fd
    }

    /// Takes the lock now or throws `SessionError.busy` naming the holder; never waits for it.
    public static func take(_ state: StateDirectory, name: String, command: String) throws -> SessionLock {
        let path = state.lockFile(name)
        let fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        guard fd >= 0 else {
            throw SessionError.stateDirectory("cannot open \(path): \(String(cString: strerror(errno)))")
        }
        if flock(fd, LOCK_EX | LOCK_NB) != 0 {
            let code = errno
            defer { close(fd) }
            guard code == EWOULDBLOCK else {
                throw SessionError.stateDirectory("cannot lock \(path): \(String(cString: strerror(code)))")
            }
            throw SessionError.busy(command: command, holder: holder(of: fd), lockFile: path)
        }
        // Ours: our pid replaces whatever a previous holder left.
        let text = Array("\(getpid())\n".utf8)
        guard ftruncate(fd, 0) == 0, pwrite(fd, text, text.count, 0) == text.count else {
            close(fd)
            throw SessionError.stateDirectory("cannot write \(path): \(String(cString: strerror(errno)))")
        }
        fsync(fd)
        return SessionLock(path: path, fd: fd)
    }

    /// The holder's pid as it wrote it. The holder writes it just after taking the lock, so an empty file, or a
    /// pid that is gone (the previous holder's), is read again for up to a second.
    static func holder(of fd: CInt) -> Int32? {
        let deadline = ContinuousClock.now + .seconds(1)
        var last: Int32?
        repeat {
            var buffer = [UInt8](repeating: 0, count: 32)
            let count = pread(fd, &buffer, buffer.count, 0)
            if count > 0,
                let pid = Int32(
                    String(decoding: buffer[..<count], as: UTF8.self).trimmingCharacters(
                        in: .whitespacesAndNewlines))
            {
                last = pid
                if ProcessIdentity(pid: pid, startTime: nil).isAlive { return pid }
            }
            usleep(10_000)
        } while ContinuousClock.now < deadline
        return last
    }

    /// Lets the lock go (the file stays: removing it would let a third process lock a new file while a second
    /// still holds the old one).
    public func release() {
        guard fd >= 0 else { return }
        _ = ftruncate(fd, 0)
        flock(fd, LOCK_UN)
        close(fd)
        fd = -1
    }
}

/// What can go wrong with a session's own bookkeeping, in words that say what to do.
public enum SessionError: Error, CustomStringConvertible, Sendable {
    case busy(command: String, holder: Int32?, lockFile: String)
    case stateDirectory(String)
    case journal(String)
    /// The session could not go on (its Lease was deleted, say).
    case stopped(String)
    /// Some changes could not be undone; the journal keeps them.
    case unfinished([String])
    /// The cluster cannot give what the session needs (its time, say).
    case cluster(String)

    public var description: String {
        switch self {
        case .busy(let command, let holder, let lockFile):
            return "another ktctl \(command) is running"
                + (holder.map { " (pid \($0))" } ?? "")
                + " with this state directory (it holds \(lockFile)); nothing was changed; stop it first "
                + "(Ctrl-C in its terminal\(holder.map { ", or kill \($0)" } ?? ""))"
        case .stateDirectory(let why): return "the state directory: \(why); nothing was changed"
        case .journal(let why): return "the session journal: \(why)"
        case .stopped(let why): return why
        case .cluster(let why): return why
        case .unfinished(let what):
            return "some changes could not be undone (\(what.joined(separator: "; "))); run `ktctl clean` to finish"
        }
    }
}
