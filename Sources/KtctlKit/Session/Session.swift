import Foundation
import Glibc
import KubeKit
import Logging

/// The machinery every command that changes something shares (connect now; exchange, preview, forward and mesh
/// next): the state directory's lock, the pid file, the write-ahead journal, signals from the first step, the
/// session's Lease in the cluster and the objects it owns. A command is a body run inside a session: it records each
/// change (or creates each object) through the session, and the session undoes exactly what was done, in reverse,
/// however the body ends — returned, failed, interrupted at any step, or stopped by a second ktctl deleting its pid
/// file. A second interrupt while that runs stops waiting and says what `ktctl clean` will finish.
public final class Session: @unchecked Sendable {
    public struct Options: Sendable {
        /// `connect`, `exchange`, ...: names the pid file, the journal and the Lease.
        public var command: String
        public var state: StateDirectory
        /// The lock taken for the session's whole life; two sessions with one lock name never run together.
        public var lockName: String
        public var leaseDuration = SessionLease.defaultDuration

        public init(command: String, state: StateDirectory, lockName: String? = nil) {
            self.command = command
            self.state = state
            self.lockName = lockName ?? command
        }
    }

    /// Why the session is ending before its body returned.
    public enum StopReason: Sendable, Hashable {
        case signal(Int32)
        case pidFileRemoved(String)
        /// The session cannot go on (its Lease was deleted, say): the command fails with this.
        case failure(String)
    }

    public let options: Options
    public let identity: SessionIdentity
    public let journal: Journal
    /// What `ktctl status` shows of this session.
    public let status: StatusBoard
    public let logger: Logger
    /// The undoing's wait a second interrupt skips (scale mode's wait for ready replicas).
    let skippable = SkippableWait()
    /// Progress and outcome lines for the user.
    public let print: @Sendable (String) -> Void
    let trap: SignalTrap

    /// What to do when the session stops, last first: a journaled change (undone by `UndoRunner`, then closed), or
    /// an in-memory step (closing a tunnel, stopping an engine) that needs no journal because it goes with the
    /// process anyway.
    enum Step {
        case change(sequence: Int, before: (@Sendable () async -> Void)?)
        case memory(String, @Sendable () async -> Void)
    }

    private let lock = NSLock()
    private var steps: [Step] = []
    /// What must cease before anything is undone (reconnecting supervisors, renewals): run first, in order.
    private var quiesce: [@Sendable () async -> Void] = []
    private var reason: StopReason?
    private var body: Task<Void, any Error>?
    private var clusterValue: SessionCluster?

    init(
        options: Options, identity: SessionIdentity, journal: Journal, status: StatusBoard, trap: SignalTrap,
        logger: Logger, print: @escaping @Sendable (String) -> Void
    ) {
        self.options = options
        self.identity = identity
        self.journal = journal
        self.status = status
        self.trap = trap
        self.logger = logger
        self.print = print
    }

    public var stopReason: StopReason? { lock.withLock { reason } }
    public var cluster: SessionCluster? { lock.withLock { clusterValue } }

    // MARK: - Running

