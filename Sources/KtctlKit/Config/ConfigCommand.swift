import Foundation

/// `ktctl config show | get | set | unset | list-profile | save-profile | load-profile | drop-profile`: each reads
/// `~/.kt/config` (or a profile), and a change is checked in full before the file is replaced, so a bad key or value
/// changes nothing.
public struct ConfigCommand: Sendable {
    public var directory: String
    public var schema: ConfigSchema
    /// Whether `value` is one the key's flag takes: nil if so, else the parser's complaint.
    public var validate: @Sendable (_ command: String, _ flag: String, _ value: String) -> String?

    public init(
        directory: String, schema: ConfigSchema,
        validate: @escaping @Sendable (_ command: String, _ flag: String, _ value: String) -> String?
    ) {
        self.directory = directory
        self.schema = schema
        self.validate = validate
    }

    public var path: String { directory + "/config" }
    public var profileDirectory: String { directory + "/profile" }

    public func show(all: Bool) throws -> String {
        let config = try KtConfig.load(path)
        let keys = all ? schema.keys : config.values.flatMap { group, entries in entries.keys.map { "\(group).\($0)" } }
        guard !keys.isEmpty else { return "nothing is configured in \(path) (ktctl config set KEY VALUE)" }
        return keys.sorted().map { key in "\(key) = \(config.value(key) ?? "<empty>")" }.joined(separator: "\n")
    }

    public func get(_ keys: [String]) throws -> String {
        guard !keys.isEmpty else { throw ConfigError("name a key to get (ktctl config show --all lists them)") }
        let config = try KtConfig.load(path)
        for key in keys { try known(key) }
        return keys.map { "\($0) = \(config.value($0) ?? "<empty>")" }.joined(separator: "\n")
    }

    /// `KEY VALUE`, `KEY=VALUE` or `KEY = VALUE`.
    public func set(_ words: [String]) throws -> String {
        let key: String
        let value: String
        switch words.count {
        case 1 where words[0].contains("="):
            let parts = words[0].split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            (key, value) = (String(parts[0]), String(parts[1]))
        case 2:
            (key, value) = (words[0], words[1])
        case 3 where words[1] == "=":
            (key, value) = (words[0], words[2])
        default:
            throw ConfigError(
                "expected KEY VALUE or KEY=VALUE (e.g. ktctl config set connect.mode socks); nothing was changed")
        }
        let flag = try known(key)
        if flag.isSwitch {
            guard ["true", "false"].contains(value.lowercased()) else {
                throw ConfigError(
                    "\(key) is a switch: its value is true or false, not \"\(value)\"; nothing was changed")
            }
        } else {
            guard !value.isEmpty else {
                throw ConfigError("\(key) needs a value (ktctl config unset \(key) removes it); nothing was changed")
            }
            let group = String(key.split(separator: ".")[0])
            let command =
                group == "global"
                ? (schema.commands.first { $0.value[flag.name] != nil }?.key ?? "connect") : group
            if let complaint = validate(command, flag.name, value) {
                throw ConfigError("\(key) = \(value): \(complaint); nothing was changed")
            }
        }
        var config = try KtConfig.load(path)
        config.set(key, flag.isSwitch ? value.lowercased() : value)
        try config.save(path)
        return "\(key) = \(config.value(key) ?? "")"
    }

    public func unset(_ keys: [String], all: Bool) throws -> String {
        if all {
            try KtConfig().save(path)
            return "every key unset"
        }
        guard !keys.isEmpty else { throw ConfigError("name a key to unset, or --all; nothing was changed") }
        for key in keys { try known(key) }
        var config = try KtConfig.load(path)
        for key in keys { config.set(key, nil) }
        try config.save(path)
        return keys.map { "\($0) unset" }.joined(separator: "\n")
    }

    public func listProfiles() -> String {
        let names = ((try? FileManager.default.contentsOfDirectory(atPath: profileDirectory)) ?? []).filter {
            !$0.hasPrefix(".")
        }.sorted()
        guard !names.isEmpty else { return "no profiles (ktctl config save-profile NAME)" }
        let formatter = ISO8601DateFormatter()
        return names.map { name in
            let modified =
                (try? FileManager.default.attributesOfItem(atPath: "\(profileDirectory)/\(name)"))?[.modificationDate]
                as? Date
            return "\(name)\t\(modified.map { formatter.string(from: $0) } ?? "")"
        }.joined(separator: "\n")
    }

    public func saveProfile(_ name: String, overwrite: Bool) throws -> String {
        try Self.checkProfileName(name)
        let target = "\(profileDirectory)/\(name)"
        if FileManager.default.fileExists(atPath: target), !overwrite {
            throw ConfigError("profile \(name) exists; --force replaces it; nothing was changed")
        }
        let config = try KtConfig.load(path)
        try config.save(target)
        return "saved \(path) as profile \(name)"
    }

    public func loadProfile(_ name: String, dryRun: Bool) throws -> String {
        try Self.checkProfileName(name)
        let source = "\(profileDirectory)/\(name)"
        guard FileManager.default.fileExists(atPath: source) else {
            throw ConfigError("no profile \(name) (ktctl config list-profile); nothing was changed")
        }
        let profile = try KtConfig.load(source)
        for group in profile.values.keys.sorted() {
            for key in (profile.values[group] ?? [:]).keys.sorted() {
                guard schema.flag("\(group).\(key)") != nil else {
                    throw ConfigError("profile \(name) sets \(group).\(key), which is not a key; nothing was changed")
                }
            }
        }
        if dryRun { return try profile.yaml() }
        try profile.save(path)
        return "loaded profile \(name) into \(path)"
    }

    public func dropProfile(_ name: String) throws -> String {
        try Self.checkProfileName(name)
        let target = "\(profileDirectory)/\(name)"
        guard FileManager.default.fileExists(atPath: target) else {
            throw ConfigError("no profile \(name) (ktctl config list-profile); nothing was changed")
        }
        guard unlink(target) == 0 else {
            throw ConfigError("cannot remove \(target): \(String(cString: strerror(errno))); nothing was changed")
        }
        return "dropped profile \(name)"
    }

    static func checkProfileName(_ name: String) throws {
        guard !name.isEmpty, !name.hasPrefix("."),
            name.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || "-_.".contains($0)) })
        else {
            throw ConfigError(
                "a profile name is letters, digits, '-', '_' and '.', not \"\(name)\"; nothing was changed")
        }
    }

    @discardableResult
    func known(_ key: String) throws -> ConfigSchema.Flag {
        guard let flag = schema.flag(key) else {
            throw ConfigError(
                "unknown key \(key); nothing was changed. The keys: " + schema.keys.joined(separator: ", "))
        }
        return flag
    }
}
