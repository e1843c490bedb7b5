import Foundation
import Glibc
import KtEngine
import KubeKit

/// One object in the cluster, as the journal names it: enough to delete exactly that object later.
public struct ObjectRef: Codable, Sendable, Hashable, CustomStringConvertible {
    public var group: String
    public var version: String
    public var plural: String
    public var kind: String
    public var namespace: String?
    public var name: String
    /// Known once the object exists; deleting then requires that uid (someone else's object of that name is safe).
    public var uid: String?

    public init(_ resource: ResourceType, namespace: String?, name: String, uid: String? = nil) {
        group = resource.group
        version = resource.version
        plural = resource.plural
        kind = resource.kind
        self.namespace = resource.namespaced ? namespace : nil
        self.name = name
        self.uid = uid
    }

    public var resource: ResourceType {
        ResourceType(group: group, version: version, plural: plural, kind: kind, namespaced: namespace != nil)
    }

    /// `pod/kt-connect-shadow-abcde in default`, as kubectl names it.
    public var description: String {
        "\(kind.lowercased())/\(name)" + (namespace.map { " in \($0)" } ?? "")
    }
}

/// What undoes one change. Every undo is safe to run twice and after a crash: it checks that what it would undo is
/// still what the session made.
public enum Undo: Codable, Sendable, Hashable {
    /// Delete the object (with its uid as a precondition once known; a pod without a grace period).
    case deleteObject(ObjectRef)
    /// Put `original` back at `path`, but only while the file still holds `written` (what the session wrote).
    case restoreFile(path: String, original: String, written: String)
    /// `resolvectl revert LINK` (systemd-resolved also forgets a link when the link goes).
    case revertResolvedLink(String)
    /// Put the Service's original selector back and drop its lock, while `lease` (the session's) holds it; then wait
    /// (a few seconds at most) until its Endpoints no longer name `shadowPod`, so new connections have moved back
    /// before the shadow goes.
    case restoreSelector(namespace: String, service: String, lease: String, shadowPod: String?)
    /// Scale the workload back to `replicas` and wait (at most `waitSeconds`) until that many are ready.
    case scaleBack(ObjectRef, replicas: Int, waitSeconds: Int)
    /// Leave the auto mesh of the Service (the session of `lease`): the last live member out puts the Service back
    /// and removes the router and the stuntman (`MeshState`).
    case leaveMesh(namespace: String, service: String, lease: String)
    /// Nothing to do: the change goes with the process (a TUN device and its routes vanish when its descriptor
    /// closes, whether the process exits or is killed).
    case goesWithProcess(String)
}

extension Undo {
    /// Undone through the API server (so only with a client of the journal's cluster).
    public var needsCluster: Bool {
        switch self {
        case .deleteObject, .restoreSelector, .scaleBack, .leaveMesh: return true
        case .restoreFile, .revertResolvedLink, .goesWithProcess: return false
        }
    }
}

/// One change, written before it is made.
public struct JournalEntry: Codable, Sendable, Hashable {
    public var sequence: Int
    /// What was (about to be) done, for people: `create pod/kt-connect-shadow-abcde in default`.
    public var change: String
    public var undo: Undo
    /// Undone (or found not to need undoing).
    public var closed: Bool
}

/// The whole journal of one session, as stored.
public struct JournalRecord: Codable, Sendable {
    public struct Cluster: Codable, Sendable, Hashable {
        public var server: String
        public var context: String
        public var namespace: String
    }

    public var version = 1
    public var command: String
    public var session: String
    public var process: ProcessIdentity
    public var user: String
    public var host: String
    /// The cluster the session's objects are in (set once it is known).
    public var cluster: Cluster?
    public var entries: [JournalEntry] = []

    /// Entries not yet undone, newest first (the order to undo them in).
    public var open: [JournalEntry] { entries.filter { !$0.closed }.reversed() }
}

/// A session's write-ahead journal: `~/.kt/journal/<command>-<pid>.json`. Each change is appended, with what undoes
/// it, *before* it is made; the file is replaced atomically (written beside, fsync, rename, fsync of the folder), so
/// a crash at any instant leaves either the old or the new journal, never half of one. An entry is closed when it has
/// been undone. After `kill -9`, the next session or `ktctl clean` finds the journal of a process that is gone and
/// undoes what is still open.
public final class Journal: @unchecked Sendable {
    public let path: String
    private let lock = NSLock()
    private var record: JournalRecord

    /// Starts a journal at `path`, replacing any file there (`Session.run` first moves aside a crashed session's
    /// journal whose pid came round again).
    public init(creating path: String, record: JournalRecord) throws {
        self.path = path
        self.record = record
        try Self.write(record, to: path)
    }

    /// Opens an existing journal (of a crashed session, to undo what it left).
    public init(existing path: String) throws {
        self.path = path
        record = try Self.load(path)
    }

