import Foundation
import NamespaceTestSupport
import Testing

@testable import KtctlKit

/// kt-connect 0.3.7's flags: translated to ktctl's, or refused with what to use instead.
@Suite struct KtConnectFlagsTests {
    @Test func translatedFlagsHaveTheSameEffect() throws {
        #expect(
            try KtConnectFlags.translate(["-d", "-n", "dev", "-i", "img:1", "-f", "connect", "--mode", "tun2socks"])
                == ["-d", "-n", "dev", "-i", "img:1", "--force-update", "connect", "--mode", "tun"])
        #expect(try KtConnectFlags.translate(["connect", "--mode=tun2socks"]) == ["connect", "--mode", "tun"])
        #expect(
            try KtConnectFlags.translate(["connect", "--dnsMode", "localDNS", "--podCreationTimeout=30"])
                == ["connect", "--dns-mode", "auto", "--timeout", "30"])
        #expect(try KtConnectFlags.translate(["connect", "--ipVersion", "4", "--skipCleanup"]) == ["connect"])
        // Other commands' modes, and everything after --, pass unchanged.
        #expect(
            try KtConnectFlags.translate(["mesh", "tomcat", "--mode", "auto", "--versionMark", "ci"])
                == ["mesh", "tomcat", "--mode", "auto", "--versionMark", "ci"])
        #expect(
            try KtConnectFlags.translate(["forward", "--", "--mode", "sshuttle"]) == [
                "forward", "--", "--mode", "sshuttle",
            ])
    }

    @Test func refusalsSayWhatToUseInstead() {
        for (arguments, advice) in [
            (["connect", "--mode", "sshuttle"], "--mode tun does what it did"),
            (["connect", "--dnsMode", "podDNS"], "use --dnsMode localDNS"),
            (["connect", "--dnsMode", "hosts:a,b"], "ktctl does not write the hosts file"),
            (["connect", "--dnsMode", "localDNS:upstream,cluster"], "in that order only"),
            (["--useShadowDeployment", "connect"], "ktctl runs the shadow as a Pod"),
            (["connect", "--portForwardTimeout", "20"], "re-opens a dropped port-forward at once"),
            (["connect", "--ipVersion", "6"], "IPv6 clusters are not supported yet"),
            (["connect", "--shareShadow"], "its own shadow pod"),
            (["exchange", "tomcat", "--mode", "ephemeral", "--expose", "8080"], "use --mode selector or --mode scale"),
            (["connect", "--podCreationTimeout"], "needs a value"),
        ] {
            #expect(throws: KtConnectFlags.Refusal.self) { try KtConnectFlags.translate(arguments) }
            do {
                _ = try KtConnectFlags.translate(arguments)
            } catch {
                #expect("\(error)".contains(advice), "\(arguments): \(error)")
            }
        }
    }
}

/// Every flag of kt-connect 0.3.7 (`shared/reference/kt-connect.md` §2), command by command, against the ktctl that
/// was built: each is one of ktctl's own spellings, or translated, or refused with a reason. A flag that is none of
/// these would reach ArgumentParser as "unknown option" with no advice.
@Suite struct KtConnectFlagAuditTests {
    static let global = [
        "--namespace", "-n", "--kubeconfig", "-c", "--context", "--image", "-i", "--imagePullSecret",
        "--serviceAccount",
        "--nodeSelector", "--debug", "-d", "--withLabel", "-l", "--withAnnotation", "--portForwardTimeout",
        "--podCreationTimeout", "--useShadowDeployment", "--useLocalTime", "--forceUpdate", "-f", "--podQuota",
        "--ipVersion", "--asWorker", "--help", "-h",
    ]
    static let commands: [String: [String]] = [
        "connect": [
            "--mode", "--dnsMode", "--shareShadow", "--clusterDomain", "--disablePodIp", "--skipCleanup",
            "--includeIps",
            "--excludeIps", "--ingressIp", "--disableTunDevice", "--disableTunRoute", "--proxyPort", "--proxyAddr",
            "--dnsCacheTtl", "--dnsPort", "--includeDomains",
        ],
        "exchange": ["--expose", "--mode", "--skipPortChecking", "--recoverWaitTime"],
        "mesh": ["--expose", "--mode", "--versionMark", "--skipPortChecking", "--routerImage"],
        "preview": ["--expose", "--external", "--skipPortChecking"],
        "provide": ["--expose", "--external", "--skipPortChecking"],
        "forward": [],
        "recover": [],
        "clean": ["--thresholdInMinus", "--dryRun", "--localOnly"],
        "birdseye": ["--sortBy", "--showConnector", "--hideNaturalService"],
    ]

    /// Every spelling each command (and its aliases) accepts, from `ktctl --experimental-dump-help`.
    static func spellings() async throws -> [String: Set<String>] {
        let ktctl = try #require(builtExecutable("ktctl"))
        let dump = try await TestNamespace.run([ktctl, "--experimental-dump-help"])
        let root = try #require(try JSONSerialization.jsonObject(with: Data(dump.output.utf8)) as? [String: Any])
        let command = try #require(root["command"] as? [String: Any])
        var result: [String: Set<String>] = [:]
        for subcommand in command["subcommands"] as? [[String: Any]] ?? [] {
            var names: Set<String> = ["--help", "-h"]
            for argument in subcommand["arguments"] as? [[String: Any]] ?? [] {
                for name in argument["names"] as? [[String: Any]] ?? [] {
                    guard let kind = name["kind"] as? String, let text = name["name"] as? String else { continue }
                    names.insert((kind == "short" ? "-" : "--") + text)
                }
            }
            let name = try #require(subcommand["commandName"] as? String)
            result[name] = names
            for alias in subcommand["aliases"] as? [String] ?? [] { result[alias] = names }
        }
        return result
    }

    @Test func everyFlagIsOursTranslatedOrRefusedWithAReason() async throws {
        let known = try await Self.spellings()
        for (command, own) in Self.commands {
            let accepted = try #require(known[command], "ktctl has no \(command) command")
            // kt-connect's clean, forward and recover take the global flags too (cobra's persistent flags).
            for flag in own + Self.global {
                if accepted.contains(flag) { continue }
                do {
                    let translated = try KtConnectFlags.translate([command, flag, "4"])
                    #expect(
                        translated != [command, flag, "4"]
                            && translated.dropFirst().allSatisfy { !$0.hasPrefix("-") || accepted.contains($0) },
                        "ktctl \(command) \(flag): neither ktctl's flag nor translated to one (\(translated))")
                } catch let refusal as KtConnectFlags.Refusal {
                    #expect(refusal.description.contains(flag), "\(refusal)")
                }
            }
        }
    }
}
