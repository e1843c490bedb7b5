import ArgumentParser
import Foundation
import KtTunnel
import Logging
import NIOCore
import NIOSSH
import ShadowKit

/// kt-shadow: the agent in the shadow pod. This executable only parses flags; the server lives in ShadowKit.
@main
struct KtShadow: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "kt-shadow",
        abstract: "The SSH agent in ktctl's shadow pod: dials, listens and relays datagrams for ktctl.",
        discussion: """
            The host key comes from ktctl (KT_HOST_KEY or --host-key: an ed25519 seed in base64), so ktctl knows \
            whom it talks to before the pod starts; without one a fresh key is made. Its fingerprint is the first \
            log line ("kt-shadow host key SHA256:… listening on …") and, with --fingerprint-file, written to a file. \
            Only public-key logins with the authorized keys are accepted, within --login-timeout; no shell or \
            program is ever run. It listens on 127.0.0.1 by default: port-forward reaches it there, and nothing else \
            in the cluster can.
            """,
        version: "0.1.0-dev"
    )

    @Option(help: "Address and port to listen on (port-forward reaches 127.0.0.1 in the pod).")
    var listen = "127.0.0.1:2222"

    @Option(
        help: ArgumentHelp(
            "File with the host key's ed25519 seed in base64.",
            discussion: "Without it, KT_HOST_KEY is read; with neither, a fresh host key is made."))
    var hostKey: String?

    @Option(help: "Seconds a connection may take to log in before it is closed.")
    var loginTimeout: Int = 10

    @Option(
        help: ArgumentHelp(
            "File with the public keys allowed to log in (authorized_keys format).",
            discussion: "Without it, the keys are read from the KT_AUTHORIZED_KEYS environment variable."))
    var authorizedKeys: String?

    @Option(help: "Also write the host key's fingerprint to this file.")
    var fingerprintFile: String?

    @Option(help: "resolv.conf to resolve names with (nameservers, search list, ndots).")
    var resolvConf = "/etc/resolv.conf"

    @Option(help: "hosts file consulted before DNS.")
    var hosts = "/etc/hosts"

    @Option(help: "Seconds a dial may take before it is reported as timed out.")
    var dialTimeout: Int = 10

    @Option(
        help: ArgumentHelp("Bind reverse forwards to this address instead of the one requested.", visibility: .hidden))
    var forwardBind: String?

    @Option(help: "Event-loop threads.")
    var threads: Int = System.coreCount

    @Flag(help: "Log every channel, dial and request.")
    var debug = false

    func validate() throws {
        guard dialTimeout > 0 else { throw ValidationError("--dial-timeout must be at least 1 second") }
        guard threads > 0 else { throw ValidationError("--threads must be at least 1") }
        guard loginTimeout > 0 else { throw ValidationError("--login-timeout must be at least 1 second") }
    }

    func run() async throws {
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = debug ? .debug : .info
            return handler
        }
        let logger = Logger(label: "kt-shadow")
        let address = try Self.parseListen(listen)
        let keys: [NIOSSHPublicKey]
        if let authorizedKeys {
            guard let text = try? String(contentsOfFile: authorizedKeys, encoding: .utf8) else {
                throw ValidationError("cannot read --authorized-keys \(authorizedKeys)")
            }
            keys = try ShadowConfiguration.parseAuthorizedKeys(text, source: authorizedKeys)
        } else if let text = ProcessInfo.processInfo.environment["KT_AUTHORIZED_KEYS"], !text.isEmpty {
            keys = try ShadowConfiguration.parseAuthorizedKeys(text, source: "KT_AUTHORIZED_KEYS")
        } else {
            throw ValidationError("no authorized keys: pass --authorized-keys FILE or set KT_AUTHORIZED_KEYS")
        }
        let host: SessionKey
        if let hostKey {
            guard let text = try? String(contentsOfFile: hostKey, encoding: .utf8) else {
                throw ValidationError("cannot read --host-key \(hostKey)")
            }
            do { host = try SessionKey(seedBase64: text) } catch {
                throw ValidationError("--host-key \(hostKey): \(error)")
            }
        } else if let text = ProcessInfo.processInfo.environment["KT_HOST_KEY"], !text.isEmpty {
            do { host = try SessionKey(seedBase64: text) } catch { throw ValidationError("KT_HOST_KEY: \(error)") }
        } else {
            host = SessionKey()
        }
        var configuration = ShadowConfiguration(listen: address, authorizedKeys: keys, hostKey: host.sshPrivateKey)
        configuration.loginTimeout = .seconds(Int64(loginTimeout))
        configuration.resolvConfPath = resolvConf
        configuration.hostsPath = hosts
        configuration.dialTimeout = .seconds(Int64(dialTimeout))
        configuration.forwardBindAddress = forwardBind
        let status = await ShadowMain.run(
            configuration: configuration, fingerprintFile: fingerprintFile, logger: logger, threads: threads)
        if status != 0 { throw ExitCode(status) }
    }

    /// `HOST:PORT` or `[V6]:PORT`, with a numeric host.
    static func parseListen(_ text: String) throws -> SocketAddress {
        guard let colon = text.lastIndex(of: ":"), let port = Int(text[text.index(after: colon)...]),
            (0...65535).contains(port)
        else { throw ValidationError("--listen \(text): expected ADDRESS:PORT, like 127.0.0.1:2222") }
        var host = String(text[..<colon])
        if host.hasPrefix("["), host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        do {
            return try SocketAddress(ipAddress: host, port: port)
        } catch {
            throw ValidationError("--listen \(text): \(host) is not an IP address")
        }
    }
}