    public static func load(_ path: String) throws -> JournalRecord {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw SessionError.journal("cannot read \(path)")
        }
        do {
            return try JSONDecoder().decode(JournalRecord.self, from: data)
        } catch {
            throw SessionError.journal("\(path) is not a ktctl journal (\(error)); move it away if it is not needed")
        }
    }

    public var snapshot: JournalRecord { lock.withLock { record } }

    /// Records the cluster the session works in.
    public func setCluster(_ cluster: JournalRecord.Cluster) throws {
        try change { $0.cluster = cluster }
    }

    /// Writes `change` and its undo before the change is made; returns the entry's number.
    @discardableResult
    public func append(_ change: String, undo: Undo) throws -> Int {
        var sequence = 0
        try self.change { record in
            sequence = (record.entries.last?.sequence ?? 0) + 1
            record.entries.append(JournalEntry(sequence: sequence, change: change, undo: undo, closed: false))
        }
        return sequence
    }

    /// Replaces an entry's undo (an object's uid, known once it exists).
    public func update(_ sequence: Int, undo: Undo) throws {
        try change { record in
            if let index = record.entries.firstIndex(where: { $0.sequence == sequence }) {
                record.entries[index].undo = undo
            }
        }
    }

    /// Marks an entry undone.
    public func close(_ sequence: Int) throws {
        try change { record in
            if let index = record.entries.firstIndex(where: { $0.sequence == sequence }) {
                record.entries[index].closed = true
            }
        }
    }

    /// Removes the journal (every entry closed, the session over).
    public func remove() {
        lock.withLock { _ = unlink(path) }
    }

    private func change(_ body: (inout JournalRecord) -> Void) throws {
        try lock.withLock {
            var next = record
            body(&next)
            try Self.write(next, to: path)
            record = next
        }
    }

    static func write(_ record: JournalRecord, to path: String) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        let data = try encoder.encode(record)
        do {
            try AtomicFile.replace(path, with: Array(data), mode: 0o600)
        } catch {
            throw SessionError.journal("cannot write \(path): \(error); nothing more is changed")
        }
    }
}

/// Files replaced so that a reader (or a crash) sees the old content or the new, never a mix.
public enum AtomicFile {
    public struct Failure: Error, CustomStringConvertible {
        public var description: String
    }

    /// Writes `bytes` to a new file beside `path`, syncs it, renames it over `path`, and syncs the folder (so the
    /// rename itself survives a power cut).
    public static func replace(_ path: String, with bytes: [UInt8], mode: mode_t = 0o644) throws {
        let directory = (path as NSString).deletingLastPathComponent
        let temporary = "\(directory)/.\((path as NSString).lastPathComponent).\(getpid()).tmp"
        let fd = open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode)
        guard fd >= 0 else { throw Failure(description: "cannot create \(temporary): \(errnoText())") }
        var written = 0
        while written < bytes.count {
            let count = bytes[written...].withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
            if count < 0 && errno == EINTR { continue }
            guard count > 0 else {
                let why = errnoText()
                close(fd)
                unlink(temporary)
                throw Failure(description: "cannot write \(temporary): \(why)")
            }
            written += count
        }
        fchmod(fd, mode)
        guard fsync(fd) == 0 else {
            let why = errnoText()
            close(fd)
            unlink(temporary)
            throw Failure(description: "cannot sync \(temporary): \(why)")
        }
        close(fd)
        guard rename(temporary, path) == 0 else {
            let why = errnoText()
            unlink(temporary)
            throw Failure(description: "cannot rename \(temporary) to \(path): \(why)")
        }
        let folder = open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if folder >= 0 {
            fsync(folder)
            close(folder)
        }
    }

    /// Rewrites `path` in place (one write of the whole content, then the length cut, then fsync): for a file that is
    /// a mount point (a bind-mounted resolv.conf, as `ip netns exec` makes), which rename cannot replace. A reader in
    /// between can see a mix, so `replace` is used wherever it can be.
    public static func rewriteInPlace(_ path: String, with bytes: [UInt8]) throws {
        let fd = open(path, O_WRONLY | O_CLOEXEC)
        guard fd >= 0 else { throw Failure(description: "cannot open \(path): \(errnoText())") }
        defer { close(fd) }
        var written = 0
        while written < bytes.count {
            let count = bytes[written...].withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, off_t(written)) }
            if count < 0 && errno == EINTR { continue }
            guard count > 0 else { throw Failure(description: "cannot write \(path): \(errnoText())") }
            written += count
        }
        guard ftruncate(fd, off_t(bytes.count)) == 0, fsync(fd) == 0 else {
            throw Failure(description: "cannot finish writing \(path): \(errnoText())")
        }
    }

    /// Whether `path` is itself a mount point (in this process's mount namespace).
    public static func isMountPoint(_ path: String) -> Bool {
        guard let text = ProcFile.read("/proc/self/mountinfo") else { return false }
        let resolved = (path as NSString).resolvingSymlinksInPath
        for line in text.split(separator: "\n") {
            let fields = line.split(separator: " ")
            // Field 5 is the mount point, with spaces and the like escaped as octal.
            if fields.count > 4, unescapeMountPath(String(fields[4])) == resolved { return true }
        }
        return false
    }

    static func unescapeMountPath(_ text: String) -> String {
        var result = ""
        var characters = Substring(text)
        while let first = characters.first {
            if first == "\\", characters.count >= 4, let code = UInt8(characters.dropFirst().prefix(3), radix: 8) {
                result.unicodeScalars.append(UnicodeScalar(code))
                characters = characters.dropFirst(4)
            } else {
                result.append(first)
                characters = characters.dropFirst()
            }
        }
        return result
    }

    /// The file's content, written the safest way its kind allows: renamed into place, or in place for a mount point.
    /// A symbolic link is followed: its target is replaced and the link stays.
    public static func write(_ path: String, text: String) throws {
        let bytes = Array(text.utf8)
        if isMountPoint(path) {
            try rewriteInPlace(path, with: bytes)
        } else {
            let target = (path as NSString).resolvingSymlinksInPath
            var info = stat()
            let mode = stat(target, &info) == 0 ? info.st_mode & 0o7777 : 0o644
            try replace(target, with: bytes, mode: mode)
        }
    }

    static func errnoText() -> String { String(cString: strerror(errno)) }
}
