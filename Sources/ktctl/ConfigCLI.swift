import ArgumentParser
import Foundation
import KtctlKit

/// `ktctl config`: defaults for the other commands' flags in ~/.kt/config, and profiles of them.
struct ConfigCLI: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "config",
        abstract: "Flag defaults in ~/.kt/config, and profiles of them.",
        discussion: """
            Keys are global.<flag> (namespace, kubeconfig, context, image, …: every command that has the flag) and \
            <command>.<flag> (connect.mode, mesh.router-image, …), with the flag's long name. A flag given on the \
            command line always wins. Under sudo the invoking user's ~/.kt/config is used. `ktctl config show --all` \
            lists every key.
            """,
        subcommands: [
            Show.self, Get.self, Set.self, Unset.self, ListProfile.self, SaveProfile.self, LoadProfile.self,
            DropProfile.self,
        ])

    static func command() throws -> ConfigCommand {
        ConfigCommand(
            directory: KtConfig.directory, schema: try Ktctl.configSchema(),
            validate: { command, flag, value in
                do {
                    _ = try Ktctl.parseAsRoot(try KtConnectFlags.translate([command, "--\(flag)=\(value)"]))
                    return nil
                } catch let refusal as KtConnectFlags.Refusal {
                    return refusal.description
                } catch {
                    let message = Ktctl.message(for: error)
                    return message.contains("--\(flag)") ? message : nil
                }
            })
    }

    /// A refusal is printed as `Error: …` without the usage text (it is about the file, not the command line).
    /// Tab completes the keys (kt-connect's completion offered them too).
    static let keyCompletion = CompletionKind.custom { _, _, prefix in
        ((try? Ktctl.configSchema().keys) ?? []).filter { $0.hasPrefix(prefix) }.sorted()
    }

    /// Tab completes the saved profiles' names.
    static let profileCompletion = CompletionKind.custom { _, _, prefix in
        let names = (try? FileManager.default.contentsOfDirectory(atPath: KtConfig.directory + "/profile")) ?? []
        return names.filter { $0.hasPrefix(prefix) && !$0.hasPrefix(".") }.sorted()
    }

    static func run(_ body: (ConfigCommand) throws -> String) throws {
        print(try body(try command()))
    }

    struct Show: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Print the configured keys (--all: every key).")
        @Flag(name: [.short, .long], help: "Every key, configured or not.") var all = false
        func run() throws { try ConfigCLI.run { try $0.show(all: all) } }
    }

    struct Get: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Print keys' values.")
        @Argument(help: "Keys, e.g. connect.mode.", completion: ConfigCLI.keyCompletion) var keys: [String] = []
        func run() throws { try ConfigCLI.run { try $0.get(keys) } }
    }

    struct Set: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Set a key: KEY VALUE, KEY=VALUE or KEY = VALUE (checked as its flag would be).")
        @Argument(help: "KEY VALUE, KEY=VALUE or KEY = VALUE.", completion: ConfigCLI.keyCompletion)
        var words: [String] = []
        func run() throws { try ConfigCLI.run { try $0.set(words) } }
    }

    struct Unset: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Remove keys (--all: every one).")
        @Flag(name: [.short, .long], help: "Every key.") var all = false
        @Argument(help: "Keys.", completion: ConfigCLI.keyCompletion) var keys: [String] = []
        func run() throws { try ConfigCLI.run { try $0.unset(keys, all: all) } }
    }

    struct ListProfile: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "list-profile", abstract: "List the saved profiles (~/.kt/profile).")
        func run() throws { try ConfigCLI.run { $0.listProfiles() } }
    }

    struct SaveProfile: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "save-profile", abstract: "Save ~/.kt/config as a profile.")
        @Argument(help: "The profile's name (letters, digits, '-', '_', '.').") var name: String
        @Flag(name: [.short, .long], help: "Replace a profile of that name.") var force = false
        func run() throws { try ConfigCLI.run { try $0.saveProfile(name, overwrite: force) } }
    }

    struct LoadProfile: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "load-profile", abstract: "Replace ~/.kt/config with a profile.")
        @Argument(help: "The profile's name.", completion: ConfigCLI.profileCompletion) var name: String
        @Flag(name: [.customLong("dry-run"), .customLong("dryRun")], help: "Only print the profile.") var dryRun = false
        func run() throws { try ConfigCLI.run { try $0.loadProfile(name, dryRun: dryRun) } }
    }

    struct DropProfile: ParsableCommand {
        static let configuration = CommandConfiguration(commandName: "drop-profile", abstract: "Delete a profile.")
        @Argument(help: "The profile's name.", completion: ConfigCLI.profileCompletion) var name: String
        func run() throws { try ConfigCLI.run { try $0.dropProfile(name) } }
    }
}
