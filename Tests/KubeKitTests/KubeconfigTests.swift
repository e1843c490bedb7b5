import Foundation
import Testing

@testable import KubeKit

/// A temporary directory with files written into it, removed at the end of the test.
final class Scratch {
    let path: String

    init() throws {
        path = FileManager.default.temporaryDirectory.appendingPathComponent("kubekit-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    }

    deinit { try? FileManager.default.removeItem(atPath: path) }

    @discardableResult
    func write(_ name: String, _ text: String, mode: Int = 0o644) throws -> String {
        let file = (path as NSString).appendingPathComponent(name)
        try FileManager.default.createDirectory(
            atPath: (file as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        try text.write(toFile: file, atomically: true, encoding: .utf8)
        try FileManager.default.setAttributes([.posixPermissions: mode], ofItemAtPath: file)
        return file
    }
}

let pemCA = """
    -----BEGIN CERTIFICATE-----
    MIIBdzCCAR2gAwIBAgIUZ0
    -----END CERTIFICATE-----

    """

/// kubectl's documented merge and precedence rules (kubectl `config` docs and client-go `clientcmd/loader.go`).
@Suite struct KubeconfigTests {
    static let first = """
        apiVersion: v1
        kind: Config
        clusters:
        - name: lab
          cluster:
            server: https://127.0.0.1:6443
            certificate-authority: certs/ca.crt
        - name: shared
          cluster:
            server: https://first.example:6443
            insecure-skip-tls-verify: true
        users:
        - name: u1
          user:
            token: A
        contexts:
        - name: lab
          context: {cluster: lab, user: u1, namespace: kube-system}
        - name: plain
          context: {cluster: shared, user: u1}
        """

    static let second = """
        apiVersion: v1
        kind: Config
        current-context: lab
        clusters:
        - name: shared
          cluster:
            server: https://second.example:6443
        - name: only-second
          cluster:
            server: https://only-second.example
        users:
        - name: u1
          user:
            token: B
            username: extra
        - name: u2
          user:
            token: C
        contexts:
        - name: lab
          context: {cluster: only-second, user: u2}
        - name: second
          context: {cluster: only-second, user: u2, namespace: team}
        """

    @Test func kubeconfigListMergesFirstDefinitionWinsWhole() throws {
        let scratch = try Scratch()
        let a = try scratch.write("a/config", Self.first)
        let b = try scratch.write("b/config", Self.second)
        try scratch.write("a/certs/ca.crt", pemCA)
        let config = try Kubeconfig.load(environment: ["KUBECONFIG": "\(a):\(scratch.path)/missing:\(b):\(a)"])
        #expect(config.files == [a, b])
        // The whole `users[u1]` entry comes from the first file: token A, and no username from the second.
        #expect(config.users["u1"]?.value.token == "A")
        #expect(config.users["u1"]?.value.username == nil)
        #expect(config.users["u2"]?.value.token == "C")
        // `clusters[shared]` from the first file, `only-second` from the second.
        #expect(config.clusters["shared"]?.value.server == "https://first.example:6443")
        #expect(config.clusters["only-second"]?.origin == b)
        // current-context: first non-empty value (only the second file sets it).
        #expect(config.currentContext == "lab")
        // `contexts[lab]` is the first file's.
        let access = try config.access()
        #expect(access.contextName == "lab")
        #expect(access.clusterName == "lab")
        #expect(access.namespace == "kube-system")
        #expect(access.credentials == .bearer(token: "A", file: nil))
        // Relative paths are relative to the file that wrote them.
        #expect(access.tls.certificateAuthoritySource == "\(scratch.path)/a/certs/ca.crt")
        #expect(access.tls.certificateAuthority == Array(pemCA.utf8))
    }

    @Test func currentContextTakesTheFirstNonEmptyValue() throws {
        let scratch = try Scratch()
        let a = try scratch.write(
            "a", Self.first.replacingOccurrences(of: "kind: Config", with: "kind: Config\ncurrent-context: plain"))
        let b = try scratch.write("b", Self.second)
        try scratch.write("certs/ca.crt", pemCA)
        let config = try Kubeconfig.load(environment: ["KUBECONFIG": "\(a):\(b)"])
        #expect(config.currentContext == "plain")
        let access = try config.access()
        #expect(access.server.absoluteString == "https://first.example:6443")
        #expect(access.tls.insecureSkipVerify)
        #expect(access.namespace == "default")
    }

    @Test func explicitPathIsReadAloneAndMustExist() throws {
        let scratch = try Scratch()
        let a = try scratch.write("a", Self.first)
        let b = try scratch.write("b", Self.second)
        let config = try Kubeconfig.load(explicitPath: b, environment: ["KUBECONFIG": a])
        #expect(config.files == [b])
        #expect(config.users["u1"]?.value.token == "B")
        let missing = "\(scratch.path)/nope"
        #expect(
            throws: KubeconfigError(
                path: missing, field: nil, problem: "does not exist",
                hint: "check the --kubeconfig path (nothing was read or changed)")
        ) {
            try Kubeconfig.load(explicitPath: missing, environment: [:])
        }
    }

    @Test func homeConfigIsTheDefaultAndItsAbsenceIsExplained() throws {
        let scratch = try Scratch()
        let error = #expect(throws: KubeconfigError.self) {
            try Kubeconfig.load(environment: ["HOME": scratch.path]).access()
        }
        #expect(error?.description.contains("\(scratch.path)/.kube/config was not found") == true)
        try scratch.write(".kube/config", Self.second)
        let access = try Kubeconfig.load(environment: ["HOME": scratch.path]).access(context: "second")
        #expect(access.namespace == "team")
        #expect(access.server.absoluteString == "https://only-second.example:443")
    }

    @Test func namespaceFlagBeatsContextNamespaceWhichBeatsDefault() throws {
        let scratch = try Scratch()
        let b = try scratch.write("b", Self.second)
        let config = try Kubeconfig.load(explicitPath: b)
        #expect(try config.access(context: "second").namespace == "team")
        #expect(try config.access(context: "second", namespace: "other").namespace == "other")
        #expect(try config.access(context: "lab").namespace == "default")
    }

    @Test func unknownContextListsTheKnownOnes() throws {
        let scratch = try Scratch()
        let config = try Kubeconfig.load(explicitPath: try scratch.write("b", Self.second))
        let error = #expect(throws: KubeconfigError.self) { try config.access(context: "prod") }
        #expect(error?.description.contains("has no context \"prod\"; known contexts: lab, second") == true)
    }

    @Test func badFieldsAreNamedWithTheirFile() throws {
        let scratch = try Scratch()
        func problem(_ yaml: String) throws -> String {
            let file = try scratch.write("bad-\(UUID().uuidString)", yaml)
            do {
                _ = try Kubeconfig.load(explicitPath: file).access()
                return "no error"
            } catch let error as KubeconfigError {
                #expect(error.path.hasPrefix(scratch.path))
                return error.description.replacingOccurrences(of: file, with: "FILE")
            }
        }
        let base = """
            current-context: c
            contexts: [{name: c, context: {cluster: k, user: u}}]
            users: [{name: u, user: {token: t}}]

            """
        #expect(
            try problem(base + "clusters: [{name: k, cluster: {server: 'https://h', insecure-skip-tls-verify: maybe}}]")
                .hasPrefix("kubeconfig FILE: clusters[0].cluster.insecure-skip-tls-verify"))
        #expect(
            try problem(base + "clusters: [{name: k, cluster: {server: 'ftp://h'}}]")
                == "kubeconfig FILE: clusters[k].cluster.server is \"ftp://h\", not an https:// (or http://) URL with a host"
        )
        #expect(
            try problem(base + "clusters: [{name: k, cluster: {}}]")
                == "kubeconfig FILE: clusters[k].cluster.server is not set")
        #expect(
            try problem(
                base + "clusters: [{name: k, cluster: {server: 'https://h', certificate-authority: /no/ca.crt}}]"
            )
            .hasPrefix(
                "kubeconfig FILE: clusters[k].cluster.certificate-authority names /no/ca.crt, which does not exist"))
        #expect(
            try problem(
                base + "clusters: [{name: k, cluster: {server: 'https://h', certificate-authority-data: '%%%'}}]")
                == "kubeconfig FILE: clusters[k].cluster.certificate-authority-data is not valid base64")
        #expect(
            try problem(
                base + "clusters: [{name: k, cluster: {server: 'https://h', insecure-skip-tls-verify: true, "
                    + "certificate-authority-data: 'QQ=='}}]"
            )
            .contains("insecure-skip-tls-verify is true while a certificate authority is also set"))
        #expect(
            try problem(base + "clusters: [{name: k, cluster: {server: 'https://h', proxy-url: 'ftp://p'}}]")
                .contains("proxy-url is \"ftp://p\""))
        #expect(
            try problem(
                "current-context: c\ncontexts: [{name: c, context: {cluster: k, user: u}}]\n"
                    + "clusters: [{name: k, cluster: {server: 'https://h'}}]\n"
                    + "users: [{name: u, user: {token: t, client-certificate-data: 'QQ==', client-key-data: 'QQ=='}}]"
            )
            .contains("has more than one authentication method (client certificate, token)"))
        #expect(
            try problem(
                "current-context: c\ncontexts: [{name: c, context: {cluster: k, user: u}}]\n"
                    + "clusters: [{name: k, cluster: {server: 'https://h'}}]\n"
                    + "users: [{name: u, user: {client-certificate-data: 'QQ=='}}]")
                == "kubeconfig FILE: users[u].user.client-key is missing: a client certificate and its key go together")
        #expect(
            try problem(
                "current-context: c\ncontexts: [{name: c, context: {cluster: k, user: nobody}}]\n"
                    + "clusters: [{name: k, cluster: {server: 'https://h'}}]")
                == "kubeconfig FILE: contexts[c].context.user names user \"nobody\", which no kubeconfig file defines")
        #expect(try problem("clusters: {not: a list}").hasPrefix("kubeconfig FILE: clusters has the wrong type"))
        let yaml = try problem(": : :")
        #expect(yaml.contains("is not valid YAML"), "\(yaml)")
    }

    @Test func emptyFileIsAnEmptyConfig() throws {
        let scratch = try Scratch()
        let config = try Kubeconfig.load(explicitPath: try scratch.write("empty", "\n"))
        #expect(config.clusters.isEmpty)
        let error = #expect(throws: KubeconfigError.self) { try config.access() }
        #expect(error?.field == "current-context")
    }

    @Test func serverPathIsTheAPIPrefixAndTLSFieldsAreKept() throws {
        let scratch = try Scratch()
        let file = try scratch.write(
            "c",
            """
            current-context: c
            contexts: [{name: c, context: {cluster: k, user: u}}]
            clusters:
            - name: k
              cluster:
                server: https://rancher.example/k8s/clusters/c-1/?x=1#frag
                tls-server-name: api.internal
                proxy-url: socks5://127.0.0.1:1080
                certificate-authority-data: \(Data(pemCA.utf8).base64EncodedString())
            users:
            - name: u
              user:
                client-certificate-data: \(Data("CERT".utf8).base64EncodedString())
                client-key-data: \(Data("KEY".utf8).base64EncodedString())
            """)
        let access = try Kubeconfig.load(explicitPath: file).access()
        #expect(access.apiPrefix == "/k8s/clusters/c-1")
        #expect(
            access.url(path: "/api/v1/pods").absoluteString
                == "https://rancher.example:443/k8s/clusters/c-1/api/v1/pods")
        #expect(access.tls.serverName == "api.internal")
        #expect(access.proxyURL?.absoluteString == "socks5://127.0.0.1:1080")
        #expect(access.tls.certificateAuthoritySource == "certificate-authority-data of cluster \"k\" in \(file)")
        #expect(access.tls.clientCertificate == Array("CERT".utf8))
        #expect(access.tls.clientKey == Array("KEY".utf8))
        #expect(access.credentials == .none)
    }

    @Test func tokenFileIsReadAndExecCommandsWithASlashAreResolved() throws {
        let scratch = try Scratch()
        try scratch.write("conf/token", "  secret-token\n")
        let file = try scratch.write(
            "conf/config",
            """
            current-context: t
            contexts:
            - {name: t, context: {cluster: k, user: t}}
            - {name: e, context: {cluster: k, user: e}}
            - {name: p, context: {cluster: k, user: p}}
            clusters: [{name: k, cluster: {server: 'https://h'}}]
            users:
            - {name: t, user: {tokenFile: token}}
            - name: e
              user:
                exec: {apiVersion: client.authentication.k8s.io/v1beta1, command: ./plugin.sh, args: [a1]}
            - name: p
              user:
                exec: {apiVersion: client.authentication.k8s.io/v1, command: aws, interactiveMode: Never}
            """)
        let config = try Kubeconfig.load(explicitPath: file)
        #expect(try config.access().credentials == .bearer(token: "secret-token", file: "\(scratch.path)/conf/token"))
        guard case .exec(let plugin) = try config.access(context: "e").credentials else {
            Issue.record("expected exec credentials")
            return
        }
        #expect(plugin.command == "\(scratch.path)/conf/plugin.sh")
        #expect(plugin.args == ["a1"])
        #expect(plugin.interactiveMode == .ifAvailable)  // v1beta1's default
        guard case .exec(let path) = try config.access(context: "p").credentials else {
            Issue.record("expected exec credentials")
            return
        }
        #expect(path.command == "aws")  // a PATH lookup stays one
        #expect(path.interactiveMode == .never)
    }

    @Test func execPluginsAreCheckedLikeClientGo() throws {
        let scratch = try Scratch()
        func problem(_ exec: String) throws -> String {
            let file = try scratch.write(
                "x-\(UUID().uuidString)",
                "current-context: c\ncontexts: [{name: c, context: {cluster: k, user: u}}]\n"
                    + "clusters: [{name: k, cluster: {server: 'https://h'}}]\n"
                    + "users: [{name: u, user: {exec: \(exec)}}]\n")
            do {
                _ = try Kubeconfig.load(explicitPath: file).access()
                return "no error"
            } catch let error as KubeconfigError {
                return "\(error.field ?? ""): \(error.problem)"
            }
        }
        #expect(
            try problem("{apiVersion: client.authentication.k8s.io/v1, command: x}")
                == "users[u].user.exec.interactiveMode: must be set for client.authentication.k8s.io/v1 exec plugins "
                + "(Never, IfAvailable or Always)")
        #expect(
            try problem("{apiVersion: client.authentication.k8s.io/v1alpha1, command: x}").hasPrefix(
                "users[u].user.exec.apiVersion: is \"client.authentication.k8s.io/v1alpha1\""))
        #expect(
            try problem("{apiVersion: client.authentication.k8s.io/v1beta1, command: x, interactiveMode: Sometimes}")
                .hasSuffix("expected Never, IfAvailable or Always"))
        #expect(
            try problem("{apiVersion: client.authentication.k8s.io/v1beta1}")
                == "users[u].user.exec.command: is not set")
    }
}
