import Foundation
import Glibc
import KubeKit

/// Sessions of this machine that did not end cleanly (`kill -9`, a crash, a power cut): their journals name a process
/// that is verifiably gone. What they left open is undone, last first: changes to this machine always, cluster
/// objects when the client at hand talks to the journal's cluster. An entry that cannot be undone now stays open.
public enum Recovery {
    /// A journal found on disk and what is known of its process.
    public struct Found: Sendable {
        public var path: String
        public var record: JournalRecord
        public var liveness: ProcessIdentity.Liveness
    }

    /// Every journal in the state directory with its process's liveness (unreadable files are skipped and named).
    public static func journals(_ state: StateDirectory) -> (found: [Found], unreadable: [String]) {
        var found: [Found] = []
        var unreadable: [String] = []
        for path in state.journals() {
            do {
                let record = try Journal.load(path)
                found.append(Found(path: path, record: record, liveness: record.process.liveness))
            } catch {
                unreadable.append("\(error)")
            }
        }
        return (found, unreadable)
    }

    /// Undoes what crashed sessions left; returns a line per thing done (or left).
    public static func recoverCrashed(_ state: StateDirectory, client: KubeClient?, server: String?) async -> [String] {
        var lines: [String] = []
        for found in journals(state).found {
            guard case .gone(let why) = found.liveness else { continue }
            lines += await recover(found, client: client, server: server, why: why, dryRun: false)
        }
        lines += removeStalePidFiles(state, dryRun: false)
        return lines
    }

    /// Undoes (or, dry, lists) the open entries of one crashed session's journal; removes the journal when nothing is
    /// left open.
    public static func recover(_ found: Found, client: KubeClient?, server: String?, why: String, dryRun: Bool)
        async -> [String]
    {
        let record = found.record
        let name = "the \(record.command) session \(record.session) (pid \(record.process.pid), \(why))"
        let clusterMatches = record.cluster.map { $0.server == server } ?? false
        let runner = UndoRunner(client: clusterMatches ? client : nil, settle: UndoRunner.proxySettle)
        var lines: [String] = []
        guard let journal = try? Journal(existing: found.path) else { return ["cannot read \(found.path)"] }
        var left: [String] = []
        for entry in record.open {
            if entry.undo.needsCluster, !clusterMatches {
                left.append(entry.change)
                continue
            }
            if dryRun {
                lines.append("would undo \(entry.change) of \(name)")
                continue
            }
            let outcome = await runner.run(entry.undo)
            switch outcome {
            case .done(let text): lines.append("\(text) (left by \(name))")
            case .leftAlone(let text): lines.append("\(text) (left by \(name))")
            case .failed(let text):
                left.append(entry.change)
                lines.append("could not undo \(entry.change) of \(name): \(text)")
            }
            if outcome.closesEntry { try? journal.close(entry.sequence) }
        }
        if !left.isEmpty, !clusterMatches, let cluster = record.cluster {
            lines.append(
                "\(name) left \(left.joined(separator: ", ")) in the cluster at \(cluster.server) (context "
                    + "\(cluster.context)); run `ktctl clean --context \(cluster.context)` to remove it")
        }
        if !dryRun && journal.snapshot.open.isEmpty { journal.remove() }
        return lines
    }

    /// Pid files whose process is gone (kt-connect's layout: the file holds the pid), and status files of sessions
    /// that are gone.
    public static func removeStalePidFiles(_ state: StateDirectory, dryRun: Bool) -> [String] {
        var lines: [String] = []
        for path in state.pidFiles() {
            guard let text = try? String(contentsOfFile: path, encoding: .utf8),
                let pid = Int32(text.trimmingCharacters(in: .whitespacesAndNewlines))
            else { continue }
            guard case .gone(let why) = ProcessIdentity(pid: pid, startTime: nil).liveness else { continue }
            if !dryRun { unlink(path) }
            lines.append("\(dryRun ? "would remove" : "removed") \(path) (\(why))")
        }
        for path in state.statusFiles() {
            guard let data = FileManager.default.contents(atPath: path) else { continue }
            // A file that does not parse is a crash's too: its writer renames whole files into place.
            let status = try? SessionStatus.decoder.decode(SessionStatus.self, from: data)
            if let status, status.process.isAlive { continue }
            var why = "not a status file"
            if let status, case .gone(let reason) = status.process.liveness { why = "its session is gone: \(reason)" }
            if !dryRun { unlink(path) }
            lines.append("\(dryRun ? "would remove" : "removed") \(path) (\(why))")
        }
        return lines + removeStaleTemporaries(state, dryRun: dryRun)
    }

    /// A write's temporary file (`.<name>.<pid>.tmp`, written beside and renamed) that a killed writer left: the
    /// file it was replacing is whole, so the temporary only goes, once its writer is gone.
    static func removeStaleTemporaries(_ state: StateDirectory, dryRun: Bool) -> [String] {
        var lines: [String] = []
        for directory in [state.journalDirectory, state.pidDirectory, state.statusDirectory] {
            for name in (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? [] {
                let parts = name.split(separator: ".")
                guard name.hasPrefix("."), name.hasSuffix(".tmp"), parts.count >= 3,
                    let pid = Int32(parts[parts.count - 2]),
                    case .gone(let why) = ProcessIdentity(pid: pid, startTime: nil).liveness
                else { continue }
                let path = "\(directory)/\(name)"
                if !dryRun { unlink(path) }
                lines.append("\(dryRun ? "would remove" : "removed") \(path) (an unfinished write; \(why))")
            }
        }
        return lines
    }
}
