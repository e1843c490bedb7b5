import Foundation
import Testing

@testable import KubeKit

/// Exec credential plugins, run for real: a shell script that records how it was called.
@Suite struct ExecPluginTests {
    /// A plugin that appends its KUBERNETES_EXEC_INFO and arguments to `calls` and prints `output`.
    @discardableResult
    static func plugin(in scratch: Scratch, output: String, exitCode: Int = 0) throws -> String {
        try scratch.write(
            "plugin.sh",
            """
            #!/bin/sh
            printf '%s|%s|%s\\n' "$KUBERNETES_EXEC_INFO" "$*" "$EXTRA" >> '\(scratch.path)/calls'
            cat <<'JSON'
            \(output)
            JSON
            exit \(exitCode)
            """, mode: 0o755)
    }

    static func configuration(
        _ scratch: Scratch, apiVersion: String = "client.authentication.k8s.io/v1", extra: String = ""
    )
        throws -> ExecPluginConfiguration
    {
        let file = try scratch.write(
            "config",
            """
            current-context: c
            contexts: [{name: c, context: {cluster: k, user: u}}]
            clusters:
            - name: k
              cluster:
                server: https://127.0.0.1:6443
                tls-server-name: ktlab.local
                certificate-authority-data: \(Data(pemCA.utf8).base64EncodedString())
                extensions:
                - name: client.authentication.k8s.io/exec
                  extension: {audience: ktlab}
            users:
            - name: u
              user:
                exec:
                  apiVersion: \(apiVersion)
                  command: ./plugin.sh
                  args: [a1, a2]
                  env: [{name: EXTRA, value: from-config}]
                  interactiveMode: Never
                  provideClusterInfo: true
                  installHint: install it with apt\(extra)
            """)
        guard case .exec(let plugin) = try Kubeconfig.load(explicitPath: file).access().credentials else {
            throw TestPKIError(message: "no exec plugin")
        }
        return plugin
    }

    static func calls(_ scratch: Scratch) -> [String] {
        ((try? String(contentsOfFile: "\(scratch.path)/calls", encoding: .utf8)) ?? "").split(separator: "\n").map(
            String.init)
    }

