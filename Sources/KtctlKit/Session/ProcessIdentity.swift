import Foundation
import Glibc
import KtEngine

/// A process as this machine knows it: its pid and the time it started (`/proc/<pid>/stat` field 22, in clock ticks
/// since boot). The pair names one process for as long as the machine runs: a pid that comes back for another
/// process has another start time.
public struct ProcessIdentity: Codable, Sendable, Hashable, CustomStringConvertible {
    public var pid: Int32
    /// Clock ticks after boot; nil when `/proc` could not be read when it was recorded.
    public var startTime: UInt64?

    public init(pid: Int32, startTime: UInt64?) {
        self.pid = pid
        self.startTime = startTime
    }

    /// This process.
    public static var current: ProcessIdentity {
        let pid = getpid()
        return ProcessIdentity(pid: pid, startTime: startTime(of: pid))
    }

    public var description: String { "pid \(pid)" }

    /// What is known of the process now.
    public enum Liveness: Sendable, Hashable {
        /// It runs (or may: another user's process that `hidepid` hides, or one `kill` may not signal).
        case alive
        /// Verifiably gone: the kernel has no such pid, or the pid now belongs to a process that started later.
        case gone(String)
    }

    /// A process counts as gone only when that is certain: `kill(pid, 0)` says ESRCH (no such process, whoever owns
    /// it, `hidepid` or not), or `/proc/<pid>/stat` is readable and names another start time. EPERM (another user's
    /// process, a root session seen by a normal user) means it is alive.
    public var liveness: Liveness {
        if kill(pid, 0) != 0 && errno == ESRCH { return .gone("no process has pid \(pid)") }
        if let recorded = startTime, let now = Self.startTime(of: pid), now != recorded {
            return .gone("pid \(pid) now belongs to a process that started later")
        }
        return .alive
    }

    public var isAlive: Bool { liveness == .alive }

    /// Field 22 of `/proc/<pid>/stat`; nil when it cannot be read (gone, or hidden by `hidepid`).
    static func startTime(of pid: Int32) -> UInt64? {
        guard let text = ProcFile.read("/proc/\(pid)/stat") else { return nil }
        return parseStartTime(stat: text)
    }

    /// The start time in a `stat` line. The command (field 2) is in parentheses and may hold spaces and
    /// parentheses itself, so fields are counted after its last `)`.
    static func parseStartTime(stat text: String) -> UInt64? {
        guard let close = text.lastIndex(of: ")") else { return nil }
        let fields = text[text.index(after: close)...].split(separator: " ")
        // After ")", fields start at 3 (state); 22 is at index 19.
        guard fields.count > 19 else { return nil }
        return UInt64(fields[19])
    }
}
