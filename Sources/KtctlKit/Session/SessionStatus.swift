import Foundation
import Glibc
import KtEngine

/// What a running session shows `ktctl status`: who and where it is, its shadow and tunnel, what it routes and how DNS
/// is wired, the traffic it carried and the Services it changed. Written by the session (`StatusBoard`) to
/// `~/.kt/status/<command>-<pid>.json` and read by `ktctl status`, which also prints it as JSON (`-o json`): the
/// field names are part of ktctl's interface.
public struct SessionStatus: Codable, Sendable, Hashable {
    public struct Cluster: Codable, Sendable, Hashable {
        public var server: String
        public var context: String
        public var namespace: String
    }

    public struct Shadow: Codable, Sendable, Hashable {
        public var pod: String
        public var ip: String?
        /// `connecting` (before the first tunnel), `connected`, `reconnecting`.
        public var tunnel: String
        /// Tunnels put in place after the first one.
        public var reconnects: Int
    }

    /// Flows the laptop opened into the cluster (tun and socks modes).
    public struct Traffic: Codable, Sendable, Hashable {
        public var flowsOpen = 0
        public var flowsOpened = 0
        public var flowsRefused = 0
        public var bytesToCluster = 0
        public var bytesFromCluster = 0
        public var datagramsToCluster = 0
        public var datagramsFromCluster = 0
        public var echoes = 0
        public init() {}
    }

    /// Connections the cluster opened to this machine (exchange, mesh, preview).
    public struct Incoming: Codable, Sendable, Hashable {
        public var accepted = 0
        public var open = 0
        /// Refused because nothing listened on the local port.
        public var refused = 0
        public var bytesToLocal = 0
        public var bytesFromLocal = 0
        public init() {}
    }

    /// A Service the session changed or made.
    public struct ServiceUse: Codable, Sendable, Hashable {
        public var name: String
        public var namespace: String
        /// `exchanged`, `meshed`, `previewed`.
        public var state: String
        /// `selector mode`, `scale mode`, `header VERSION: feo3x`, `manual (version label …)`.
        public var detail: String
        /// `pod :8080 → 127.0.0.1:8080`, one per port.
        public var ports: [String] = []
        public var incoming: Incoming?

        public init(name: String, namespace: String, state: String, detail: String) {
            self.name = name
            self.namespace = namespace
            self.state = state
            self.detail = detail
        }
    }

    public var command: String
    public var pid: Int32
    /// The process's start time (`ProcessIdentity`), so that a file whose pid came round again is not believed.
    public var processStart: UInt64?
    public var session: String
    public var user: String
    public var host: String
    /// This machine's clock: when the session started and when this was written.
    public var started: Date
    public var updated: Date
    /// `starting`, `ready`, `stopping`.
    public var phase: String
    public var cluster: Cluster?
    public var lease: String?
    /// `tun` or `socks` for connect; exchange's `selector` or `scale`; mesh's `auto` or `manual`.
    public var mode: String?
    public var shadow: Shadow?
    public var routes: [String]?
    public var dns: String?
    public var proxy: String?
    public var traffic: Traffic?
    public var services: [ServiceUse] = []

    public init(command: String, process: ProcessIdentity, session: String, user: String, host: String, started: Date) {
        self.command = command
        self.pid = process.pid
        self.processStart = process.startTime
        self.session = session
        self.user = user
        self.host = host
        self.started = started
        self.updated = started
        self.phase = "starting"
    }

    public var process: ProcessIdentity { ProcessIdentity(pid: pid, startTime: processStart) }

    public static let encoder: JSONEncoder = {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .prettyPrinted, .withoutEscapingSlashes]
        encoder.dateEncodingStrategy = .iso8601
        return encoder
    }()

    public static let decoder: JSONDecoder = {
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .iso8601
        return decoder
    }()
}

// MARK: - From the counters

