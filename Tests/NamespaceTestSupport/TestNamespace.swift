import Foundation
import Glibc

/// A network namespace made for one test and removed after it, even when the test fails.
///
/// Tests touch only namespaces they made (and loopback inside them): never the host's own network.
public final class TestNamespace: @unchecked Sendable {
    public let name: String

    /// Why namespace tests cannot run here, or `nil` when they can. CI runs as root with iproute2 installed, so
    /// there they always run.
    public static let unavailableReason: String? = {
        if getuid() != 0 { return "needs root to create network namespaces" }
        if findExecutable("ip") == nil { return "needs iproute2's `ip`" }
        return nil
    }()

    /// Makes `<prefix>-<pid>-<random>` with loopback up.
    public init(prefix: String) throws {
        _ = Self.reapedStaleNamespaces
        name = "\(prefix)-\(getpid())-\(UInt32.random(in: 0..<UInt32.max) % 100_000)"
        try Self.check(Self.run(["ip", "netns", "add", name]))
        do {
            try Self.check(Self.run(["ip", "-n", name, "link", "set", "lo", "up"]))
        } catch {
            delete()
            throw error
        }
    }

    /// A namespace someone else made and removes (a ktlab lab's workstation namespace), to run commands and
    /// background programs in; `delete()` must not be called on it.
    public init(existing name: String) {
        self.name = name
    }

    /// Namespaces this project's tests and benchmarks name `kt…-<pid>-<n>`. When the process that made one was
    /// killed before it could clean up (a signal, a crash), the next run removes it and stops what runs inside, so
    /// a machine never accumulates them. Runs once per process.
    static let reapedStaleNamespaces: Int = {
        guard let list = try? run(["ip", "netns", "list"]) else { return 0 }
        var reaped = 0
        for line in list.output.split(separator: "\n") {
            let name = String(line.split(separator: " ").first ?? "")
            let parts = name.split(separator: "-")
            guard name.hasPrefix("kt"), parts.count >= 3, let pid = Int32(parts[parts.count - 2]),
                Int(parts[parts.count - 1]) != nil, pid != getpid(), kill(pid, 0) != 0, errno == ESRCH
            else { continue }
            if let pids = try? run(["ip", "netns", "pids", name]) {
                for process in pids.output.split(separator: "\n").compactMap({ Int32($0) }) { kill(process, SIGKILL) }
            }
            _ = try? run(["ip", "netns", "del", name])
            reaped += 1
        }
        return reaped
    }()

    /// Stops every process still inside, then removes the namespace.
    public func delete() {
        if let pids = try? Self.run(["ip", "netns", "pids", name]) {
            for process in pids.output.split(separator: "\n").compactMap({ Int32($0) }) { kill(process, SIGKILL) }
        }
        _ = try? Self.run(["ip", "netns", "del", name])
    }

    /// Runs a command inside the namespace.
    public func run(_ arguments: [String], timeout: Double = 20) throws -> CommandResult {
        try Self.run(["ip", "netns", "exec", name] + arguments, timeout: timeout)
    }

    /// Runs a command inside the namespace, waiting on a thread of its own (see ``run(_:timeout:)-static``).
    public func run(_ arguments: [String], timeout: Double = 20) async throws -> CommandResult {
        try await Self.run(["ip", "netns", "exec", name] + arguments, timeout: timeout)
    }

    // MARK: - Entering

    private typealias SetNamespace = @convention(c) (CInt, CInt) -> CInt
    /// `setns(2)`; Glibc's Swift module does not export it (it is behind _GNU_SOURCE), so it is looked up.
    private static let setns: SetNamespace = {
        guard let symbol = dlsym(dlopen(nil, RTLD_NOW), "setns") else { fatalError("libc has no setns") }
        return unsafeBitCast(symbol, to: SetNamespace.self)
    }()
    private static let newNetworkNamespace: CInt = 0x4000_0000  // CLONE_NEWNET

    /// Runs `body` on a fresh thread that has entered this namespace, and returns its result. Sockets made in
    /// `body` belong to this namespace for their whole life; the thread ends afterwards, so no other code ever
    /// runs in the namespace by accident.
    public func inside<T: Sendable>(_ body: @escaping @Sendable () throws -> T) throws -> T {
        let fd = open("/run/netns/\(name)", O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw TestNamespaceError("open /run/netns/\(name): errno \(errno)") }
        defer { close(fd) }
        let box = ResultBox<T>()
        let done = DispatchSemaphore(value: 0)
        let thread = Thread {
            if Self.setns(fd, Self.newNetworkNamespace) != 0 {
                box.result = .failure(TestNamespaceError("setns: errno \(errno)"))
            } else {
                box.result = Result { try body() }
            }
            done.signal()
        }
        thread.start()
        done.wait()
        guard let result = box.result else { throw TestNamespaceError("thread ended without a result") }
        return try result.get()
    }

    // MARK: - Commands

    public struct CommandResult: Sendable {
        public var status: Int32
        public var output: String
        public var error: String
    }

    public static func findExecutable(_ name: String) -> String? {
        if name.contains("/") { return access(name, X_OK) == 0 ? name : nil }
        for directory in ["/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"] {
            let path = directory + "/" + name
            if access(path, X_OK) == 0 { return path }
        }
        return nil
    }

