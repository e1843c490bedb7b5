import Foundation
import KtTunnel
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import NIOSSH
import NamespaceTestSupport
import Testing

/// Why the OpenSSH interop tests cannot run here, or nil.
let openSSHInteropUnavailable: String? = {
    if let reason = tunnelLabUnavailable { return reason }
    if builtExecutable("kt-shadow") == nil { return "kt-shadow is not built (swift build --product kt-shadow)" }
    if !FileManager.default.isExecutableFile(atPath: "/usr/sbin/sshd") { return "needs openssh-server" }
    return nil
}()

/// Stock OpenSSH against our pieces, both ways: Debian's `ssh` client against the kt-shadow executable, and
/// KtTunnel's client against Debian's `sshd`. Everything runs inside a throwaway namespace.
@Suite(
    .serialized, .enabled(if: openSSHInteropUnavailable == nil, "needs root, ssh, sshd, curl, python3 and kt-shadow"))
struct OpenSSHInteropTests {
    /// Options that keep `ssh` away from the user's configuration and known hosts, and make it fail instead of
    /// prompting.
    static func sshOptions(key: String, port: Int) -> [String] {
        [
            "-F", "/dev/null", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o",
            "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-o", "ExitOnForwardFailure=yes", "-o", "ConnectTimeout=5",
            "-i", key, "-p", "\(port)",
        ]
    }

    /// Starts the kt-shadow executable in the lab with a pod-like resolv.conf (the lab's DNS on 127.0.0.1:53) and
    /// waits for its first log line; returns the process and the fingerprint that line printed.
    static func startShadowProcess(lab: TunnelLab, authorizedKeys: String, port: Int) throws -> (
        BackgroundProcess, String
    ) {
        let resolv = try lab.write("resolv.conf", TunnelLab.podResolvConf)
        let hosts = try lab.write("hosts", "127.0.0.1 localhost\n")
        let shadow = try lab.spawn([
            builtExecutable("kt-shadow")!, "--listen", "127.0.0.1:\(port)", "--authorized-keys", authorizedKeys,
            "--resolv-conf", resolv, "--hosts", hosts, "--fingerprint-file", lab.directory + "/fingerprint",
        ])
        guard shadow.waitForOutput("listening on 127.0.0.1:\(port)") else {
            throw TestNamespaceError("kt-shadow did not start: \(shadow.output)")
        }
        let firstLine = shadow.output.split(separator: "\n").first.map(String.init) ?? ""
        guard let range = firstLine.range(of: "SHA256:") else {
            throw TestNamespaceError("no fingerprint in \(firstLine)")
        }
        let fingerprint = String(firstLine[range.lowerBound...].prefix { !$0.isWhitespace })
        return (shadow, fingerprint)
    }

    /// Runs `curl` in the lab until it succeeds (a forward takes a moment to listen) or 10 s pass.
    static func curl(_ lab: TunnelLab, _ arguments: String) throws -> TestNamespace.CommandResult {
        var result = try lab.shell("curl -sS -m 5 \(arguments)")
        let deadline = Date().addingTimeInterval(10)
        while result.status != 0, Date() < deadline {
            usleep(100_000)
            result = try lab.shell("curl -sS -m 5 \(arguments)")
        }
        return result
    }

    @Test func stockSSHClientForwardsBothWaysAndThroughSOCKS() async throws {
        try await TunnelLab.with("kttun-openssh") { lab in
            // The session key as ktctl writes it: ssh reads the private half, kt-shadow the public one.
            let sessionKey = SessionKey()
            try sessionKey.writePrivateKey(to: lab.directory + "/key")
            _ = try lab.write("key.pub", sessionKey.authorizedKeysLine() + "\n")
            _ = try TestNamespace.check(lab.shell("ssh-keygen -q -t ed25519 -N '' -f \(lab.directory)/stranger"))
            try await lab.dnsServer(records: ["web.default.svc.cluster.local": "127.0.0.1"])
            _ = try lab.write("hello.txt", "hello through the shadow\n")
            let web = try lab.spawn([
                "python3", "-m", "http.server", "--bind", "127.0.0.1", "18080", "--directory", lab.directory,
            ])
            #expect(
                try Self.curl(lab, "http://127.0.0.1:18080/hello.txt").output == "hello through the shadow\n",
                "\(web.output)")

            let (_, fingerprint) = try Self.startShadowProcess(
                lab: lab, authorizedKeys: lab.directory + "/key.pub", port: 2222)
            #expect(
                (try? String(contentsOfFile: lab.directory + "/fingerprint", encoding: .utf8))?
                    .trimmingCharacters(in: .whitespacesAndNewlines) == fingerprint)
            let options = Self.sshOptions(key: lab.directory + "/key", port: 2222)

