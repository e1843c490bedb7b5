import Foundation

/// DNS wiring where systemd-resolved answers the machine's lookups: the TUN gets per-link DNS (the session's
/// resolver) with routing domains for the cluster's names and the cluster search list, and is kept out of the default
/// route, so only cluster names come to the session and everything else stays with resolved's own servers.
/// `/etc/resolv.conf` is not touched. resolved forgets a link's settings when the link goes, so a crashed session
/// (whose TUN went with its process) leaves nothing to undo.
///
/// The settings are made with `resolvectl` (D-Bus underneath), as any admin would type them.
public struct ResolvedWiring: Sendable {
    /// resolved's Varlink socket: it exists and takes connections while resolved runs.
    public static let socketPath = "/run/systemd/resolve/io.systemd.Resolve"
    /// The addresses of resolved's stub listeners, as resolv.conf names them when resolved is in charge.
    static let stubAddresses: Set<String> = ["127.0.0.53", "127.0.0.54"]

    public var resolvectl: String

    public init(resolvectl: String) {
        self.resolvectl = resolvectl
    }

    /// resolved is in charge of lookups here: it runs (its socket answers) and resolv.conf sends programs to its stub.
    public static func isInCharge(resolvConfNameservers: [String], socketPath: String = socketPath) -> Bool {
        resolvConfNameservers.contains { stubAddresses.contains($0) } && socketAnswers(socketPath)
    }

    static func socketAnswers(_ path: String) -> Bool {
        let descriptor = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard descriptor >= 0 else { return false }
        defer { close(descriptor) }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        guard bytes.count < MemoryLayout.size(ofValue: address.sun_path) else { return false }
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            for (index, byte) in bytes.enumerated() { raw[index] = byte }
        }
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(descriptor, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        return connected == 0
    }

    /// `resolvectl` on `PATH`, or nil.
    public static func locate(path: String = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin") -> String?
    {
        for directory in path.split(separator: ":").map(String.init) + ["/usr/bin", "/bin"] {
            let candidate = "\(directory)/resolvectl"
            if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
        }
        return nil
    }

    /// The domains for the link: the search list first (it makes short names into cluster names, in the pod's order,
    /// and routes them here), then `~` routing domains for the cluster domain, `svc` and the namespace, so that
    /// `svc.ns`, `svc.ns.svc` and every name under the cluster domain come to the session.
    public static func domains(clusterDomain: String, namespace: String, searchList: [String]) -> [String] {
        func bare(_ name: String) -> String { name.hasSuffix(".") ? String(name.dropLast()) : name }
        var domains = searchList.map(bare)
        var routed = Set(domains)
        for routing in [bare(clusterDomain), "svc", namespace] where !routed.contains(routing) {
            routed.insert(routing)
            domains.append("~\(routing)")
        }
        return domains
    }

    /// Points `link`'s DNS at `server` with `domains`, and keeps the link out of resolved's default route.
    public func apply(link: String, server: String, domains: [String]) async throws {
        try await resolvectl(["dns", link, server])
        try await resolvectl(["domain", link] + domains)
        try await resolvectl(["default-route", link, "false"])
    }

    /// Drops what `apply` set (resolved also drops it by itself when the link goes away).
    public func revert(link: String) async {
        _ = try? await resolvectl(["revert", link])
    }

    func resolvectl(_ arguments: [String]) async throws {
        let (status, errors) = try await Self.run([resolvectl] + arguments)
        guard status == 0 else {
            throw ConnectError.other(
                "`resolvectl \(arguments.joined(separator: " "))` failed (exit \(status)): "
                    + errors.trimmingCharacters(in: .whitespacesAndNewlines)
                    + "; the DNS change is undone; --dns-mode resolv.conf rewrites /etc/resolv.conf instead")
        }
    }

    /// Runs a program on a thread of its own (not the concurrency pool's); its exit status and standard error.
    static func run(_ argv: [String]) async throws -> (Int32, String) {
        try await withCheckedThrowingContinuation { continuation in
            let thread = Thread {
                let process = Process()
                process.executableURL = URL(fileURLWithPath: argv[0])
                process.arguments = Array(argv.dropFirst())
                process.standardInput = FileHandle.nullDevice
                process.standardOutput = FileHandle.nullDevice
                let errors = Pipe()
                process.standardError = errors
                do {
                    try process.run()
                } catch {
                    continuation.resume(throwing: ConnectError.other("cannot run \(argv[0]): \(error)"))
                    return
                }
                let bytes = errors.fileHandleForReading.readDataToEndOfFile()
                process.waitUntilExit()
                continuation.resume(returning: (process.terminationStatus, String(decoding: bytes, as: UTF8.self)))
            }
            thread.start()
        }
    }
}