    @Test func tokenIsCachedUntilExpiryAndThePluginSeesItsClusterAndEnv() async throws {
        let scratch = try Scratch()
        try Self.plugin(
            in: scratch,
            output: """
                {"apiVersion":"client.authentication.k8s.io/v1","kind":"ExecCredential",
                 "status":{"token":"tok-1","expirationTimestamp":"2026-11-22T12:00:00Z"}}
                """)
        let clock = ManualDate(RFC3339.parse("2026-11-22T11:00:00Z")!)
        let provider = ExecCredentialProvider(try Self.configuration(scratch), stdinIsTerminal: false, now: clock.read)
        #expect(try await provider.credential().token == "tok-1")
        #expect(try await provider.credential().token == "tok-1")
        #expect(Self.calls(scratch).count == 1)  // cached
        clock.set(RFC3339.parse("2026-11-22T12:00:01Z")!)
        _ = try await provider.credential()
        #expect(Self.calls(scratch).count == 2)  // expired: run again
        await provider.invalidate()
        _ = try await provider.credential()
        #expect(Self.calls(scratch).count == 3)  // after a 401

        let call = try #require(Self.calls(scratch).first).split(separator: "|").map(String.init)
        #expect(call[1] == "a1 a2")
        #expect(call[2] == "from-config")
        let info = try JSONValue(json: Data(call[0].utf8))
        #expect(info["apiVersion"] == .string("client.authentication.k8s.io/v1"))
        #expect(info["spec"]?["interactive"] == .bool(false))
        #expect(info["spec"]?["cluster"]?["server"] == .string("https://127.0.0.1:6443"))
        #expect(info["spec"]?["cluster"]?["tls-server-name"] == .string("ktlab.local"))
        #expect(info["spec"]?["cluster"]?["config"] == .object(["audience": .string("ktlab")]))
        #expect(
            info["spec"]?["cluster"]?["certificate-authority-data"]
                == .string(Data(pemCA.utf8).base64EncodedString()))
    }

    @Test func aCredentialWithoutExpiryIsKept() async throws {
        let scratch = try Scratch()
        try Self.plugin(
            in: scratch,
            output:
                #"{"apiVersion":"client.authentication.k8s.io/v1beta1","kind":"ExecCredential","status":{"token":"t"}}"#
        )
        let provider = ExecCredentialProvider(
            try Self.configuration(scratch, apiVersion: "client.authentication.k8s.io/v1beta1"), stdinIsTerminal: false)
        for _ in 0..<3 { _ = try await provider.credential() }
        #expect(Self.calls(scratch).count == 1)
    }

    @Test func clientCertificatesComeBackAsPEM() async throws {
        let scratch = try Scratch()
        try Self.plugin(
            in: scratch,
            output:
                #"{"apiVersion":"client.authentication.k8s.io/v1","kind":"ExecCredential","status":{"clientCertificateData":"CERT","clientKeyData":"KEY"}}"#
        )
        let credential = try await ExecCredentialProvider(try Self.configuration(scratch), stdinIsTerminal: false)
            .credential()
        #expect(credential.clientCertificate == Array("CERT".utf8))
        #expect(credential.clientKey == Array("KEY".utf8))
        #expect(credential.token == nil)
    }

    @Test func failuresSayWhichPluginAndWhy() async throws {
        let scratch = try Scratch()
        let configuration = try Self.configuration(scratch)
        // Missing binary: the install hint is shown.
        await #expect(throws: ExecPluginError.notFound(command: configuration.command, hint: "install it with apt")) {
            try await ExecCredentialProvider(configuration, stdinIsTerminal: false).credential()
        }
        let cases: [(String, Int, ExecPluginError)] = [
            ("{}", 3, .failed(command: configuration.command, exitCode: 3)),
            ("not json", 0, .badOutput(command: configuration.command, problem: "stdout is not a JSON object")),
            (
                #"{"apiVersion":"client.authentication.k8s.io/v1beta1","kind":"ExecCredential","status":{"token":"t"}}"#,
                0,
                .badOutput(
                    command: configuration.command,
                    problem: "it is configured for client.authentication.k8s.io/v1 but answered with apiVersion "
                        + "\"client.authentication.k8s.io/v1beta1\"")
            ),
            (
                #"{"apiVersion":"client.authentication.k8s.io/v1","kind":"ExecCredential"}"#, 0,
                .badOutput(command: configuration.command, problem: "status is missing")
            ),
            (
                #"{"apiVersion":"client.authentication.k8s.io/v1","kind":"ExecCredential","status":{"clientKeyData":"K"}}"#,
                0,
                .badOutput(
                    command: configuration.command,
                    problem: "status has only one of clientCertificateData and clientKeyData")
            ),
            (
                #"{"apiVersion":"client.authentication.k8s.io/v1","kind":"ExecCredential","status":{"token":"t","expirationTimestamp":"soon"}}"#,
                0,
                .badOutput(
                    command: configuration.command,
                    problem: "status.expirationTimestamp \"soon\" is not an RFC 3339 time")
            ),
        ]
        for (output, code, expected) in cases {
            try Self.plugin(in: scratch, output: output, exitCode: code)
            await #expect(throws: expected) {
                try await ExecCredentialProvider(configuration, stdinIsTerminal: false).credential()
            }
        }
    }

    @Test func alwaysInteractiveNeedsATerminal() async throws {
        let scratch = try Scratch()
        var configuration = try Self.configuration(scratch)
        configuration.interactiveMode = .always
        await #expect(throws: ExecPluginError.needsTerminal(command: configuration.command)) {
            try await ExecCredentialProvider(configuration, stdinIsTerminal: false).credential()
        }
    }

    /// Through the client: the token goes out as a bearer header; a 401 runs the plugin again and retries once.
    @Test func clientRetriesOnceWithAFreshCredentialAfter401() async throws {
        let scratch = try Scratch()
        try scratch.write("n", "0")
        try scratch.write(
            "plugin.sh",
            """
            #!/bin/sh
            n=$(($(cat '\(scratch.path)/n') + 1)); echo $n > '\(scratch.path)/n'
            echo '{"apiVersion":"client.authentication.k8s.io/v1","kind":"ExecCredential","status":{"token":"tok-'$n'"}}'
            """, mode: 0o755)
        var access = ClusterAccess(server: URL(string: "https://h:6443")!)
        access.credentials = .exec(try Self.configuration(scratch))
        let transport = RecordingTransport { request in
            request.header("Authorization") == "Bearer tok-2"
                ? APIResponse(status: 200, body: Array(#"{"metadata":{"name":"default"}}"#.utf8))
                : APIResponse(status: 401, body: Array(#"{"kind":"Status","code":401,"reason":"Unauthorized"}"#.utf8))
        }
        let client = KubeClient(access: access, transport: { _ in transport })
        let namespace = try await client.get(Namespace.self, name: "default")
        #expect(namespace.name == "default")
        #expect(transport.requests.map { $0.header("Authorization") } == ["Bearer tok-1", "Bearer tok-2"])
    }

    /// A plugin still open for writing somewhere (here: by this test, closed 100 ms later) makes exec fail with
    /// "text file busy"; the provider waits it out instead of calling the plugin missing.
    @Test func aPluginBusyForAMomentStillRuns() throws {
        let scratch = try Scratch()
        let path = try scratch.write("plugin.sh", "#!/bin/sh\nexit 0\n", mode: 0o755)
        let writer = try #require(FileHandle(forWritingAtPath: path))
        let busy = Process()
        busy.executableURL = URL(fileURLWithPath: path)
        #expect(throws: (any Error).self) { try busy.run() }  // the kernel refuses while the file is open to write
        let closer = Thread {
            usleep(100_000)
            try? writer.close()
        }
        closer.start()
        let process = Process()
        process.executableURL = URL(fileURLWithPath: path)
        try ExecCredentialProvider.start(process)
        process.waitUntilExit()
        #expect(process.terminationStatus == 0)
    }
}

/// A clock the test moves by hand.
final class ManualDate: Sendable {
    private let box: LockedBox<Date>
    init(_ date: Date) { box = LockedBox(date) }
    func set(_ date: Date) { box.set(date) }
    var read: @Sendable () -> Date { { [box] in box.get() } }
}

final class LockedBox<Value: Sendable>: @unchecked Sendable {
    private let lock = NSLock()
    private var value: Value
    init(_ value: Value) { self.value = value }
    func get() -> Value { lock.withLock { value } }
    func set(_ newValue: Value) { lock.withLock { value = newValue } }
}
