import Foundation
import Glibc

/// A long-running program inside a test namespace (a server, `ssh -N`), stopped and collected by the test; its
/// output goes to a file so a chatty program never blocks on a full pipe.
public final class BackgroundProcess: @unchecked Sendable {
    public let arguments: [String]
    private let process = Process()
    private let logPath: String

    /// Starts `arguments` inside `namespace` (`ip netns exec` replaces itself with the program, so the process is the
    /// program).
    public init(_ namespace: TestNamespace, _ arguments: [String], environment: [String: String]? = nil) throws {
        self.arguments = arguments
        logPath = NSTemporaryDirectory() + "kt-bg-\(getpid())-\(UInt32.random(in: 0..<UInt32.max)).log"
        FileManager.default.createFile(atPath: logPath, contents: nil)
        let log = try FileHandle(forWritingTo: URL(fileURLWithPath: logPath))
        process.executableURL = URL(fileURLWithPath: TestNamespace.findExecutable("ip") ?? "/usr/sbin/ip")
        process.arguments = ["netns", "exec", namespace.name] + arguments
        if let environment { process.environment = environment }
        process.standardInput = FileHandle.nullDevice
        process.standardOutput = log
        process.standardError = log
        try process.run()
        try? log.close()
    }

    public var isRunning: Bool { process.isRunning }
    public var pid: Int32 { process.processIdentifier }

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

    /// SIGTERM, then SIGKILL after `grace` seconds; waits for the exit and removes the log. Returns the output.
    @discardableResult
    public func stop(grace: Double = 3) -> String {
        if process.isRunning {
            kill(process.processIdentifier, SIGTERM)
            let deadline = Date().addingTimeInterval(grace)
            while process.isRunning, Date() < deadline { usleep(10_000) }
            if process.isRunning { kill(process.processIdentifier, SIGKILL) }
        }
        process.waitUntilExit()
        let text = output
        unlink(logPath)
        return text
    }

    /// The exit status once stopped.
    public var terminationStatus: Int32 { process.terminationStatus }

    deinit {
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
        unlink(logPath)
    }
}

/// The path of an executable this package built (`ktctl`, `kt-shadow`), debug or release, or nil.
public func builtExecutable(_ name: String) -> String? {
    let candidates = ["debug", "release"].map { "\(repositoryRoot)/.build/\($0)/\(name)" }
    return candidates.first { access($0, X_OK) == 0 }
}
