import Foundation
import Glibc
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

/// Commands and namespaces on the machine ktlab runs on. Everything ktlab changes on the host goes through here:
/// `ip` (namespaces, links, addresses, routes inside its own namespaces), `nft` (tables inside its own
/// namespaces), `openssl` (its CA) and files under its state directory.
public enum Host {
    public struct CommandError: Error, Sendable, CustomStringConvertible {
        public var command: [String]
        public var status: Int32
        public var output: String
        public var description: String {
            "`\(command.joined(separator: " "))` failed (exit \(status)): \(output.trimmingCharacters(in: .whitespacesAndNewlines))"
        }
    }

    /// Removes a tree the lab made of plain files, refusing when anything is mounted at or below it (a mount is
    /// never removed through: unmount it first).
    public static func removeTree(_ path: String) throws {
        let mounted = LabControl.mountPoints(under: path)
        guard mounted.isEmpty else {
            throw LabControl.Failure(
                "\(path) has mounts below it (\(mounted.joined(separator: ", "))); it is left in place")
        }
        try FileManager.default.removeItem(atPath: path)
    }

    public static func findExecutable(_ name: String) -> String? {
        if name.hasPrefix("/") { return access(name, X_OK) == 0 ? name : nil }
        for directory in ["/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"] {
            let path = directory + "/" + name
            if access(path, X_OK) == 0 { return path }
        }
        return nil
    }

    /// Starts `process` with no signal blocked. A process inherits the signal mask of the thread that starts it,
    /// and the threads of Swift's concurrency pool and NIO's loops block most signals: a container started from one
    /// would never see the SIGTERM that ends it.
    public static func launch(_ process: Process) throws {
        let result = NIOLockedValueBox<Result<Void, any Error>>(.success(()))
        let done = DispatchSemaphore(value: 0)
        let thread = Thread {
            var none = sigset_t()
            sigemptyset(&none)
            pthread_sigmask(SIG_SETMASK, &none, nil)
            let outcome = Result { try process.run() }
            result.withLockedValue { $0 = outcome }
            done.signal()
        }
        thread.start()
        done.wait()
        try result.withLockedValue { $0 }.get()
    }

