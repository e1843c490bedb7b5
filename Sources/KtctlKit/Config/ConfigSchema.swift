import Foundation

/// The keys `~/.kt/config` may set: `global.<flag>` for the flags every cluster command shares and
/// `<command>.<flag>` for each command's own, named by the flag's dash-case long name (kt-connect's form). Built from
/// the command tree as ArgumentParser describes it (`--experimental-dump-help`'s JSON), so a new flag is a key at once.
public struct ConfigSchema: Sendable, Equatable {
    public struct Flag: Sendable, Equatable {
        /// Every spelling on the command line (`--namespace`, `-n`), to tell whether the user gave it.
        public var spellings: [String]
        /// The dash-case long name: the key, and what a default is passed as.
        public var name: String
        /// A flag without a value (`--debug`): true or false in the file.
        public var isSwitch: Bool
    }

    /// group → key → flag. The group is `global` or a command's name.
    public var groups: [String: [String: Flag]]
    /// command → long name → flag: every flag each command has (the global ones too).
    public var commands: [String: [String: Flag]]

    /// The long names of the flags every cluster command has (kt-connect's global flags).
    public static let globalKeys: Set<String> = [
        "namespace", "kubeconfig", "context", "image", "image-pull-secret", "service-account", "node-selector",
        "with-label", "with-annotation", "pod-quota", "timeout", "debug",
    ]

    public init(groups: [String: [String: Flag]], commands: [String: [String: Flag]]) {
        self.groups = groups
        self.commands = commands
    }

    /// From the JSON of `ktctl --experimental-dump-help`.
    public init(dumpHelp json: Data, skipping skipped: Set<String> = ["config"]) throws {
        guard let root = try JSONSerialization.jsonObject(with: json) as? [String: Any],
            let command = root["command"] as? [String: Any]
        else { throw ConfigError("the command tree's description is not what ktctl writes") }
        var groups: [String: [String: Flag]] = ["global": [:]]
        var commands: [String: [String: Flag]] = [:]
        for subcommand in command["subcommands"] as? [[String: Any]] ?? [] {
            guard let name = subcommand["commandName"] as? String, !skipped.contains(name) else { continue }
            var own: [String: Flag] = [:]
            for argument in subcommand["arguments"] as? [[String: Any]] ?? [] {
                let kind = argument["kind"] as? String
                guard kind == "option" || kind == "flag",
                    (argument["shouldDisplay"] as? Bool) ?? true,
                    let names = argument["names"] as? [[String: String]]
                else { continue }
                let spellings = names.compactMap { entry -> String? in
                    guard let spelled = entry["name"] else { return nil }
                    return entry["kind"] == "short" ? "-" + spelled : "--" + spelled
                }
                // The dash-case long name (camelCase spellings are kt-connect's aliases).
                guard
                    let long = names.first(where: {
                        $0["kind"] == "long" && $0["name"].map { $0 == $0.lowercased() } == true
                    })?["name"], !["help", "version", "state-dir"].contains(long)
                else { continue }
                let flag = Flag(spellings: spellings, name: long, isSwitch: kind == "flag")
                commands[name, default: [:]][long] = flag
                if Self.globalKeys.contains(long) {
                    groups["global"]?[long] = flag
                } else {
                    own[long] = flag
                }
            }
            if !own.isEmpty { groups[name] = own }
        }
        self.groups = groups
        self.commands = commands
    }

    /// `group.key`, every one, sorted.
    public var keys: [String] {
        groups.flatMap { group, flags in flags.keys.map { "\(group).\($0)" } }.sorted()
    }

    public func flag(_ key: String) -> Flag? {
        let parts = key.split(separator: ".", maxSplits: 1).map(String.init)
        guard parts.count == 2 else { return nil }
        return groups[parts[0]]?[parts[1]]
    }
}

/// A config command's refusal: what was wrong, and that nothing was changed.
public struct ConfigError: Error, CustomStringConvertible, Sendable {
    public var description: String
    public init(_ description: String) { self.description = description }
}
