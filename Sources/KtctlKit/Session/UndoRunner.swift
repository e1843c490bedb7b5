import Foundation
import KubeKit

/// Carries out `Undo`s: for a session stopping, for the next session after a crash, and for `ktctl clean`. Each
/// checks first that what it would undo is still what the session made.
public struct UndoRunner: Sendable {
    /// The client for cluster entries; nil when the entry's cluster is not the one at hand.
    public var client: KubeClient?

    public init(client: KubeClient?) {
        self.client = client
    }

    public enum Outcome: Sendable, Hashable {
        /// Undone, or nothing was left to undo; the words say which.
        case done(String)
        /// Not ours any more (replaced, or changed since): left as it is, the entry closed.
        case leftAlone(String)
        /// Could not be done now; the entry stays open for `ktctl clean`.
        case failed(String)

        public var closesEntry: Bool {
            if case .failed = self { return false }
            return true
        }
    }

    public func run(_ undo: Undo) async -> Outcome {
        switch undo {
        case .deleteObject(let object):
            return await delete(object)
        case .restoreFile(let path, let original, let written):
            return Self.restore(path: path, original: original, written: written)
        case .revertResolvedLink(let link):
            guard let resolvectl = ResolvedWiring.locate() else {
                return .done("systemd-resolved's settings for \(link) go with the link")
            }
            await ResolvedWiring(resolvectl: resolvectl).revert(link: link)
            return .done("reverted systemd-resolved's settings for \(link)")
        case .goesWithProcess(let what):
            return .done("\(what) went with the process")
        }
    }

    func delete(_ object: ObjectRef) async -> Outcome {
        guard let client else {
            return .failed("\(object): not connected to its cluster")
        }
        var options = DeleteOptions()
        options.preconditionUID = object.uid
        // A shadow needs no graceful end: its connections are ours and already closed.
        if object.kind == "Pod" { options.gracePeriodSeconds = 0 }
        do {
            _ = try await client.send(
                try .delete(object.resource, name: object.name, namespace: object.namespace, options: options))
            return .done("deleted \(object)")
        } catch let error as KubeAPIError where error.reason == .notFound {
            return .done("\(object) was already gone")
        } catch let error as KubeAPIError where error.reason == .conflict {
            return .leftAlone("\(object) is another object now (not this session's); left alone")
        } catch {
            return .failed("\(object): \(error)")
        }
    }

    static func restore(path: String, original: String, written: String) -> Outcome {
        guard let current = try? String(contentsOfFile: path, encoding: .utf8) else {
            return .leftAlone("\(path) cannot be read; left as it is")
        }
        if current == original { return .done("\(path) was already as it had been") }
        guard current == written else {
            return .leftAlone(
                "\(path) changed since ktctl wrote it; the newer file is kept (the original was:\n"
                    + original.split(separator: "\n").map { "    " + $0 }.joined(separator: "\n") + ")")
        }
        do {
            try AtomicFile.write(path, text: original)
            return .done("restored \(path)")
        } catch {
            return .failed("\(path): \(error)")
        }
    }
}