extension SessionStatus.Traffic {
    /// tun mode: the engine's counters.
    public init(_ counters: EngineCounters) {
        self.init()
        flowsOpen = counters.openFlows
        flowsOpened = counters.flowsOpened
        flowsRefused = counters.flowsRefused
        bytesToCluster = counters.bytesToCluster
        bytesFromCluster = counters.bytesFromCluster
        datagramsToCluster = counters.datagramsToCluster
        datagramsFromCluster = counters.datagramsFromCluster
        echoes = counters.echoes
    }

    /// Flows glued to local sockets (socks mode, forward): a `TrafficMeter`'s counts.
    public init(_ counts: TrafficMeter.Counts) {
        self.init()
        flowsOpen = counts.flowsOpen
        flowsOpened = counts.flowsOpened
        bytesToCluster = counts.bytesToCluster
        bytesFromCluster = counts.bytesFromCluster
    }
}

extension SessionStatus.Incoming {
    /// The reverse forwards' connections and the bytes their meter counted (from the cluster is to this machine).
    public init(_ forwards: ReverseForwards) {
        self.init()
        let counts = forwards.counts
        let bytes = forwards.meter.snapshot
        accepted = counts.accepted
        open = counts.open
        refused = counts.refused
        bytesToLocal = bytes.bytesFromCluster
        bytesFromLocal = bytes.bytesToCluster
    }
}

/// A session's status as it runs: commands set what they know (`update`) and hand over readers of their live counters
/// (`sample`); every `interval` the whole is written to the session's status file, replaced by a rename so that a
/// reader never sees half of it. The file goes when the session ends.
public final class StatusBoard: @unchecked Sendable {
    /// How often the file is rewritten: `ktctl status --watch` redraws once a second, so twice a second keeps what it
    /// shows at most half a second old; a write is one small JSON file without fsync (a crash loses nothing: the
    /// status is only ever about the living process).
    public static let interval = Duration.milliseconds(500)

    public let path: String
    private let lock = NSLock()
    private var status: SessionStatus
    private var samplers: [@Sendable (inout SessionStatus) -> Void] = []
    private var writer: Task<Void, Never>?
    /// Set by `stop()`: a write already under way then leaves no file behind.
    private var stopped = false

    public init(path: String, status: SessionStatus) {
        self.path = path
        self.status = status
    }

    /// Changes what the session says about itself.
    public func update(_ change: (inout SessionStatus) -> Void) {
        lock.withLock { change(&status) }
    }

    /// Adds a reader of live figures, run before each write.
    public func sample(_ sampler: @escaping @Sendable (inout SessionStatus) -> Void) {
        lock.withLock { samplers.append(sampler) }
    }

    /// The status now, with every sampler applied.
    public var snapshot: SessionStatus {
        let (base, samplers) = lock.withLock { (status, self.samplers) }
        var now = base
        for sampler in samplers { sampler(&now) }
        now.updated = Date()
        return now
    }

    /// One write at a time (the timer's and `Session.ready()`'s share the temporary file's name).
    private let writing = NSLock()

    /// Writes the status now: to a file beside it, then renamed over it.
    public func write() {
        writing.lock()
        defer { writing.unlock() }
        guard let bytes = try? SessionStatus.encoder.encode(snapshot) else { return }
        let temporary =
            (path as NSString).deletingLastPathComponent
            + "/.\((path as NSString).lastPathComponent).\(getpid()).tmp"
        guard FileManager.default.createFile(atPath: temporary, contents: bytes) else { return }
        // The rename under the lock, so that it cannot land after `stop()` removed the file.
        lock.withLock {
            if stopped || rename(temporary, path) != 0 { unlink(temporary) }
        }
    }

    /// Writes every `interval` until `stop()`.
    public func start() {
        write()
        let task = Task { [weak self] in
            while !Task.isCancelled {
                try? await Task.sleep(for: Self.interval)
                guard let self, !Task.isCancelled else { return }
                self.write()
            }
        }
        lock.withLock { writer = task }
    }

    /// Stops writing and removes the file.
    public func stop() {
        let task = lock.withLock { () -> Task<Void, Never>? in
            defer { writer = nil }
            stopped = true
            unlink(path)
            return writer
        }
        task?.cancel()
    }
}
