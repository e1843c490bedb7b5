import Foundation

/// DNS wiring without systemd-resolved: `/etc/resolv.conf` rewritten in place with the session's resolver first and
/// the cluster search list, the original kept in a journal (`<state>/resolv.conf.orig`) until it is restored, so
/// that a crashed session's change is undone by the next `ktctl connect` or `ktctl clean`.
///
/// The file is rewritten in place (not replaced by a rename): it may be a bind mount, as in a network namespace
/// entered with `ip netns exec`, where the namespace's own resolv.conf is mounted over /etc/resolv.conf.
public struct ResolvConfWiring: Sendable {
    public var path: String
    public var journal: String

    public init(path: String = "/etc/resolv.conf", stateDirectory: String) {
        self.path = path
        self.journal = "\(stateDirectory)/resolv.conf.orig"
    }

    /// The nameservers the file names now (the upstreams for everything that is not the cluster's).
    public func nameservers() -> [String] {
        let text = (try? String(contentsOfFile: path, encoding: .utf8)) ?? ""
        return Self.nameservers(in: text)
    }

    static func nameservers(in text: String) -> [String] {
        text.split(separator: "\n").compactMap { line in
            let words = line.split(whereSeparator: { $0 == " " || $0 == "\t" })
            return words.count >= 2 && words[0] == "nameserver" ? String(words[1]) : nil
        }
    }

    /// The rewritten file: our nameserver first, the original nameservers after it (for when we are gone and the
    /// file was not restored), the cluster search list before the original one.
    static func rewritten(_ original: String, resolver: String, search: [String]) -> String {
        var searchLine = search
        var others: [String] = []
        for line in original.split(separator: "\n", omittingEmptySubsequences: false).map(String.init) {
            let words = line.split(whereSeparator: { $0 == " " || $0 == "\t" }).map(String.init)
            if let first = words.first, first == "search" || first == "domain" {
                searchLine += words.dropFirst().filter { !searchLine.contains($0) }
            } else if !line.isEmpty {
                others.append(line)
            }
        }
        return
            ([
                "# written by ktctl connect; the original is restored when it stops", "nameserver \(resolver)",
                "search \(searchLine.joined(separator: " "))",
            ] + others).joined(separator: "\n") + "\n"
    }

    /// Points the file at `resolver`. The original goes to the journal first (unless a journal from a crashed
    /// session is already there: that one is the real original).
    public func apply(resolver: String, search: [String]) throws {
        let original = try String(contentsOfFile: path, encoding: .utf8)
        if !FileManager.default.fileExists(atPath: journal) {
            try original.write(toFile: journal, atomically: true, encoding: .utf8)
        }
        let base = (try? String(contentsOfFile: journal, encoding: .utf8)) ?? original
        try Self.overwrite(path, with: Self.rewritten(base, resolver: resolver, search: search))
    }

    /// A change to undo is journaled.
    public var hasJournal: Bool { FileManager.default.fileExists(atPath: journal) }

    /// Puts the original back and removes the journal; nothing to do without a journal.
    @discardableResult
    public func restore() throws -> Bool {
        guard let original = try? String(contentsOfFile: journal, encoding: .utf8) else { return false }
        try Self.overwrite(path, with: original)
        try FileManager.default.removeItem(atPath: journal)
        return true
    }

    static func overwrite(_ path: String, with text: String) throws {
        let handle = try FileHandle(forUpdating: URL(fileURLWithPath: path))
        defer { try? handle.close() }
        try handle.truncate(atOffset: 0)
        try handle.write(contentsOf: Data(text.utf8))
    }
}
