import Foundation
import Glibc
import KubeKit
import Logging
import NIOCore
import NIOPosix

/// `ktlab serve`: the long-running part of a lab (started by `up`): the API server on the node's link address
/// (for the workstation) and on the host's 127.0.0.1, with the node object registered.
public enum LabServer {
    /// Where a lab finds images to run under crun: those loaded into it (`ktlab image load`), then the directories
    /// of `KTLAB_IMAGES` (colon-separated), then `images/` beside the binaries' directory or its parent (`.build/images`,
    /// where `make images` writes them, for ktlab in `.build/<triple>/debug`).
    public static func imageDirectories(_ layout: LabLayout, binaries: String) -> [String] {
        let configured = (ProcessInfo.processInfo.environment["KTLAB_IMAGES"] ?? "").split(separator: ":").map(
            String.init)
        // `.build/debug` is a link to `.build/<triple>/debug`, and the running binary's path is the resolved one.
        let parent = URL(fileURLWithPath: binaries).deletingLastPathComponent()
        let beside = [parent, parent.deletingLastPathComponent()].map { $0.appendingPathComponent("images").path }
        return [layout.imagesDirectory] + configured + beside
    }

    public static func run(name: String, logger: Logger) async throws {
        guard var state = LabState.read(name) else {
            throw LabControl.Failure("lab \"\(name)\" has no state in \(LabLayout.stateRoot)/\(name); run `ktlab up`")
        }
        let layout = state.layout
        let group = try Host.eventLoopGroup(inNamespace: layout.nodeNamespace, threads: 2)
        let admission = Admission(serviceCIDR: layout.serviceCIDR, dnsAddress: layout.dnsAddress)
        let store = ObjectStore()
        let binaries = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().path
        let tokens = ServiceAccountTokens()
        let kubelet = Kubelet(
            layout: layout, store: store, group: group, binaries: binaries, logger: logger,
            serviceAccountTokens: tokens, images: ImageStore(directories: imageDirectories(layout, binaries: binaries)))
        let handler = APIHandler(
            store: store, admission: admission, serverAddress: "\(layout.nodeLinkAddress):\(layout.apiPort)",
            logPath: { pod, container in kubelet.logPath(pod: pod, container: container) })
        try handler.bootstrap()
        try registerNode(layout, store: handler.store)
        let pki = layout.pkiDirectory
        var configuration = APIServer.Configuration(
            host: layout.nodeLinkAddress, port: layout.apiPort, certificate: "\(pki)/apiserver.crt",
            key: "\(pki)/apiserver.key", clientCA: "\(pki)/ca.crt", tokens: [LabLayout.token],
            userTokenFile: layout.usersFile)
        configuration.serviceAccountTokens = tokens
        let server = try APIServer(
            preparing: configuration,
            handler: handler, group: group, logger: logger,
            dialPod: { pod, port, eventLoop in kubelet.dialLoopback(pod: pod, port: port, on: eventLoop) },
            locateExec: { pod, container in kubelet.execTarget(pod: pod, container: container) })
        // Inside the node namespace for the workstation; from this (host) thread for 127.0.0.1 of the host.
        try await server.listen(host: layout.nodeLinkAddress, port: layout.apiPort, inside: group.next())
        try await server.listen(host: "127.0.0.1", port: layout.hostPort)
        let kubeletTask = Task { try await kubelet.run() }
        let controllers = Controllers(handler: handler, logger: logger)
        let controllerTask = Task { try await controllers.run() }
        let proxy = ServiceProxy(layout: layout, store: handler.store, logger: logger)
        let proxyTask = Task { try await proxy.run() }
        // Cluster DNS on its ClusterIP (an address of the node) and on the link the workstation uses.
        try Host.run(["ip", "-n", layout.nodeNamespace, "addr", "add", "\(layout.dnsAddress)/32", "dev", "lo"])
        let dns = ClusterDNS(layout: layout, store: handler.store, logger: logger)
        let dnsChannels =
            try await dns.start(on: group.next(), addresses: [layout.dnsAddress])
            + dns.start(on: group.next(), addresses: [layout.nodeLinkAddress], cluster: false)
        state.serverPID = getpid()
        try state.write()
        logger.info(
            "ktlab \(name) serving on \(layout.nodeLinkAddress):\(layout.apiPort) and 127.0.0.1:\(layout.hostPort)")

        // Until SIGTERM or SIGINT.
        let (stop, continuation) = AsyncStream<Int32>.makeStream()
        var sources: [DispatchSourceSignal] = []
        for signalNumber in [SIGTERM, SIGINT] {
            signal(signalNumber, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: signalNumber, queue: .global())
            source.setEventHandler { continuation.yield(signalNumber) }
            source.resume()
            sources.append(source)
        }
        for await received in stop {
            logger.info("signal \(received): stopping")
            break
        }
        kubeletTask.cancel()
        controllerTask.cancel()
        proxyTask.cancel()
        for channel in dnsChannels { try? await channel.close() }
        kubelet.stopAll()
        await server.stop()
        try? await group.shutdownGracefully()
        _ = sources
    }

    static func registerNode(_ layout: LabLayout, store: ObjectStore) throws {
        let node: JSONValue = [
            "metadata": [
                "name": .string("\(layout.name)-node"),
                "labels": [
                    "kubernetes.io/hostname": .string("\(layout.name)-node"), "kubernetes.io/os": "linux",
                    "node-role.kubernetes.io/control-plane": "",
                ],
            ],
            "spec": ["podCIDR": .string(layout.nodePodCIDR), "podCIDRs": [.string(layout.nodePodCIDR)]],
            "status": [
                "addresses": [
                    ["type": "InternalIP", "address": .string(layout.nodeLinkAddress)],
                    ["type": "Hostname", "address": .string("\(layout.name)-node")],
                ],
                "conditions": [
                    ["type": "Ready", "status": "True", "reason": "KubeletReady", "message": "ktlab node is ready"]
                ],
                "nodeInfo": ["kubeletVersion": "v1.33.0-ktlab", "operatingSystem": "linux", "architecture": "amd64"],
            ],
        ]
        _ = try store.create(Node.resource, namespace: "", object: node)
        // As a 1.33 API server makes it from --service-cluster-ip-range.
        let serviceCIDR: JSONValue = [
            "metadata": ["name": "kubernetes"], "spec": ["cidrs": [.string(layout.serviceCIDR)]],
            "status": ["conditions": [["type": "Ready", "status": "True", "reason": "", "message": ""]]],
        ]
        _ = try store.create(ServiceCIDR.resource, namespace: "", object: serviceCIDR)
    }
}
