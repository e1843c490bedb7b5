import Foundation
import Glibc

/// `ktctl status`'s flags.
public struct StatusOptions: Sendable {
    public var stateDirectory: String
    public var json = false
    public var watch = false
    /// How often `--watch` redraws.
    public var interval: Duration = .seconds(1)

    public init(stateDirectory: String) {
        self.stateDirectory = stateDirectory
    }
}

/// `ktctl status [-o json] [--watch]`: the sessions running on this machine, as each one last wrote itself
/// (`StatusBoard`, twice a second): mode, cluster, shadow and tunnel, routes, DNS, flows and bytes each way, the
/// Services it changed. Only reads files under `~/.kt/status`; it never talks to the cluster or to the sessions.
public enum StatusCommand {
    /// What the status files say: the sessions whose process lives, and how many files belong to processes that are
    /// gone (`ktctl clean` removes those).
    public static func load(_ state: StateDirectory) -> (sessions: [SessionStatus], gone: Int) {
        var sessions: [SessionStatus] = []
        var gone = 0
        for path in state.statusFiles() {
            guard let data = FileManager.default.contents(atPath: path),
                let status = try? SessionStatus.decoder.decode(SessionStatus.self, from: data)
            else { continue }
            if status.process.isAlive { sessions.append(status) } else { gone += 1 }
        }
        return (sessions.sorted { ($0.started, $0.pid) < ($1.started, $1.pid) }, gone)
    }

    public static func run(_ options: StatusOptions, print: @escaping @Sendable (String) -> Void) async throws {
        let state = StateDirectory(options.stateDirectory)
        guard options.watch else {
            let (sessions, gone) = load(state)
            print(options.json ? json(sessions) : text(sessions, gone: gone, state: state, previous: [:], now: Date()))
            return
        }
        let terminal = isatty(STDOUT_FILENO) == 1
        var previous: [Int32: SessionStatus] = [:]
        while !Task.isCancelled {
            let (sessions, gone) = load(state)
            let now = Date()
            if options.json {
                // One JSON document per line (JSON Lines), for a program to follow.
                print(
                    String(decoding: try jsonEncoder(pretty: false).encode(Listing(sessions: sessions)), as: UTF8.self))
            } else {
                let body = text(sessions, gone: gone, state: state, previous: previous, now: now)
                let heading = "ktctl status, every \(options.interval.components.seconds) s: \(clockTime(now))"
                // A terminal is redrawn in place; anything else gets one block after the other.
                print(terminal ? "\u{1B}[H\u{1B}[2J" + heading + "\n\n" + body : "--- " + heading + "\n" + body)
            }
            previous = Dictionary(sessions.map { ($0.pid, $0) }, uniquingKeysWith: { _, last in last })
            try await Task.sleep(for: options.interval)
        }
    }

    // MARK: - Rendering

    struct Listing: Codable {
        var sessions: [SessionStatus]
    }

    static func jsonEncoder(pretty: Bool) -> JSONEncoder {
        let encoder = JSONEncoder()
        encoder.outputFormatting = pretty ? [.sortedKeys, .prettyPrinted, .withoutEscapingSlashes] : [.sortedKeys]
        encoder.dateEncodingStrategy = .iso8601
        return encoder
    }

    /// `{"sessions": [...]}`, the status files' own fields.
    public static func json(_ sessions: [SessionStatus]) -> String {
        let data = (try? jsonEncoder(pretty: true).encode(Listing(sessions: sessions))) ?? Data("{}".utf8)
        return String(decoding: data, as: UTF8.self)
    }

    /// The sessions for a person; rates (bytes a second) when the same session's `previous` status is known.
    public static func text(
        _ sessions: [SessionStatus], gone: Int, state: StateDirectory, previous: [Int32: SessionStatus], now: Date
    ) -> String {
        var lines: [String] = []
        if sessions.isEmpty {
            lines.append("no ktctl session is running (state in \(state.root))")
            if geteuid() != 0 && access("/root/.kt/status", R_OK) != 0 {
                lines.append("sessions started with sudo keep their state in root's ~/.kt: sudo ktctl status")
            }
        }
        for status in sessions {
            if !lines.isEmpty { lines.append("") }
            lines += block(status, previous: previous[status.pid], now: now)
        }
        if gone > 0 {
            lines.append("")
            lines.append(
                "\(gone) status file\(gone == 1 ? "" : "s") of sessions that are gone (killed or crashed): "
                    + "`ktctl clean` removes what they left")
        }
        return lines.joined(separator: "\n")
    }

