import Foundation
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