            // KtTunnel pins the fingerprint from that line; any other is refused.
            let pinned = try await lab.connect(port: 2222, key: sessionKey, hostKey: nil, fingerprint: fingerprint)
            #expect(pinned.serverIsShadow)
            pinned.close()
            await #expect(throws: TunnelError.hostKeyMismatch(expected: "SHA256:AAAA", presented: fingerprint)) {
                _ = try await lab.connect(port: 2222, key: sessionKey, hostKey: nil, fingerprint: "SHA256:AAAA")
            }

            // The host key the client sees is the one the first log line printed.
            let verbose = try lab.shell(
                "ssh -v \(options.joined(separator: " ")) -o ExitOnForwardFailure=no kt@127.0.0.1 true 2>&1; true")
            #expect(verbose.output.contains("Server host key: ssh-ed25519 \(fingerprint)"), "\(verbose.output)")

            // -L to a name the shadow resolves with the pod's search list.
            let local = try lab.spawn(["ssh", "-N", "-L", "127.0.0.1:18001:web:18080"] + options + ["kt@127.0.0.1"])
            #expect(
                try Self.curl(lab, "http://127.0.0.1:18001/hello.txt").output == "hello through the shadow\n",
                "\(local.output)")

            // -R: a connection to the shadow's port comes back to a server on the client's side.
            let remote = try lab.spawn(
                ["ssh", "-N", "-R", "127.0.0.1:18002:127.0.0.1:18080"] + options + ["kt@127.0.0.1"])
            #expect(
                try Self.curl(lab, "http://127.0.0.1:18002/hello.txt").output == "hello through the shadow\n",
                "\(remote.output)")

            // -D: SOCKS with the name resolved on the shadow's side.
            let socks = try lab.spawn(["ssh", "-N", "-D", "127.0.0.1:18003"] + options + ["kt@127.0.0.1"])
            #expect(
                try Self.curl(lab, "--socks5-hostname 127.0.0.1:18003 http://web:18080/hello.txt").output
                    == "hello through the shadow\n", "\(socks.output)")

            // A key the shadow does not know gets nothing; a shell command is refused.
            let stranger = try lab.shell(
                "ssh \(Self.sshOptions(key: lab.directory + "/stranger", port: 2222).joined(separator: " ")) kt@127.0.0.1 true 2>&1"
            )
            #expect(stranger.status == 255 && stranger.output.contains("Permission denied"), "\(stranger.output)")
            let shell = try lab.shell("ssh \(options.joined(separator: " ")) kt@127.0.0.1 ls / 2>&1")
            #expect(shell.status != 0 && !shell.output.contains("bin"), "\(shell.output)")
        }
    }

    @Test func ktTunnelClientAgainstStockSSHD() async throws {
        try await TunnelLab.with("kttun-sshd") { lab in
            _ = try TestNamespace.check(lab.shell("ssh-keygen -q -t ed25519 -N '' -f \(lab.directory)/hostkey"))
            let key = SessionKey()
            let authorized = try lab.write("authorized_keys", key.authorizedKeysLine() + "\n", mode: 0o600)
            let config = try lab.write(
                "sshd_config",
                """
                Port 2200
                ListenAddress 127.0.0.1
                HostKey \(lab.directory)/hostkey
                AuthorizedKeysFile \(authorized)
                PidFile \(lab.directory)/sshd.pid
                UsePAM no
                StrictModes no
                PermitRootLogin prohibit-password
                PasswordAuthentication no
                KbdInteractiveAuthentication no
                AllowTcpForwarding yes
                GatewayPorts no

                """)
            // sshd insists on its privilege-separation directory; creating it changes nothing else.
            try FileManager.default.createDirectory(atPath: "/run/sshd", withIntermediateDirectories: true)
            let sshd = try lab.spawn(["/usr/sbin/sshd", "-D", "-e", "-f", config])
            #expect(sshd.waitForOutput("Server listening on 127.0.0.1 port 2200"), "\(sshd.output)")

            let hostKeyLine = try String(contentsOfFile: lab.directory + "/hostkey.pub", encoding: .utf8)
            let hostKey = try NIOSSHPublicKey(
                openSSHPublicKey: hostKeyLine.split(separator: " ").prefix(2).joined(separator: " "))

            // The wrong pinned key is refused before anything else happens.
            await #expect(throws: TunnelError.self) {
                _ = try await lab.connect(port: 2200, key: key, hostKey: SessionKey().sshPublicKey, username: "root")
            }

            let client = try await lab.connect(port: 2200, key: key, hostKey: hostKey, username: "root")
            defer { client.close() }
            #expect(!client.serverIsShadow)

            // direct-tcpip flows.
            let echo = try await lab.echoServer()
            for index in 0..<5 {
                let flow = try await client.openTCP(host: "127.0.0.1", port: echo)
                let text = "flow \(index) " + String(repeating: "x", count: 100_000)
                #expect(String(buffer: try await flow.exchange(ByteBuffer(string: text))) == text)
            }
            do {
                _ = try await client.openTCP(host: "127.0.0.1", port: 1)
                Issue.record("a dial to a closed port succeeded")
            } catch let error as TunnelError {
                guard case .dial = error else {
                    Issue.record("expected a dial failure, got \(error)")
                    return
                }
            }

            // A reverse forward: sshd listens, connections come back as forwarded-tcpip channels.
            let listening = try await client.listen(host: "127.0.0.1", port: 0, handler: forwardToLocal(port: echo))
            #expect(listening > 0)
            let result = try pythonRoundTrip(lab, port: listening)
            #expect(
                result.output.trimmingCharacters(in: .whitespacesAndNewlines) == "100000",
                "\(result.error) \(sshd.output)")
        }
    }
}
