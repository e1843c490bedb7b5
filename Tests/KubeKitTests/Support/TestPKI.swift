import Foundation

/// A throwaway CA, server and client certificate made with the `openssl` command, in a temporary directory.
struct TestPKI {
    let directory: URL
    var caCertificate: String { directory.appendingPathComponent("ca.crt").path }
    var serverCertificate: String { directory.appendingPathComponent("server.crt").path }
    /// The same key, certified for `ktlab.local` only (no IP address).
    var namedOnlyCertificate: String { directory.appendingPathComponent("named.crt").path }
    var serverKey: String { directory.appendingPathComponent("server.key").path }
    var clientCertificate: String { directory.appendingPathComponent("client.crt").path }
    var clientKey: String { directory.appendingPathComponent("client.key").path }
    /// A second CA that signed nothing here: the "wrong CA".
    var otherCA: String { directory.appendingPathComponent("other-ca.crt").path }

    init() throws {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("kubekit-pki-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let script = """
            set -e
            cd '\(directory.path)'
            openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
              -subj /CN=test-ca -keyout ca.key -out ca.crt 2>/dev/null
            openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
              -subj /CN=other-ca -keyout other-ca.key -out other-ca.crt 2>/dev/null
            openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj /CN=kube-apiserver \
              -keyout server.key -out server.csr 2>/dev/null
            printf 'subjectAltName=IP:127.0.0.1,DNS:ktlab.local\\nextendedKeyUsage=serverAuth\\n' > server.ext
            openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 \
              -extfile server.ext -out server.crt 2>/dev/null
            printf 'subjectAltName=DNS:ktlab.local\nextendedKeyUsage=serverAuth\n' > named.ext
            openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 \
              -extfile named.ext -out named.crt 2>/dev/null
            openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj /CN=tester/O=system:masters \
              -keyout client.key -out client.csr 2>/dev/null
            printf 'extendedKeyUsage=clientAuth\\n' > client.ext
            openssl x509 -req -in client.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 \
              -extfile client.ext -out client.crt 2>/dev/null
            """
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/bin/sh")
        process.arguments = ["-c", script]
        try process.run()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            throw TestPKIError(message: "openssl failed with status \(process.terminationStatus)")
        }
    }

    func remove() {
        try? FileManager.default.removeItem(at: directory)
    }
}

struct TestPKIError: Error {
    var message: String
}
