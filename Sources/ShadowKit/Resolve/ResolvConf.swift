import Glibc
import KtWire
import NIOCore

/// The parts of a pod's `/etc/resolv.conf` that kt-shadow resolves with, read the way glibc reads them
/// (resolv.conf(5)): up to three `nameserver` lines, the last `search` (or `domain`) line, and `options ndots:`,
/// `timeout:` and `attempts:`.
///
/// In a pod the file reads `search <ns>.svc.cluster.local svc.cluster.local cluster.local` with `ndots:5`, which is
/// how `tomcat` becomes `tomcat.<ns>.svc.cluster.local`.
public struct ResolvConf: Hashable, Sendable {
    public var nameservers: [SocketAddress]
    public var search: [DNSName]
    /// A name with at least this many dots is tried as it is before the search list.
    public var ndots: Int
    /// How long one query to one nameserver may take.
    public var timeout: TimeAmount
    /// How many rounds over the nameservers.
    public var attempts: Int

    /// glibc's limit on nameservers; more are ignored.
    public static let maximumNameservers = 3
    /// glibc's limit on search domains.
    public static let maximumSearchDomains = 6

    public init(
        nameservers: [SocketAddress], search: [DNSName] = [], ndots: Int = 1, timeout: TimeAmount = .seconds(5),
        attempts: Int = 2
    ) {
        self.nameservers = nameservers
        self.search = search
        self.ndots = ndots
        self.timeout = timeout
        self.attempts = attempts
    }

    /// Parses the text of a resolv.conf. Lines it does not understand are skipped, as glibc skips them.
    public init(parsing text: String) {
        self.init(nameservers: [])
        for rawLine in text.split(whereSeparator: \.isNewline) {
            let line = rawLine.prefix { $0 != "#" && $0 != ";" }
            let words = line.split(whereSeparator: { $0 == " " || $0 == "\t" }).map(String.init)
            guard let keyword = words.first else { continue }
            switch keyword {
            case "nameserver":
                guard words.count >= 2, nameservers.count < Self.maximumNameservers,
                    let address = try? SocketAddress(ipAddress: words[1], port: 53)
                else { continue }
                nameservers.append(address)
            case "search", "domain":
                search = words.dropFirst().prefix(Self.maximumSearchDomains).compactMap { word in
                    guard let name = try? DNSName(parsing: word), !name.isRoot else { return nil }
                    return name
                }
            case "options":
                for option in words.dropFirst() {
                    let parts = option.split(separator: ":", maxSplits: 1)
                    guard parts.count == 2, let value = Int(parts[1]), value >= 0 else { continue }
                    switch parts[0] {
                    case "ndots": ndots = min(value, 15)
                    case "timeout": timeout = .seconds(Int64(max(1, min(value, 30))))
                    case "attempts": attempts = max(1, min(value, 5))
                    default: break
                    }
                }
            default:
                continue
            }
        }
    }

    /// Reads `path`; nil when it cannot be read.
    public static func load(path: String) -> ResolvConf? {
        guard let text = readTextFile(path) else { return nil }
        return ResolvConf(parsing: text)
    }

    /// The names to try for `name`, in order: as it is first when it has at least `ndots` dots, else the search list
    /// first (glibc's `res_search`). Expansions longer than a DNS name may be are skipped.
    public func candidates(for name: DNSName) -> [DNSName] {
        guard !name.isRoot else { return [name] }
        let expansions = search.compactMap { try? name.appending($0) }
        if name.labels.count - 1 >= ndots {
            return [name] + expansions.filter { $0 != name }
        }
        return expansions.filter { $0 != name } + [name]
    }
}

/// The name-to-address lines of an `/etc/hosts` (Kubernetes writes the pod's own name and `hostAliases` there).
public struct HostsFile: Hashable, Sendable {
    /// Lower-cased name → addresses, in file order.
    public var entries: [String: [IPAddress]]

    public init(entries: [String: [IPAddress]] = [:]) {
        self.entries = entries
    }

    public init(parsing text: String) {
        self.init()
        for rawLine in text.split(whereSeparator: \.isNewline) {
            let line = rawLine.prefix { $0 != "#" }
            let words = line.split(whereSeparator: { $0 == " " || $0 == "\t" })
            guard words.count >= 2, let address = IPAddress(String(words[0])) else { continue }
            for name in words.dropFirst() {
                let key = name.lowercased().trimmingSuffix(".")
                if !(entries[key]?.contains(address) ?? false) { entries[key, default: []].append(address) }
            }
        }
    }

    public static func load(path: String) -> HostsFile? {
        guard let text = readTextFile(path) else { return nil }
        return HostsFile(parsing: text)
    }

    /// The addresses for `name` (any case, trailing dot optional).
    public func addresses(for name: String) -> [IPAddress] {
        entries[name.lowercased().trimmingSuffix(".")] ?? []
    }
}

extension String {
    fileprivate func trimmingSuffix(_ suffix: String) -> String {
        hasSuffix(suffix) ? String(dropLast(suffix.count)) : self
    }
}

/// A small text file's contents (resolv.conf, hosts); nil when it cannot be read or is not UTF-8.
func readTextFile(_ path: String, limit: Int = 1 << 20) -> String? {
    guard let file = fopen(path, "r") else { return nil }
    defer { fclose(file) }
    var bytes: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 4096)
    while bytes.count < limit {
        let count = fread(&chunk, 1, chunk.count, file)
        if count <= 0 { break }
        bytes.append(contentsOf: chunk[0..<count])
    }
    return String(validating: bytes, as: UTF8.self)
}
