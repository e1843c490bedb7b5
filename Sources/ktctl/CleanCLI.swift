import ArgumentParser
import Foundation
import KtctlKit
import Logging

struct CleanCLI: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "clean",
        abstract: "Remove what ktctl sessions that did not end cleanly left behind.",
        discussion: """
            On this machine: the changes of sessions whose ktctl is gone (killed, crashed), from their journals in \
            ~/.kt/journal (resolv.conf restored if it still holds what ktctl wrote; their cluster objects deleted), \
            and stale pid files. In the cluster (the namespace of -n or the context, or every namespace with -A): \
            sessions whose Lease was not renewed for longer than its duration (or --threshold, if longer), judged by \
            the API server's clock only. A running session is never touched. Prints everything it removes; exits \
            non-zero, with the reasons, when it could not finish.
            """)

    @OptionGroup var cluster: ClusterFlags

    @Option(
        help: ArgumentHelp(
            "How long a session's Lease may go unrenewed before it counts as dead: 90s, 5m, 1h (default: each Lease's "
                + "own duration, 90 s for ktctl's). It can only make clean more patient.",
            valueName: "duration"))
    var threshold: String?

    @Option(name: .customLong("thresholdInMinus"), help: .hidden)
    var thresholdInMinutes: Int?

    @Flag(name: [.customLong("dry-run"), .customLong("dryRun")], help: "Only say what would be removed.")
    var dryRun = false

    @Flag(
        name: [.customLong("local-only"), .customLong("localOnly")],
        help: "Only this machine (journals and pid files); nothing in the cluster.")
    var localOnly = false

    @Flag(name: [.customShort("A"), .customLong("all-namespaces")], help: "Every namespace, not only one.")
    var allNamespaces = false

    @Option(name: .customLong("state-dir"), help: .hidden)
    var stateDirectory: String?

    func run() async throws {
        var options = CleanOptions(
            cluster: try cluster.options(), stateDirectory: stateDirectory ?? StateDirectory.defaultRoot)
        if let threshold {
            guard let seconds = Self.parseDuration(threshold), seconds > 0 else {
                throw ValidationError("--threshold \(threshold): expected a duration like 90s, 5m or 1h")
            }
            options.threshold = seconds
        } else if let thresholdInMinutes {
            guard thresholdInMinutes > 0 else { throw ValidationError("--thresholdInMinus must be positive") }
            options.threshold = TimeInterval(thresholdInMinutes * 60)
        }
        options.dryRun = dryRun
        options.localOnly = localOnly
        options.allNamespaces = allNamespaces
        let logger = Output.logger(debug: cluster.debug)
        do {
            try await CleanCommand.run(options, logger: logger, print: Output.line)
        } catch {
            Output.error("ktctl clean: \(error)")
            throw ExitCode.failure
        }
    }

    /// `90`, `90s`, `5m`, `1h`, `1h30m` as seconds.
    static func parseDuration(_ text: String) -> TimeInterval? {
        if let seconds = Double(text) { return seconds }
        var total: TimeInterval = 0
        var number = ""
        for character in text {
            if character.isNumber || character == "." {
                number.append(character)
            } else {
                guard let value = Double(number) else { return nil }
                switch character {
                case "s": total += value
                case "m": total += value * 60
                case "h": total += value * 3600
                default: return nil
                }
                number = ""
            }
        }
        return number.isEmpty ? total : nil
    }
}

/// Lines for the user, written with `write(2)` and no buffering: a terminal that went away (SIGHUP) makes writes
/// fail, and the session's clean-up must go on regardless.
enum Output {
    @Sendable static func line(_ text: String) {
        write(STDOUT_FILENO, text + "\n")
    }

    static func error(_ text: String) {
        write(STDERR_FILENO, text + "\n")
    }

    static func write(_ fd: Int32, _ text: String) {
        var bytes = Array(text.utf8)
        var offset = 0
        while offset < bytes.count {
            let count = bytes[offset...].withUnsafeMutableBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
            if count < 0 && errno == EINTR { continue }
            guard count > 0 else { return }
            offset += count
        }
    }

    static func logger(debug: Bool) -> Logger {
        var logger = Logger(label: "ktctl")
        logger.logLevel = debug ? .debug : .warning
        return logger
    }
}
