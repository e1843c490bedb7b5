import Foundation
import KubeKit
import LabKit
import LabTestSupport
import NIOCore
import NIOPosix
import NamespaceTestSupport
import Testing

/// Collects a forwarded connection's bytes until the pod closes it.
final class ForwardedResponse: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    private var bytes: [UInt8] = []
    private let done: EventLoopPromise<[UInt8]>

    init(done: EventLoopPromise<[UInt8]>) { self.done = done }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        bytes += unwrapInboundIn(data).readableBytesView
    }

    func channelInactive(context: ChannelHandlerContext) { done.succeed(bytes) }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        done.fail(error)
        context.close(promise: nil)
    }
}

/// ktlab's RBAC end to end, with kubectl 1.33 and KubeKit against a real lab: a restricted user made with
/// `ktlab kubeconfig --user` after the server started, refused until the administrator grants a Role, then
/// allowed exactly what the Role says; `kubectl auth can-i` agrees; port-forward needs `create pods/portforward`.
@Suite(.serialized, .enabled(if: TestNamespace.unavailableReason == nil)) struct KtlabRBACTests {
    static var kubectl: String? { RunningLab.tool("kubectl") }

    static func forbidden(_ verb: String, _ resource: String, namespace: String?) -> String {
        let scope = namespace.map { "in the namespace \"\($0)\"" } ?? "at the cluster scope"
        return "Error from server (Forbidden): \(resource) is forbidden: User \"dev\" cannot \(verb) resource "
            + "\"\(resource)\" in API group \"\" \(scope)\n"
    }

    /// GET / through a port-forward to the pod's port 8080, as `access`'s user: the page, or the error.
    static func fetchThroughPortForward(_ access: ClusterAccess, pod: String) async throws -> String {
        let client = try KubeClient(access: access)
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        do {
            let eventLoop = group.next()
            let channel = try await PortForwarder(client: client, pod: pod, port: 8080).connect(on: eventLoop)
            let done = eventLoop.makePromise(of: [UInt8].self)
            try await eventLoop.submit {
                try channel.pipeline.syncOperations.addHandler(ForwardedResponse(done: done))
                channel.setOption(.autoRead, value: true).whenComplete { _ in }
                channel.read()
                channel.writeAndFlush(ByteBuffer(string: "GET / HTTP/1.0\r\n\r\n"), promise: nil)
            }.get()
            let response = String(decoding: try await done.futureResult.get(), as: UTF8.self)
            await client.shutdown()
            try await group.shutdownGracefully()
            return response.components(separatedBy: "\r\n\r\n").dropFirst().joined(separator: "\r\n\r\n")
        } catch {
            await client.shutdown()
            try? await group.shutdownGracefully()
            throw error
        }
    }

    /// The Role the administrator applies: get and list pods, and (while `portForward`) create pods/portforward.
    static func podReader(portForward: Bool) -> String {
        """
        apiVersion: rbac.authorization.k8s.io/v1
        kind: Role
        metadata:
          name: pod-reader
          namespace: default
        rules:
        - apiGroups: [""]
          resources: ["pods"]
          verbs: ["get", "list"]

        """
            + (portForward ? "- apiGroups: [\"\"]\n  resources: [\"pods/portforward\"]\n  verbs: [\"create\"]\n" : "")
    }

    @Test(.enabled(if: kubectl != nil)) func aRestrictedUserGetsWhatRBACGrantsAndNothingMore() async throws {
        let kubectl = try #require(Self.kubectl)
        try await RunningLab.with { lab in
            let directory = "\(LabLayout.stateRoot)/\(lab.name)"
            let home = "\(directory)/home"
            // A page to fetch through port-forwards, served by a pod the administrator makes.
            var tomcat = Container(name: "tomcat", image: "tomcat:9")
            tomcat.ports = [ContainerPort(containerPort: 8080)]
            _ = try await lab.client.create(
                Pod(metadata: ObjectMeta(name: "web", labels: ["app": "web"]), spec: PodSpec(containers: [tomcat])))
            _ = try await lab.waitReady("web")
            let root = "\(directory)/pods/default_web/tomcat/usr/local/tomcat/webapps/ROOT"
            try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
            try "only with pods/portforward\n".write(toFile: "\(root)/index.html", atomically: true, encoding: .utf8)

            // The user is made while the server runs; the server learns its token without a restart.
            let made = try await TestNamespace.run([
                "env", lab.ktlab, "kubeconfig", "--name", lab.name, "--user", "dev",
            ])
            #expect(made.status == 0, "\(made.error)")
            let devKubeconfig = "\(directory)/kubeconfig-user-dev"
            #expect(made.output == "\(devKubeconfig)\n")
            for file in [devKubeconfig, "\(directory)/users.json"] {
                var info = stat()
                #expect(stat(file, &info) == 0 && info.st_mode & 0o777 == 0o600, "\(file)")
            }
            let usersBefore = try String(contentsOfFile: "\(directory)/users.json", encoding: .utf8)
            // Again: the same token; a bad name: refused, nothing changed.
            #expect(
                try await TestNamespace.run(["env", lab.ktlab, "kubeconfig", "--name", lab.name, "--user", "dev"])
                    .status == 0)
            #expect(try String(contentsOfFile: "\(directory)/users.json", encoding: .utf8) == usersBefore)
            let refusedName = try await TestNamespace.run([
                "env", lab.ktlab, "kubeconfig", "--name", lab.name, "--user", "Dev:x",
            ])
            #expect(refusedName.status != 0)
            #expect(refusedName.error.contains("user name \"Dev:x\" must be"), "\(refusedName.error)")
            #expect(!FileManager.default.fileExists(atPath: "\(directory)/kubeconfig-user-Dev:x"))

            func dev(_ arguments: [String]) async throws -> TestNamespace.CommandResult {
                try await TestNamespace.run(
                    ["env", "HOME=\(home)", "KUBECONFIG=\(devKubeconfig)", kubectl] + arguments, timeout: 30)
            }
            func admin(_ arguments: [String]) async throws -> TestNamespace.CommandResult {
                try await lab.kubectl(kubectl, arguments)
            }
            func canI(_ arguments: [String]) async throws -> (String, Int32) {
                let result = try await dev(["auth", "can-i"] + arguments)
                return (result.output, result.status)
            }
            let devAccess = try Kubeconfig.load(explicitPath: devKubeconfig, environment: [:]).access()

            let whoami = try await dev([
                "auth", "whoami", "-o", "jsonpath={.status.userInfo.username} {.status.userInfo.groups}",
            ])
            #expect(whoami.output == #"dev ["system:authenticated"]"#, "\(whoami.error)")
            // Nothing is granted yet.
            let refused = try await dev(["get", "pods"])
            #expect(refused.status == 1)
            #expect(refused.error == Self.forbidden("list", "pods", namespace: "default"))
            #expect(try await canI(["list", "pods"]) == ("no\n", 1))
            do {
                _ = try await Self.fetchThroughPortForward(devAccess, pod: "web")
                Issue.record("a port-forward without any grant worked")
            } catch let error as KubeAPIError {
                #expect(error.reason == .forbidden)
                #expect(
                    error.status.message
                        == #"pods "web" is forbidden: User "dev" cannot create resource "pods/portforward" in API group "" in the namespace "default""#
                )
            }

            // The administrator grants: a Role with `kubectl apply -f` (JSON), a RoleBinding with `kubectl create`
            // (protobuf).
            let roleFile = "\(directory)/pod-reader.yaml"
            try Self.podReader(portForward: true).write(toFile: roleFile, atomically: true, encoding: .utf8)
            let applied = try await admin(["apply", "-f", roleFile])
            #expect(applied.output == "role.rbac.authorization.k8s.io/pod-reader created\n", "\(applied.error)")
            let bound = try await admin(["create", "rolebinding", "dev-pods", "--role=pod-reader", "--user=dev"])
            #expect(bound.output == "rolebinding.rbac.authorization.k8s.io/dev-pods created\n", "\(bound.error)")
            let binding = try JSONValue(
                json: Data(try await admin(["get", "rolebinding", "dev-pods", "-o", "json"]).output.utf8))
            #expect(
                binding["roleRef"] == ["apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "pod-reader"])
            #expect(binding["subjects"] == [["apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "dev"]])
            let wide = try await admin(["get", "rolebindings", "-o", "wide"]).output
            #expect(wide.contains("dev-pods") && wide.contains("Role/pod-reader"), "\(wide)")

            // Granted: pods in default. Not: pods elsewhere, secrets, nodes, deleting.
            let pods = try await dev(["get", "pods"])
            #expect(pods.status == 0, "\(pods.error)")
            #expect(pods.output.contains("web") && pods.output.contains("Running"), "\(pods.output)")
            #expect(
                try await dev(["get", "pods", "-n", "kube-system"]).error
                    == Self.forbidden("list", "pods", namespace: "kube-system"))
            #expect(try await dev(["get", "secrets"]).error == Self.forbidden("list", "secrets", namespace: "default"))
            #expect(try await dev(["get", "nodes"]).error == Self.forbidden("list", "nodes", namespace: nil))
            let deleting = try await dev(["delete", "pod", "web"])
            #expect(deleting.status == 1)
            #expect(deleting.error.contains(#"pods "web" is forbidden: User "dev" cannot delete resource "pods""#))
            // exec is not granted: the WebSocket upgrade is answered with the 403.
            let exec = try await dev(["exec", "web", "--", "ls"])
            #expect(exec.status == 1)
            #expect(
                exec.error.contains(
                    #"pods "web" is forbidden: User "dev" cannot create resource "pods/exec" in API group "" in the namespace "default""#
                ), "\(exec.error)")
            #expect(try await canI(["list", "pods"]) == ("yes\n", 0))
            #expect(try await canI(["get", "pods/web"]) == ("yes\n", 0))
            #expect(try await canI(["list", "pods", "-n", "kube-system"]) == ("no\n", 1))
            #expect(try await canI(["list", "secrets"]) == ("no\n", 1))
            #expect(try await canI(["delete", "pods"]) == ("no\n", 1))
            #expect(try await canI(["create", "pods", "--subresource=portforward"]) == ("yes\n", 0))
            #expect(try await canI(["create", "pods", "--subresource=exec"]) == ("no\n", 1))
            #expect(try await canI(["list", "nodes"]).1 == 1)
            #expect(try await canI(["list", "nodes"]).0.hasSuffix("no\n"))
            let list = try await dev(["auth", "can-i", "--list"])
            #expect(list.output.contains("pods/portforward") && list.output.contains("[create]"), "\(list.output)")
            // The administrator's identities may do anything, by token and by client certificate.
            #expect(try await admin(["auth", "can-i", "list", "nodes"]).output == "yes\n")
            #expect(try await admin(["auth", "can-i", "*", "*", "--all-namespaces"]).output == "yes\n")
            let byCertificate = try await admin(["--context", "\(lab.name)-cert", "get", "secrets", "-A"])
            #expect(byCertificate.status == 0, "\(byCertificate.error)")
            #expect(try await admin(["--context", "\(lab.name)-cert", "get", "nodes"]).status == 0)
            #expect(try await admin(["get", "clusterrolebinding", "cluster-admin"]).status == 0)

            // The port-forward works now, and stops working when the rule goes.
            #expect(try await Self.fetchThroughPortForward(devAccess, pod: "web") == "only with pods/portforward\n")
            try Self.podReader(portForward: false).write(toFile: roleFile, atomically: true, encoding: .utf8)
            let reduced = try await admin(["apply", "-f", roleFile])
            #expect(reduced.output == "role.rbac.authorization.k8s.io/pod-reader configured\n", "\(reduced.error)")
            #expect(try await canI(["create", "pods", "--subresource=portforward"]) == ("no\n", 1))
            await #expect(throws: KubeAPIError.self) {
                _ = try await Self.fetchThroughPortForward(devAccess, pod: "web")
            }
            #expect(try await dev(["get", "pods"]).status == 0)

            // From the workstation namespace, with the workstation kubeconfig.
            let workstation = try await TestNamespace.run([
                "env", lab.ktlab, "kubeconfig", "--name", lab.name, "--user", "dev", "--workstation",
            ])
            #expect(workstation.output == "\(directory)/kubeconfig-ws-user-dev\n")
            let fromWorkstation = try await TestNamespace.run(
                [
                    "ip", "netns", "exec", "\(lab.name)-ws", "env", "HOME=\(home)",
                    "KUBECONFIG=\(directory)/kubeconfig-ws-user-dev", kubectl, "get", "pods", "-o", "name",
                ], timeout: 30)
            #expect(fromWorkstation.output == "pod/web\n", "\(fromWorkstation.error)")

            // Deleting the binding takes it all back.
            #expect(
                try await admin(["delete", "rolebinding", "dev-pods"]).output
                    == "rolebinding.rbac.authorization.k8s.io \"dev-pods\" deleted\n")
            #expect(try await dev(["get", "pods"]).error == Self.forbidden("list", "pods", namespace: "default"))
            #expect(
                try await admin(["delete", "role", "pod-reader"]).output
                    == "role.rbac.authorization.k8s.io \"pod-reader\" deleted\n")
        }
    }

    /// The second user made later is known at once too; an unknown token stays 401; `kubectl create role` (a
    /// protobuf body) and a ClusterRole bound by a RoleBinding grant in that namespace only.
    @Test(.enabled(if: kubectl != nil)) func usersMadeLaterAndClusterRolesBoundInANamespace() async throws {
        let kubectl = try #require(Self.kubectl)
        try await RunningLab.with { lab in
            let directory = "\(LabLayout.stateRoot)/\(lab.name)"
            func user(_ name: String) async throws -> String {
                let made = try await TestNamespace.run([
                    "env", lab.ktlab, "kubeconfig", "--name", lab.name, "--user", name,
                ])
                #expect(made.status == 0, "\(made.error)")
                return made.output.trimmingCharacters(in: .newlines)
            }
            func run(_ kubeconfig: String, _ arguments: [String]) async throws -> TestNamespace.CommandResult {
                try await TestNamespace.run(
                    ["env", "HOME=\(directory)/home", "KUBECONFIG=\(kubeconfig)", kubectl] + arguments, timeout: 30)
            }
            let ann = try await user("ann")
            #expect(
                try await run(ann, ["auth", "whoami", "-o", "jsonpath={.status.userInfo.username}"]).output == "ann")
            // kubectl create role sends protobuf.
            let created = try await lab.kubectl(
                kubectl,
                ["create", "role", "cm-reader", "--verb=get,list", "--resource=configmaps", "-n", "kube-system"])
            #expect(created.output == "role.rbac.authorization.k8s.io/cm-reader created\n", "\(created.error)")
            let role = try JSONValue(
                json: Data(
                    try await lab.kubectl(kubectl, ["get", "role", "cm-reader", "-n", "kube-system", "-o", "json"])
                        .output.utf8))
            #expect(role["rules"] == [["apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list"]]])
            // The built-in view ClusterRole, bound in kube-system only, for a user made after that.
            #expect(
                try await lab.kubectl(
                    kubectl,
                    ["create", "rolebinding", "ops-view", "--clusterrole=view", "--user=ops", "-n", "kube-system"]
                ).status == 0)
            let ops = try await user("ops")
            #expect(try await run(ops, ["get", "pods", "-n", "kube-system"]).status == 0)
            #expect(try await run(ops, ["get", "configmaps", "-n", "kube-system"]).status == 0)
            #expect(try await run(ops, ["get", "secrets", "-n", "kube-system"]).status == 1)
            #expect(try await run(ops, ["get", "pods", "-n", "default"]).status == 1)
            #expect(
                try await run(ops, ["auth", "can-i", "list", "deployments.apps", "-n", "kube-system"]).output == "yes\n"
            )
            #expect(
                try await run(ops, ["auth", "can-i", "create", "deployments.apps", "-n", "kube-system"]).output
                    == "no\n")
            // ann still has nothing; a token nobody was given is not a user.
            #expect(try await run(ann, ["get", "pods", "-n", "kube-system"]).status == 1)
            let stranger = "\(directory)/kubeconfig-stranger"
            try String(contentsOfFile: ann, encoding: .utf8).replacingOccurrences(
                of: #"token: [0-9a-f]+"#, with: "token: not-a-token", options: .regularExpression
            ).write(toFile: stranger, atomically: true, encoding: .utf8)
            let unknown = try await run(stranger, ["get", "pods"])
            #expect(unknown.status == 1)
            #expect(unknown.error.contains("Unauthorized"), "\(unknown.error)")
        }
    }
}