    /// Runs `body` as a session. Refused at once, with nothing changed, when another session holds the lock.
    /// Returns normally when the body returned or a signal (or the pid file's removal) stopped it; throws what
    /// failed otherwise. Everything the session did is undone before this returns.
    public static func run(
        _ options: Options, logger: Logger, print: @escaping @Sendable (String) -> Void,
        _ body: @escaping @Sendable (Session) async throws -> Void
    ) async throws {
        // Signals first: from here on an interrupt undoes what was done instead of killing the process mid-step.
        let trap = SignalTrap()
        trap.install()
        let state = options.state
        do {
            try state.prepare()
        } catch {
            throw SessionError.stateDirectory("cannot make \(state.root): \(error)")
        }
        let held = try SessionLock.take(state, name: options.lockName, command: options.command)
        defer { held.release() }

        // What crashed sessions left on this machine comes back first (their cluster objects once the cluster is
        // known: `connect(_:)`).
        for line in await Recovery.recoverCrashed(state, client: nil, server: nil) { print("ktctl: \(line)") }

        let identity = SessionIdentity.fresh()
        let process = ProcessIdentity.current
        // A journal at our name is a crashed session's whose pid has come round again, with entries that could not
        // be undone yet (its cluster is another): it moves aside, where `ktctl clean` still finds it.
        let journalPath = state.journalFile(command: options.command, pid: process.pid)
        if access(journalPath, F_OK) == 0 {
            let aside = journalPath.replacingOccurrences(
                of: ".json", with: "-earlier-\(Int(Date().timeIntervalSince1970)).json")
            rename(journalPath, aside)
        }
        let journal = try Journal(
            creating: journalPath,
            record: JournalRecord(
                command: options.command, session: identity.id, process: process, user: identity.user,
                host: identity.host))
        let pidFile = state.pidFile(command: options.command, pid: process.pid)
        do {
            try AtomicFile.replace(pidFile, with: Array("\(process.pid)".utf8), mode: 0o644)
        } catch {
            journal.remove()
            throw SessionError.stateDirectory("cannot write \(pidFile): \(error)")
        }

        let status = StatusBoard(
            path: state.statusFile(command: options.command, pid: process.pid),
            status: SessionStatus(
                command: options.command, process: process, session: identity.id, user: identity.user,
                host: identity.host, started: Date()))
        let session = Session(
            options: options, identity: identity, journal: journal, status: status, trap: trap, logger: logger,
            print: print)
        status.start()
        let work = Task { try await body(session) }
        session.lock.withLock { session.body = work }
        trap.handle(
            first: { number in session.stop(.signal(number)) },
            second: { number in session.abandonCleanUp(number) })
        let watcher = Task {
            // kt-connect's way to stop a command: delete its pid file.
            while !Task.isCancelled {
                try? await Task.sleep(for: .seconds(1))
                if !Task.isCancelled && access(pidFile, F_OK) != 0 {
                    session.stop(.pidFileRemoved(pidFile))
                    return
                }
            }
        }
        let result = await work.result
        watcher.cancel()
        status.update { $0.phase = "stopping" }
        status.write()
        let unfinished = await Task { await session.undoAll() }.value
        status.stop()
        unlink(pidFile)
        if unfinished.isEmpty {
            journal.remove()
        } else {
            print(
                "ktctl: could not undo: \(unfinished.joined(separator: "; ")); it stays in \(journal.path) and "
                    + "`ktctl clean` finishes it")
        }
        switch (result, session.stopReason) {
        case (_, .failure(let why)?):
            throw SessionError.stopped(why)
        case (.success, _), (.failure, .signal?), (.failure, .pidFileRemoved?):
            if !unfinished.isEmpty { throw SessionError.unfinished(unfinished) }
        case (.failure(let error), nil):
            throw error
        }
    }

    /// Ends the session: the body is cancelled and the undoing begins.
    public func stop(_ why: StopReason) {
        let task = lock.withLock { () -> Task<Void, any Error>? in
            if reason == nil { reason = why }
            return body
        }
        switch why {
        case .signal(let number): print("ktctl: \(SignalTrap.name(number)): stopping")
        case .pidFileRemoved(let path): print("ktctl: \(path) was removed: stopping")
        case .failure(let text): print("ktctl: \(text); stopping")
        }
        task?.cancel()
    }

    /// Says the session is ready (`ktctl status`); the command has printed its summary.
    public func ready() {
        status.update { $0.phase = "ready" }
        status.write()
    }

    /// Waits until the session is stopped (a signal, the pid file's removal, a failure); throws CancellationError
    /// then, as every wait in a session body does. Commands call it once their summary is printed, so the session is
    /// `ready` from here on.
    public func waitUntilStopped() async throws {
        ready()
        while true { try await Task.sleep(for: .seconds(3600)) }
    }

