import Foundation
import Yams

/// `~/.kt/config`: flag defaults per command, as kt-connect keeps them (YAML, `group: {key: value}`), and its
/// profiles (`~/.kt/profile/<name>`, whole copies of the file). The invoking user's home under sudo, so that `sudo
/// ktctl connect` sees the user's defaults. Explicit flags always win (`defaults(for:)` adds only what is missing).
public struct KtConfig: Sendable, Equatable {
    public var values: [String: [String: String]] = [:]

    public init(values: [String: [String: String]] = [:]) {
        self.values = values
    }

    /// `~/.kt` of the user who ran ktctl (SUDO_USER's under sudo).
    public static var directory: String {
        let environment = ProcessInfo.processInfo.environment
        if geteuid() == 0, let user = environment["SUDO_USER"], !user.isEmpty, user != "root",
            let entry = getpwnam(user), let home = entry.pointee.pw_dir
        {
            return String(cString: home) + "/.kt"
        }
        if let home = environment["HOME"], !home.isEmpty { return home + "/.kt" }
        return StateDirectory.defaultRoot
    }

    public static func load(_ path: String) throws -> KtConfig {
        guard FileManager.default.fileExists(atPath: path) else { return KtConfig() }
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else {
            throw ConfigError("cannot read \(path)")
        }
        let document: Any?
        do {
            document = try Yams.load(yaml: text)
        } catch {
            throw ConfigError("\(path) is not YAML (\(error)); fix or remove it")
        }
        guard let document else { return KtConfig() }
        guard let groups = document as? [String: Any] else {
            throw ConfigError("\(path) must map groups to keys (global: {namespace: dev}); fix or remove it")
        }
        var values: [String: [String: String]] = [:]
        for (group, entries) in groups {
            guard let entries = entries as? [String: Any] else {
                throw ConfigError("\(path): group \(group) must map keys to values")
            }
            values[group] = entries.mapValues { "\($0)" }
        }
        return KtConfig(values: values)
    }

    public func yaml() throws -> String {
        values.isEmpty ? "" : try Yams.dump(object: values.filter { !$0.value.isEmpty }, sortKeys: true)
    }

    /// Written beside and renamed: a crash leaves the old file or the new one.
    public func save(_ path: String) throws {
        try FileManager.default.createDirectory(
            atPath: (path as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        try AtomicFile.replace(path, with: Array(try yaml().utf8), mode: 0o644)
    }

    public func value(_ key: String) -> String? {
        let parts = key.split(separator: ".", maxSplits: 1).map(String.init)
        guard parts.count == 2 else { return nil }
        return values[parts[0]]?[parts[1]]
    }

    public mutating func set(_ key: String, _ value: String?) {
        let parts = key.split(separator: ".", maxSplits: 1).map(String.init)
        guard parts.count == 2 else { return }
        values[parts[0], default: [:]][parts[1]] = value
        if values[parts[0]]?.isEmpty == true { values[parts[0]] = nil }
    }

    /// `arguments` (the subcommand first) with a `--flag=value` for each configured key of `global` and of the
    /// subcommand that the arguments do not already give in any spelling. Keys the schema does not know for this
    /// command are left out (a `global.image` means nothing to `ktctl route`).
    public func defaults(for arguments: [String], schema: ConfigSchema) -> [String] {
        guard let command = arguments.first else { return arguments }
        var added: [String] = []
        for group in ["global", command] {
            for (key, value) in (values[group] ?? [:]).sorted(by: { $0.key < $1.key }) {
                // Only a flag this command has (`global.image` means nothing to `ktctl route`).
                guard schema.groups[group]?[key] != nil, let flag = schema.commands[command]?[key] else { continue }
                let given = arguments.dropFirst().contains { argument in
                    flag.spellings.contains { argument == $0 || argument.hasPrefix($0 + "=") }
                }
                if given { continue }
                if flag.isSwitch {
                    if ["true", "yes", "on", "1"].contains(value.lowercased()) { added.append("--" + flag.name) }
                } else {
                    added.append("--\(flag.name)=\(value)")
                }
            }
        }
        return [command] + added + arguments.dropFirst()
    }
}