    static func block(_ status: SessionStatus, previous: SessionStatus?, now: Date) -> [String] {
        var lines: [String] = []
        let age = duration(now.timeIntervalSince(status.started))
        var heading =
            "\(status.command) (pid \(status.pid)\(status.session.isEmpty ? "" : ", session \(status.session)"), "
            + "\(status.user)@\(status.host)): \(status.phase) for \(age)"
        let silent = now.timeIntervalSince(status.updated)
        if silent > 5 { heading += " (not updated for \(duration(silent)): the session may be stuck)" }
        lines.append(heading)
        func row(_ name: String, _ value: String) {
            lines.append("  " + name.padding(toLength: 10, withPad: " ", startingAt: 0) + " " + value)
        }
        if let cluster = status.cluster {
            row(
                "cluster",
                "\(cluster.server) (context \(cluster.context)), namespace \(cluster.namespace)"
                    + (status.lease.map { ", lease \($0)" } ?? ""))
        }
        if let mode = status.mode { row("mode", mode) }
        if let shadow = status.shadow {
            row(
                "shadow",
                "pod \(shadow.pod)\(shadow.ip.map { " (\($0))" } ?? ""): tunnel \(shadow.tunnel), "
                    + "\(shadow.reconnects) reconnect\(shadow.reconnects == 1 ? "" : "s")")
        }
        if let routes = status.routes { row("routes", routes.isEmpty ? "none" : routes.joined(separator: " ")) }
        if let dns = status.dns { row("dns", dns) }
        if let proxy = status.proxy { row("proxy", proxy) }
        if let traffic = status.traffic {
            row(
                "flows",
                "\(traffic.flowsOpen) open, \(traffic.flowsOpened) opened, \(traffic.flowsRefused) refused")
            let elapsed = previous.map { status.updated.timeIntervalSince($0.updated) } ?? 0
            func rate(_ now: Int, _ before: Int?) -> String {
                guard let before, elapsed > 0.2 else { return "" }
                return " (\(bytes(Int(Double(max(0, now - before)) / elapsed)))/s)"
            }
            row(
                "bytes",
                "\(bytes(traffic.bytesFromCluster)) from the cluster"
                    + rate(traffic.bytesFromCluster, previous?.traffic?.bytesFromCluster) + ", "
                    + "\(bytes(traffic.bytesToCluster)) to it"
                    + rate(traffic.bytesToCluster, previous?.traffic?.bytesToCluster))
            if traffic.datagramsToCluster + traffic.datagramsFromCluster + traffic.echoes > 0 {
                row(
                    "datagrams",
                    "\(traffic.datagramsToCluster) to the cluster, \(traffic.datagramsFromCluster) from it, "
                        + "\(traffic.echoes) echo\(traffic.echoes == 1 ? "" : "es")")
            }
        }
        for service in status.services {
            row("service", "\(service.name) in \(service.namespace): \(service.state), \(service.detail)")
            for port in service.ports { row("", port) }
            if let incoming = service.incoming {
                row(
                    "",
                    "\(incoming.accepted) connection\(incoming.accepted == 1 ? "" : "s") from the cluster, "
                        + "\(incoming.open) open; \(bytes(incoming.bytesToLocal)) to this machine, "
                        + "\(bytes(incoming.bytesFromLocal)) back"
                        + (incoming.refused == 0
                            ? "" : "; \(incoming.refused) refused because nothing listened on the local port"))
            }
        }
        return lines
    }

    /// `512 B`, `1.5 kB`, `1.07 GB` (powers of 1000, as curl and iperf print them).
    public static func bytes(_ count: Int) -> String {
        let units = ["B", "kB", "MB", "GB", "TB"]
        var value = Double(count)
        var unit = 0
        while value >= 1000 && unit < units.count - 1 {
            value /= 1000
            unit += 1
        }
        if unit == 0 { return "\(count) B" }
        return String(format: value < 10 ? "%.2f" : value < 100 ? "%.1f" : "%.0f", value) + " " + units[unit]
    }

    /// `42 s`, `3 min 5 s`, `2 h 10 min`.
    static func duration(_ seconds: TimeInterval) -> String {
        let whole = max(0, Int(seconds))
        if whole < 60 { return "\(whole) s" }
        if whole < 3600 { return "\(whole / 60) min \(whole % 60) s" }
        return "\(whole / 3600) h \(whole % 3600 / 60) min"
    }

    static func clockTime(_ date: Date) -> String {
        let formatter = DateFormatter()
        formatter.dateFormat = "HH:mm:ss"
        return formatter.string(from: date)
    }
}
