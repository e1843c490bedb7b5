import Foundation

/// DNS wiring without systemd-resolved: `/etc/resolv.conf` pointed at the session's resolver, with the cluster search
/// list. The session journals the original and what it wrote before writing; the undo puts the original back only
/// while the file still holds what ktctl wrote (a file changed since — by DHCP, a VPN, the user — is newer and is
/// kept, and ktctl says so).
///
/// The file is replaced atomically (`AtomicFile.write`: written beside, synced, renamed), so no reader ever sees it
/// half-written, and a symbolic link is followed to its target. A resolv.conf that is a mount point (as in a network
/// namespace entered with `ip netns exec`, where the namespace's file is bind-mounted over it) cannot be renamed
/// over; it is rewritten in place with one write and a sync.
public struct ResolvConfWiring: Sendable {
    public var path: String

    public init(path: String = "/etc/resolv.conf") {
        self.path = path
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

    /// The change as a plan: the file now, and what ktctl would write.
    public func plan(resolver: String, search: [String]) throws -> (original: String, written: String) {
        let original = try String(contentsOfFile: path, encoding: .utf8)
        return (original, Self.rewritten(original, resolver: resolver, search: search))
    }

    /// Writes `text` (the planned file) the safest way the file allows.
    public func write(_ text: String) throws {
        try AtomicFile.write(path, text: text)
    }
}