    /// Runs a command to completion on a thread of its own, so that the wait does not hold one of Swift's few
    /// concurrency threads, which every test running beside this one shares (a test that waited 4 s for a command
    /// there held back another's API calls until its watch had ended).
    public static func run(_ arguments: [String], timeout: Double = 20) async throws -> CommandResult {
        try await withCheckedThrowingContinuation { continuation in
            Thread { continuation.resume(with: Result { try blockingRun(arguments, timeout: timeout) }) }.start()
        }
    }

    /// Runs a command to completion (killing it after `timeout` seconds) and collects its output.
    public static func run(_ arguments: [String], timeout: Double = 20) throws -> CommandResult {
        try blockingRun(arguments, timeout: timeout)
    }

    static func blockingRun(_ arguments: [String], timeout: Double = 20) throws -> CommandResult {
        guard let executable = findExecutable(arguments[0]) else {
            throw TestNamespaceError("\(arguments[0]) not found")
        }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = Array(arguments.dropFirst())
        let output = Pipe()
        let error = Pipe()
        process.standardOutput = output
        process.standardError = error
        try runWithoutBlockedSignals(process)
        let killer = DispatchWorkItem { if process.isRunning { process.terminate() } }
        DispatchQueue.global().asyncAfter(deadline: .now() + timeout, execute: killer)
        let outData = output.fileHandleForReading.readDataToEndOfFile()
        let errData = error.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        killer.cancel()
        return CommandResult(
            status: process.terminationStatus, output: String(decoding: outData, as: UTF8.self),
            error: String(decoding: errData, as: UTF8.self))
    }

    @discardableResult
    public static func check(_ result: CommandResult) throws -> CommandResult {
        guard result.status == 0 else { throw TestNamespaceError("exit \(result.status): \(result.error)") }
        return result
    }
}

/// Starts `process` from a thread whose signal mask is empty. A child inherits the signal mask of the thread that
/// starts it, and this test process's threads block nearly every signal: a supervising shell started from one never
/// saw SIGCHLD, so it never reaped the program it ran (a `kill -9`ed ktctl stayed a zombie, alive to every check),
/// and a program's own SIGINT/SIGTERM/SIGHUP handling was tested under a mask no terminal gives it.
public func runWithoutBlockedSignals(_ process: Process) throws {
    final class Outcome: @unchecked Sendable {
        var error: (any Error)?
    }
    let outcome = Outcome()
    let done = DispatchSemaphore(value: 0)
    let thread = Thread {
        var empty = sigset_t()
        sigemptyset(&empty)
        pthread_sigmask(SIG_SETMASK, &empty, nil)
        do { try process.run() } catch { outcome.error = error }
        done.signal()
    }
    thread.start()
    done.wait()
    if let error = outcome.error { throw error }
}

public struct TestNamespaceError: Error, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}

private final class ResultBox<T>: @unchecked Sendable {
    var result: Result<T, any Error>?
}

// MARK: - Capabilities

/// Drops CAP_NET_ADMIN from the calling thread's effective set, as `setpriv --inh-caps=-net_admin` would for a
/// process. Capabilities are per thread in Linux, so call this only on a thread made for it (``TestNamespace/inside(_:)``).
public func dropNetAdminOnThisThread() throws {
    typealias CapabilityCall = @convention(c) (UnsafeMutableRawPointer, UnsafeMutableRawPointer) -> CInt
    guard let get = dlsym(dlopen(nil, RTLD_NOW), "capget"), let set = dlsym(dlopen(nil, RTLD_NOW), "capset") else {
        throw TestNamespaceError("libc has no capget/capset")
    }
    // struct __user_cap_header_struct { u32 version; int pid; } with _LINUX_CAPABILITY_VERSION_3, pid 0 = this thread.
    var header: (UInt32, Int32) = (0x2008_0522, 0)
    // Two struct __user_cap_data_struct { u32 effective, permitted, inheritable; }.
    var data: (UInt32, UInt32, UInt32, UInt32, UInt32, UInt32) = (0, 0, 0, 0, 0, 0)
    let netAdmin: UInt32 = 1 << 12
    let got = withUnsafeMutableBytes(of: &header) { h in
        withUnsafeMutableBytes(of: &data) { d in
            unsafeBitCast(get, to: CapabilityCall.self)(h.baseAddress!, d.baseAddress!)
        }
    }
    guard got == 0 else { throw TestNamespaceError("capget: errno \(errno)") }
    data.0 &= ~netAdmin
    let result = withUnsafeMutableBytes(of: &header) { h in
        withUnsafeMutableBytes(of: &data) { d in
            unsafeBitCast(set, to: CapabilityCall.self)(h.baseAddress!, d.baseAddress!)
        }
    }
    guard result == 0 else { throw TestNamespaceError("capset: errno \(errno)") }
}

/// The repository's root, found from this file's path, for running the binaries `swift build` made.
public let repositoryRoot: String = {
    var path = #filePath
    for _ in 0..<3 { path = String(path[..<(path.lastIndex(of: "/") ?? path.startIndex)]) }
    return path
}()
