import Foundation
import Glibc

/// A long-running program inside a test namespace (a server, `ssh -N`), stopped and collected by the test; its
/// output goes to a file so a chatty program never blocks on a full pipe.
public final class BackgroundProcess: @unchecked Sendable {
    public let arguments: [String]
    private let process = Process()
    private let logPath: String

    /// Starts `arguments` inside `namespace`.
    public init(_ namespace: TestNamespace, _ arguments: [String], environment: [String: String]? = nil) throws {
        self.arguments = arguments
        logPath = NSTemporaryDirectory() + "kt-bg-\(getpid())-\(UInt32.random(in: 0..<UInt32.max)).log"
        FileManager.default.createFile(atPath: logPath, contents: nil)
        let log = try FileHandle(forWritingTo: URL(fileURLWithPath: logPath))
        process.executableURL = URL(fileURLWithPath: TestNamespace.findExecutable("ip") ?? "/usr/sbin/ip")
        // Foundation learns that a child exited when a descriptor the child inherited closes, and then blocks in
        // waitpid for it. OpenSSH's ssh and sshd close every inherited descriptor at start, which would leave
        // Foundation's monitor thread stuck on them and every later Process waiting forever. So the program runs
        // under a small shell that keeps the descriptor and passes SIGTERM on.
        process.arguments =
            ["netns", "exec", namespace.name, "sh", "-c", Self.supervisor, "supervisor"] + arguments
        if let environment { process.environment = environment }
        process.standardInput = FileHandle.nullDevice
        process.standardOutput = log
        process.standardError = log
        try runWithoutBlockedSignals(process)
        try? log.close()
    }

    /// Runs "$@" in the background, forwards TERM and INT to it, and exits with its status.
    static let supervisor =
        #"trap 'kill -TERM "$child" 2>/dev/null' TERM INT; "$@" & child=$!; wait "$child"; status=$?; "#
        + #"wait "$child" 2>/dev/null && status=$?; exit "$status""#

    public var isRunning: Bool { process.isRunning }
    public var pid: Int32 { process.processIdentifier }

    /// Sends `signal` to the program itself (not the shell that supervises it): SIGKILL to kill a relay abruptly,
    /// SIGSTOP to freeze it.
    public func signalProgram(_ signal: Int32) {
        let children = (try? String(contentsOfFile: "/proc/\(pid)/task/\(pid)/children", encoding: .utf8)) ?? ""
        for child in children.split(separator: " ").compactMap({ Int32($0) }) { kill(child, signal) }
    }

    /// Sends `signal` to every process below the supervising shell whose command name is `name` (for a program run
    /// under a wrapper that forks, such as `faketime`).
    public func signalDescendants(named name: String, _ signal: Int32) {
        for member in Self.descendants(of: pid) {
            let command = (try? String(contentsOfFile: "/proc/\(member)/comm", encoding: .utf8)) ?? ""
            if command.trimmingCharacters(in: .whitespacesAndNewlines) == name { kill(member, signal) }
        }
    }

    /// The program's own pid (the supervising shell's child), once it runs.
    public var programPID: Int32? {
        let children = (try? String(contentsOfFile: "/proc/\(pid)/task/\(pid)/children", encoding: .utf8)) ?? ""
        return children.split(separator: " ").compactMap({ Int32($0) }).first
    }

    /// Waits up to `timeout` seconds for the program to exit; its status, or nil if it still runs.
    public func waitForExit(timeout: Double) async -> Int32? {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if !process.isRunning { return process.terminationStatus }
            try? await Task.sleep(for: .milliseconds(20))
        }
        return process.isRunning ? nil : process.terminationStatus
    }

    /// What the program has written so far.
    public var output: String {
        (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? ""
    }

    /// Waits until the output contains `text` (a server's "listening" line) or `timeout` seconds pass.
    @discardableResult
    public func waitForOutput(_ text: String, timeout: Double = 10) -> Bool {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if output.contains(text) { return true }
            if !process.isRunning { return output.contains(text) }
            usleep(20_000)
        }
        return false
    }

    /// Waits as ``waitForOutput(_:timeout:)`` does, sleeping between looks instead of holding a thread of Swift's
    /// concurrency pool (the tests running beside this one share its few threads).
    @discardableResult
    public func waitForOutput(_ text: String, timeout: Double = 10) async -> Bool {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if output.contains(text) { return true }
            if !process.isRunning { return output.contains(text) }
            try? await Task.sleep(for: .milliseconds(20))
        }
        return false
    }

    /// SIGTERM, then SIGKILL after `grace` seconds, to the program and everything it started (a launcher such as
    /// pyenv's shim may fork rather than exec, and a grandchild left running would keep Foundation waiting); waits
    /// for the exit and removes the log. Returns the output.
    @discardableResult
    public func stop(grace: Double = 3) -> String {
        var family = Self.descendants(of: pid)
        if process.isRunning || !family.isEmpty {
            for member in family { kill(member, SIGTERM) }
            kill(pid, SIGTERM)
            let deadline = Date().addingTimeInterval(grace)
            while Date() < deadline, process.isRunning || family.contains(where: { kill($0, 0) == 0 }) {
                usleep(10_000)
            }
            family += Self.descendants(of: pid)
            for member in family { kill(member, SIGKILL) }
            if process.isRunning { kill(pid, SIGKILL) }
        }
        process.waitUntilExit()
        let text = output
        unlink(logPath)
        return text
    }

    /// Every process below `pid`, children first.
    static func descendants(of pid: Int32) -> [Int32] {
        let text = (try? String(contentsOfFile: "/proc/\(pid)/task/\(pid)/children", encoding: .utf8)) ?? ""
        let children = text.split(separator: " ").compactMap { Int32($0) }
        return children + children.flatMap { descendants(of: $0) }
    }

    /// The exit status once stopped.
    public var terminationStatus: Int32 { process.terminationStatus }

    deinit {
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
        unlink(logPath)
    }
}

/// The path of an executable this package built (`ktctl`, `kt-shadow`), debug or release, or nil.
/// An image archive `make images` wrote (`.build/images/<name>.tar`), or nil.
public func builtImage(_ name: String) -> String? {
    let path = "\(repositoryRoot)/.build/images/\(name).tar"
    return FileManager.default.fileExists(atPath: path) ? path : nil
}

public func builtExecutable(_ name: String) -> String? {
    let candidates = ["debug", "release"].map { "\(repositoryRoot)/.build/\($0)/\(name)" }
    return candidates.first { access($0, X_OK) == 0 }
}