    /// Runs blocking work (a command, a file) on a thread of its own and waits for it without holding one of
    /// Swift's concurrency threads, which the API server's watch streams and controllers share.
    @discardableResult
    public static func offPool<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { continuation in
            DispatchQueue.global().async { continuation.resume(with: Result { try body() }) }
        }
    }

    /// Runs a command to completion and returns its standard output; a non-zero exit throws with stderr.
    @discardableResult
    public static func run(_ arguments: [String], input: String? = nil, allowFailure: Bool = false) throws -> String {
        guard let executable = findExecutable(arguments[0]) else {
            throw CommandError(command: arguments, status: 127, output: "\(arguments[0]) is not installed")
        }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = Array(arguments.dropFirst())
        let output = Pipe()
        let error = Pipe()
        process.standardOutput = output
        process.standardError = error
        let inputPipe = Pipe()
        process.standardInput = input == nil ? FileHandle.nullDevice : inputPipe
        try process.run()
        if let input {
            inputPipe.fileHandleForWriting.write(Data(input.utf8))
            try? inputPipe.fileHandleForWriting.close()
        }
        let errorData = LockedData()
        let reader = Thread { errorData.set(error.fileHandleForReading.readDataToEndOfFile()) }
        reader.start()
        let outData = output.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        while !errorData.done { usleep(1000) }
        if process.terminationStatus != 0 && !allowFailure {
            throw CommandError(
                command: arguments, status: process.terminationStatus,
                output: String(decoding: errorData.get(), as: UTF8.self))
        }
        return String(decoding: outData, as: UTF8.self)
    }

    final class LockedData: @unchecked Sendable {
        private let lock = NSLock()
        private var data = Data()
        private(set) var done = false
        func set(_ value: Data) {
            lock.withLock {
                data = value
                done = true
            }
        }
        func get() -> Data { lock.withLock { data } }
    }

    // MARK: - Network namespaces

    public static func namespaces() -> [String] {
        ((try? run(["ip", "netns", "list"])) ?? "").split(separator: "\n").compactMap {
            $0.split(separator: " ").first.map(String.init)
        }
    }

    public static func processes(inNamespace name: String) -> [Int32] {
        ((try? run(["ip", "netns", "pids", name], allowFailure: true)) ?? "").split(separator: "\n").compactMap {
            Int32($0)
        }
    }

    /// Stops everything inside, then removes the namespace (and its `/etc/netns` directory).
    public static func deleteNamespace(_ name: String) {
        for pid in processes(inNamespace: name) { kill(pid, SIGKILL) }
        _ = try? run(["ip", "netns", "del", name], allowFailure: true)
        try? FileManager.default.removeItem(atPath: "/etc/netns/\(name)")
    }

    private typealias SetNamespace = @convention(c) (CInt, CInt) -> CInt
    /// `setns(2)`: Glibc's Swift module does not export it (it sits behind _GNU_SOURCE), so it is looked up.
    private static let setns: SetNamespace? = {
        guard let symbol = dlsym(dlopen(nil, RTLD_NOW), "setns") else { return nil }
        return unsafeBitCast(symbol, to: SetNamespace.self)
    }()

    public struct NamespaceError: Error, CustomStringConvertible {
        public var description: String
    }

    /// An event loop group whose threads live in network namespace `name`: every socket its loops create (a
    /// listener bound inside `submit`, a connection to a pod) belongs to that namespace.
    public static func eventLoopGroup(inNamespace name: String, threads: Int) throws -> MultiThreadedEventLoopGroup {
        let fd = open("/run/netns/\(name)", O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw NamespaceError(description: "cannot open /run/netns/\(name): errno \(errno)") }
        defer { close(fd) }
        guard let setns else { throw NamespaceError(description: "this libc has no setns") }
        let box = GroupBox()
        let done = DispatchSemaphore(value: 0)
        let thread = Thread {
            if setns(fd, 0x4000_0000) != 0 {  // CLONE_NEWNET
                box.error = NamespaceError(description: "setns into \(name): errno \(errno)")
            } else {
                // Threads inherit the namespace of the thread that creates them.
                box.group = MultiThreadedEventLoopGroup(numberOfThreads: threads)
            }
            done.signal()
        }
        thread.start()
        done.wait()
        if let error = box.error { throw error }
        guard let group = box.group else { throw NamespaceError(description: "no event loop group") }
        return group
    }

    /// A TCP socket connected to `127.0.0.1:port` inside network namespace `name`, made by a thread of its own that
    /// enters the namespace (a socket stays in the namespace it was made in). This is how a kubelet port-forwards:
    /// to localhost in the pod's network namespace, so a pod's process that listens on 127.0.0.1 only is reachable by
    /// port-forward and by nothing else in the cluster.
    public static func connectLoopback(inNamespace name: String, port: Int) throws -> CInt {
        let fd = open("/run/netns/\(name)", O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw NamespaceError(description: "cannot open /run/netns/\(name): errno \(errno)") }
        defer { close(fd) }
        guard let setns else { throw NamespaceError(description: "this libc has no setns") }
        let box = SocketBox()
        let done = DispatchSemaphore(value: 0)
        let thread = Thread {
            defer { done.signal() }
            guard setns(fd, 0x4000_0000) == 0 else {  // CLONE_NEWNET
                box.error = NamespaceError(description: "setns into \(name): errno \(errno)")
                return
            }
            let socketFD = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
            guard socketFD >= 0 else {
                box.error = NamespaceError(description: "socket: errno \(errno)")
                return
            }
            var address = sockaddr_in()
            address.sin_family = sa_family_t(AF_INET)
            address.sin_port = in_port_t(UInt16(port).bigEndian)
            address.sin_addr.s_addr = in_addr_t(0x7F00_0001).bigEndian
            let result = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    connect(socketFD, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
                }
            }
            guard result == 0 else {
                let code = errno
                close(socketFD)
                box.error = NamespaceError(
                    description: "failed to connect to localhost:\(port) inside namespace \(name): dial tcp4 "
                        + "127.0.0.1:\(port): connect: \(String(cString: strerror(code)).lowercased())")
                return
            }
            box.socket = socketFD
        }
        thread.start()
        done.wait()
        if let error = box.error { throw error }
        guard let socket = box.socket else { throw NamespaceError(description: "no socket") }
        return socket
    }

    final class SocketBox: @unchecked Sendable {
        var socket: CInt?
        var error: (any Error)?
    }

    final class GroupBox: @unchecked Sendable {
        var group: MultiThreadedEventLoopGroup?
        var error: (any Error)?
    }
}
