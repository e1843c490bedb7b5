import Foundation
import KtctlKit
import NamespaceTestSupport
import Testing

/// `~/.kt/config`: keys from the real command tree, the three `set` forms, refusals that change nothing, profiles,
/// and defaults that never override a flag on the command line.
@Suite struct ConfigTests {
    static func schema() throws -> ConfigSchema {
        let ktctl = try #require(builtExecutable("ktctl"))
        let process = Process()
        process.executableURL = URL(fileURLWithPath: ktctl)
        process.arguments = ["--experimental-dump-help"]
        let output = Pipe()
        process.standardOutput = output
        try process.run()
        let data = output.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return try ConfigSchema(dumpHelp: data)
    }

    static func command(_ directory: String, _ schema: ConfigSchema) -> ConfigCommand {
        ConfigCommand(
            directory: directory, schema: schema,
            validate: { command, flag, value in
                flag == "mode" && !["tun", "socks"].contains(value) ? "--mode takes tun or socks" : nil
            })
    }

    @Test func keysComeFromTheCommands() throws {
        let schema = try Self.schema()
        for key in [
            "global.namespace", "global.kubeconfig", "global.image", "global.debug", "connect.mode", "connect.dns-mode",
            "mesh.router-image", "exchange.expose",
        ] {
            #expect(schema.flag(key) != nil, "\(key)")
        }
        #expect(schema.flag("global.debug")?.isSwitch == true)
        #expect(schema.flag("connect.namespace") == nil)  // a global key, under global
        #expect(schema.flag("connect.dnsMode") == nil)  // camelCase spellings are aliases, not keys
        #expect(schema.flag("config.show") == nil)
        #expect(schema.commands["connect"]?["namespace"]?.spellings.contains("-n") == true)
    }

    @Test func setAcceptsThreeFormsAndRefusesWithoutChangingAnything() throws {
        let scratch = FileManager.default.temporaryDirectory.appendingPathComponent("ktconfig-\(getpid())-a").path
        defer { try? FileManager.default.removeItem(atPath: scratch) }
        let config = Self.command(scratch, try Self.schema())
        #expect(try config.set(["connect.mode", "socks"]) == "connect.mode = socks")
        #expect(try config.set(["global.namespace=dev"]) == "global.namespace = dev")
        #expect(
            try config.set(["global.image", "=", "registry.local/kt-shadow:1"])
                == "global.image = registry.local/kt-shadow:1")
        #expect(try config.set(["global.debug", "TRUE"]) == "global.debug = true")
        let before = try Data(contentsOf: URL(fileURLWithPath: config.path))
        for (words, complaint) in [
            (["connect.mode", "bogus"], "--mode takes tun or socks; nothing was changed"),
            (["no.such", "1"], "unknown key no.such; nothing was changed. The keys: "),
            (["global.debug", "maybe"], "is a switch: its value is true or false"),
            (["connect.mode"], "expected KEY VALUE or KEY=VALUE"),
            (["global.namespace="], "needs a value"),
        ] {
            #expect(throws: ConfigError.self) { try config.set(words) }
            do {
                _ = try config.set(words)
            } catch let error as ConfigError {
                #expect(error.description.contains(complaint), "\(words): \(error)")
            }
        }
        #expect(try Data(contentsOf: URL(fileURLWithPath: config.path)) == before)
        #expect(try config.get(["connect.mode", "global.context"]) == "connect.mode = socks\nglobal.context = <empty>")
        #expect(try config.unset(["connect.mode"], all: false) == "connect.mode unset")
        #expect(try KtConfig.load(config.path).value("connect.mode") == nil)
        #expect(try KtConfig.load(config.path).value("global.namespace") == "dev")
    }

    @Test func profilesSaveLoadAndDrop() throws {
        let scratch = FileManager.default.temporaryDirectory.appendingPathComponent("ktconfig-\(getpid())-b").path
        defer { try? FileManager.default.removeItem(atPath: scratch) }
        let config = Self.command(scratch, try Self.schema())
        _ = try config.set(["connect.mode", "socks"])
        #expect(try config.saveProfile("team-a", overwrite: false) == "saved \(config.path) as profile team-a")
        #expect(throws: ConfigError.self) { try config.saveProfile("team-a", overwrite: false) }
        #expect(throws: ConfigError.self) { try config.saveProfile("../escape", overwrite: false) }
        _ = try config.set(["connect.mode", "tun"])
        #expect(config.listProfiles().hasPrefix("team-a\t"))
        #expect(try config.loadProfile("team-a", dryRun: true) == "connect:\n  mode: socks\n")
        #expect(try KtConfig.load(config.path).value("connect.mode") == "tun")
        _ = try config.loadProfile("team-a", dryRun: false)
        #expect(try KtConfig.load(config.path).value("connect.mode") == "socks")
        // A profile with a key that is not one is refused whole.
        try "connect:\n  warp: 9\n".write(toFile: config.profileDirectory + "/bad", atomically: true, encoding: .utf8)
        #expect(throws: ConfigError.self) { try config.loadProfile("bad", dryRun: false) }
        #expect(try KtConfig.load(config.path).value("connect.mode") == "socks")
        #expect(try config.dropProfile("team-a") == "dropped profile team-a")
        #expect(throws: ConfigError.self) { try config.dropProfile("team-a") }
    }

    @Test func defaultsNeverOverrideTheCommandLine() throws {
        let schema = try Self.schema()
        let config = KtConfig(values: [
            "global": ["namespace": "dev", "image": "registry.local/kt-shadow:1", "debug": "true"],
            "connect": ["mode": "socks"], "exchange": ["mode": "scale"],
        ])
        #expect(
            config.defaults(for: ["connect"], schema: schema)
                == ["connect", "--debug", "--image=registry.local/kt-shadow:1", "--namespace=dev", "--mode=socks"])
        // Given in any spelling: left alone.
        #expect(
            config.defaults(for: ["connect", "-n", "prod", "--mode", "tun", "-d"], schema: schema)
                == ["connect", "--image=registry.local/kt-shadow:1", "-n", "prod", "--mode", "tun", "-d"])
        #expect(
            config.defaults(for: ["connect", "--namespace=prod", "--image=x"], schema: schema)
                == ["connect", "--debug", "--mode=socks", "--namespace=prod", "--image=x"])
        // Only flags the command has: route takes none of these.
        #expect(config.defaults(for: ["route"], schema: schema) == ["route"])
        #expect(config.defaults(for: ["exchange", "tomcat"], schema: schema).contains("--mode=scale"))
        // A kt-connect config file's values are kt-connect's: translated after the defaults go in, as main does.
        let legacy = KtConfig(values: ["connect": ["mode": "tun2socks", "dns-mode": "localDNS"]])
        #expect(
            try KtConnectFlags.translate(legacy.defaults(for: ["connect"], schema: schema))
                == ["connect", "--dns-mode", "auto", "--mode", "tun"])
        // A switch set to false adds nothing.
        let off = KtConfig(values: ["global": ["debug": "false"]])
        #expect(off.defaults(for: ["clean"], schema: schema) == ["clean"])
    }
}