    /// A second signal during the undoing: say what is left and leave now; the journal keeps it for `ktctl clean`.
    func abandonCleanUp(_ number: Int32) {
        if let what = skippable.skip() {
            print("ktctl: \(SignalTrap.name(number)) again: not waiting \(what); the rest of the clean-up goes on")
            return
        }
        let left = journal.snapshot.open.map(\.change)
        print(
            "ktctl: \(SignalTrap.name(number)) again: not waiting for the clean-up. "
                + (left.isEmpty
                    ? "Nothing is left in the cluster or on this machine."
                    : "Left: \(left.joined(separator: "; ")). Run `ktctl clean` to finish it (\(journal.path) says what "
                        + "to undo)."))
        _exit(130)
    }

    // MARK: - Recording changes

    /// Journals `change` with what undoes it, before the caller makes it; `before` runs first when it is undone (to
    /// close a device before its undo, say). Returns the entry's number.
    @discardableResult
    public func record(_ change: String, undo: Undo, before: (@Sendable () async -> Void)? = nil) throws -> Int {
        try Task.checkCancellation()
        let sequence = try journal.append(change, undo: undo)
        lock.withLock { steps.append(.change(sequence: sequence, before: before)) }
        logger.debug("journal \(sequence): \(change)")
        return sequence
    }

    /// An in-memory step for the end (stopping an engine, closing a client): nothing a crash could leave behind.
    public func onStop(_ what: String, _ step: @escaping @Sendable () async -> Void) {
        lock.withLock { steps.append(.memory(what, step)) }
    }

    /// Work that must cease before anything is undone: a supervisor that would make a deleted pod again, say.
    public func beforeUndo(_ step: @escaping @Sendable () async -> Void) {
        lock.withLock { quiesce.append(step) }
    }

    /// Undoes every step, last first; returns what could not be undone.
    func undoAll() async -> [String] {
        let cluster = self.cluster
        cluster?.lease?.stopRenewing()
        for step in lock.withLock({ quiesce }) { await step() }
        var runner = UndoRunner(client: cluster?.client)
        runner.skippable = skippable
        var unfinished: [String] = []
        while let step = lock.withLock({ steps.popLast() }) {
            switch step {
            case .memory(let what, let action):
                logger.debug("stop: \(what)")
                await action()
            case .change(let sequence, let before):
                await before?()
                guard let entry = journal.snapshot.entries.first(where: { $0.sequence == sequence }), !entry.closed
                else { continue }
                let outcome = await runner.run(entry.undo)
                logger.debug("undo \(sequence) (\(entry.change)): \(outcome)")
                switch outcome {
                case .done: break
                case .leftAlone(let why): print("ktctl: \(why)")
                case .failed(let why): unfinished.append(why)
                }
                if outcome.closesEntry { try? journal.close(sequence) }
            }
        }
        return unfinished
    }

    // MARK: - The cluster

    /// Connects to the cluster (kubeconfig, context, namespace), records it in the journal and undoes what crashed
    /// sessions of this machine left in it.
    @discardableResult
    public func connect(_ options: ClusterOptions) async throws -> SessionCluster {
        let config = try Kubeconfig.load(explicitPath: options.kubeconfig)
        let access = try config.access(context: options.context, namespace: options.namespace)
        let client = try KubeClient(access: access, logger: logger)
        onStop("close the API client") { await client.shutdown() }
        let cluster = SessionCluster(client: client, access: access, namespace: access.namespace)
        lock.withLock { clusterValue = cluster }
        status.update {
            $0.cluster = .init(
                server: access.server.absoluteString, context: access.contextName, namespace: access.namespace)
        }
        try journal.setCluster(
            .init(server: access.server.absoluteString, context: access.contextName, namespace: access.namespace))
        for line in await Recovery.recoverCrashed(
            self.options.state, client: client, server: access.server.absoluteString)
        {
            print("ktctl: \(line)")
        }
        return cluster
    }

