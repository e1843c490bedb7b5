import Dispatch
import Glibc
import KtTunnel
import Logging
import NIOCore
import NIOPosix
import NIOSSH

/// kt-shadow's start-up: a fresh host key, the server, the first log line with the fingerprint, and a clean stop on
/// SIGTERM or SIGINT (what the kubelet sends before it kills the pod).
public enum ShadowMain {
    /// The line prefix ktctl looks for in the pod's log to pin the host key.
    public static let fingerprintPrefix = "kt-shadow host key "

    /// Runs until a termination signal; returns the process's exit status.
    public static func run(
        configuration: ShadowConfiguration, fingerprintFile: String?, logger: Logger, threads: Int
    ) async -> Int32 {
        AllocatorTuning.apply()
        let group = MultiThreadedEventLoopGroup(numberOfThreads: threads)
        let status = await serve(
            configuration: configuration, fingerprintFile: fingerprintFile, logger: logger, group: group)
        try? await group.shutdownGracefully()
        return status
    }

    private static func serve(
        configuration: ShadowConfiguration, fingerprintFile: String?, logger: Logger, group: EventLoopGroup
    ) async -> Int32 {
        let server = ShadowServer(configuration: configuration, group: group, logger: logger)
        let address: SocketAddress
        do {
            address = try await server.start()
        } catch {
            logger.critical("cannot listen on \(configuration.listen): \(error); nothing was started")
            return 1
        }
        logger.notice("\(fingerprintPrefix)\(server.hostKeyFingerprint) listening on \(address.endpoint)")
        for warning in server.warnings { logger.warning("\(warning)") }
        if let raised = raiseDescriptorLimit() { logger.info("open-file limit raised to \(raised)") }
        if let fingerprintFile {
            do {
                try writeFile(fingerprintFile, contents: server.hostKeyFingerprint + "\n")
            } catch {
                logger.critical("cannot write the fingerprint to \(fingerprintFile): \(error)")
                await server.stop()
                return 1
            }
        }
        let signal = await waitForTermination()
        logger.notice("received \(signal); closing \(server.connectionCount) connection(s)")
        await server.stop()
        return 0
    }

    /// Every flow holds a socket: the soft open-file limit (often 1024) is raised to the hard one, as far as the
    /// pod allows. Returns the new limit when it changed.
    static func raiseDescriptorLimit() -> UInt64? {
        var limit = rlimit()
        guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0, limit.rlim_cur < limit.rlim_max else { return nil }
        limit.rlim_cur = min(limit.rlim_max, 1 << 20)
        guard setrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 else { return nil }
        return UInt64(limit.rlim_cur)
    }

    /// Waits for SIGTERM or SIGINT and returns its name.
    static func waitForTermination() async -> String {
        await withCheckedContinuation { (continuation: CheckedContinuation<String, Never>) in
            let watcher = SignalWatcher(continuation: continuation)
            for (number, name) in [(SIGTERM, "SIGTERM"), (SIGINT, "SIGINT")] { watcher.watch(number, name) }
            // The sources live as long as the process: kt-shadow ends after the first signal.
            signalWatcher = watcher
        }
    }

    nonisolated(unsafe) private static var signalWatcher: SignalWatcher?

    static func writeFile(_ path: String, contents: String) throws {
        let descriptor = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard descriptor >= 0 else { throw IOError(errnoCode: errno, reason: "open \(path)") }
        defer { close(descriptor) }
        let bytes = Array(contents.utf8)
        let written = bytes.withUnsafeBytes { write(descriptor, $0.baseAddress, $0.count) }
        guard written == bytes.count else { throw IOError(errnoCode: errno, reason: "write \(path)") }
    }
}

/// Turns the first of several signals into the resumption of a continuation. Its state is touched only on its serial
/// queue.
private final class SignalWatcher: @unchecked Sendable {
    private let queue = DispatchQueue(label: "kt-shadow.signals")
    private var continuation: CheckedContinuation<String, Never>?
    private var sources: [DispatchSourceSignal] = []

    init(continuation: CheckedContinuation<String, Never>) {
        self.continuation = continuation
    }

    func watch(_ number: Int32, _ name: String) {
        Glibc.signal(number, SIG_IGN)
        let source = DispatchSource.makeSignalSource(signal: number, queue: queue)
        source.setEventHandler { [self] in
            continuation?.resume(returning: name)
            continuation = nil
        }
        source.resume()
        sources.append(source)
    }
}
