import Foundation

/// The lab's CA, the API server's certificate and the admin's client certificate, made with `openssl`; the
/// kubeconfigs that use them.
enum LabPKI {
    static func create(_ layout: LabLayout) throws {
        let directory = layout.pkiDirectory
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let names = [
            "IP:127.0.0.1", "IP:\(layout.nodeLinkAddress)", "DNS:localhost", "DNS:ktlab.local", "DNS:kubernetes",
            "DNS:kubernetes.default", "DNS:kubernetes.default.svc", "DNS:kubernetes.default.svc.cluster.local",
        ].joined(separator: ",")
        let script = """
            set -e
            cd '\(directory)'
            openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 365 \
              -subj '/CN=ktlab-ca \(layout.name)' -keyout ca.key -out ca.crt
            openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj /CN=kube-apiserver \
              -keyout apiserver.key -out apiserver.csr
            printf 'subjectAltName=\(names)\\nextendedKeyUsage=serverAuth\\n' > apiserver.ext
            openssl x509 -req -in apiserver.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 365 \
              -extfile apiserver.ext -out apiserver.crt
            openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
              -subj '/O=system:masters/CN=ktlab-admin' -keyout admin.key -out admin.csr
            printf 'extendedKeyUsage=clientAuth\\n' > admin.ext
            openssl x509 -req -in admin.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 365 \
              -extfile admin.ext -out admin.crt
            chmod 600 *.key
            """
        try Host.run(["sh", "-c", script + " 2>&1"])
    }

    static func base64(_ layout: LabLayout, _ file: String) throws -> String {
        guard let data = FileManager.default.contents(atPath: "\(layout.pkiDirectory)/\(file)") else {
            throw Host.NamespaceError(description: "missing \(layout.pkiDirectory)/\(file)")
        }
        return data.base64EncodedString()
    }

    /// A kubeconfig for `server` with one context, `<lab>-<user>`: the user's bearer token, namespace `default`.
    static func userKubeconfig(_ layout: LabLayout, server: String, user: String, token: String) throws -> String {
        let name = layout.name
        return """
            apiVersion: v1
            kind: Config
            current-context: \(name)-\(user)
            clusters:
            - name: \(name)
              cluster:
                server: \(server)
                certificate-authority-data: \(try base64(layout, "ca.crt"))
            users:
            - name: \(name)-\(user)
              user:
                token: \(token)
            contexts:
            - name: \(name)-\(user)
              context: {cluster: \(name), user: \(name)-\(user), namespace: default}

            """
    }

    /// A kubeconfig for `server` with two contexts: `<name>` (bearer token) and `<name>-cert` (client certificate).
    static func kubeconfig(_ layout: LabLayout, server: String) throws -> String {
        func base64(_ file: String) throws -> String { try LabPKI.base64(layout, file) }
        let name = layout.name
        return """
            apiVersion: v1
            kind: Config
            current-context: \(name)
            clusters:
            - name: \(name)
              cluster:
                server: \(server)
                certificate-authority-data: \(try base64("ca.crt"))
            users:
            - name: \(name)-admin
              user:
                token: \(LabLayout.token)
            - name: \(name)-cert
              user:
                client-certificate-data: \(try base64("admin.crt"))
                client-key-data: \(try base64("admin.key"))
            contexts:
            - name: \(name)
              context: {cluster: \(name), user: \(name)-admin, namespace: default}
            - name: \(name)-cert
              context: {cluster: \(name), user: \(name)-cert, namespace: default}

            """
    }
}