    /// Creates the session's Lease in the cluster's namespace and keeps it renewed; objects created afterwards name
    /// it as their owner. `target` says what the session does to which Service, for `ktctl birdseye`.
    public func startLease(target: SessionTarget? = nil) async throws {
        guard let cluster else { preconditionFailure("startLease before connect") }
        let lease = SessionLease(
            client: cluster.client, namespace: cluster.namespace, name: "kt-\(options.command)-\(identity.id)",
            durationSeconds: options.leaseDuration, logger: logger)
        let serverNow = try await SessionLease.serverNow(cluster.client)
        var labels = identity.labels(role: options.command)
        var annotations = identity.annotations
        if let target {
            labels[SessionTarget.serviceLabel] = target.service
            annotations[SessionTarget.modeAnnotation] = target.mode
            if let mark = target.mark { annotations[SessionTarget.markAnnotation] = mark }
        }
        let document = lease.document(
            holder: identity.holder, serverNow: serverNow, labels: labels, annotations: annotations)
        let reference = ObjectRef(Lease.resource, namespace: cluster.namespace, name: lease.name)
        let sequence = try record("create \(reference)", undo: .deleteObject(reference))
        let created = try await cluster.client.create(document, namespace: cluster.namespace)
        lease.created(created)
        var known = reference
        known.uid = created.metadata.uid
        try journal.update(sequence, undo: .deleteObject(known))
        cluster.lease = lease
        status.update { $0.lease = lease.name }
        lease.startRenewing(
            progress: { [weak self] line in self?.print("ktctl: \(line)") },
            lost: { [weak self] why in self?.stop(.failure(why)) })
    }

    /// Creates `object` in the session's namespace as the session's: its labels and owner annotations added, the
    /// session's Lease as its owner, journaled before it is sent.
    public func create<T: KubeResource>(_ object: T, role: String) async throws -> T {
        guard let cluster else { preconditionFailure("create before connect") }
        var object = object
        var labels = object.metadata.labels ?? [:]
        labels.merge(identity.labels(role: role)) { _, ours in ours }
        object.metadata.labels = labels
        var annotations = object.metadata.annotations ?? [:]
        annotations.merge(identity.annotations) { _, ours in ours }
        object.metadata.annotations = annotations
        if let owner = cluster.lease?.ownerReference {
            object.metadata.ownerReferences = (object.metadata.ownerReferences ?? []) + [owner]
        }
        let reference = ObjectRef(T.resource, namespace: cluster.namespace, name: object.name)
        let sequence = try record("create \(reference)", undo: .deleteObject(reference))
        let created = try await cluster.client.create(object, namespace: cluster.namespace)
        var known = reference
        known.uid = created.metadata.uid
        try journal.update(sequence, undo: .deleteObject(known))
        return created
    }
}

/// What a session does to a Service, on its Lease (`ktctl birdseye` reads it): the label `ktctl.io/service`, the
/// annotations `ktctl.io/mode` (`selector`, `scale`, `auto`, `manual`, `preview`) and `ktctl.io/mark` (a mesh's
/// `VERSION: feo3x` or `version=feo3x`). The Lease's role label (`ktctl.io/role`) says exchange, mesh or preview.
public struct SessionTarget: Sendable, Hashable {
    public static let serviceLabel = "ktctl.io/service"
    public static let modeAnnotation = "ktctl.io/mode"
    public static let markAnnotation = "ktctl.io/mark"

    public var service: String
    public var mode: String
    public var mark: String?

    public init(service: String, mode: String, mark: String? = nil) {
        self.service = service
        self.mode = mode
        self.mark = mark
    }
}

/// The cluster a session works in.
public final class SessionCluster: @unchecked Sendable {
    public let client: KubeClient
    public let access: ClusterAccess
    public let namespace: String
    public internal(set) var lease: SessionLease?

    init(client: KubeClient, access: ClusterAccess, namespace: String) {
        self.client = client
        self.access = access
        self.namespace = namespace
    }
}
