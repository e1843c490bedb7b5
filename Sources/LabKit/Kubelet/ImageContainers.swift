import Foundation
import KubeKit

/// Containers whose image is a local OCI image run under crun, as on a node: the image's root file system (shared
/// read-only, or a copy of its own when writable), its user and entrypoint, the pod's network namespace. The others
/// run as processes from `ImageCatalog`.
extension Kubelet {
    enum ContainerSource {
        case image(LocalImage)
        case process(arguments: [String], workingDirectory: String)
        case pullFailure(String)
    }

    func source(for container: JSONValue) -> ContainerSource {
        let image = container["image"]?.stringValue ?? ""
        if ContainerRuntime.isInstalled, let local = images.find(image) { return .image(local) }
        switch ImageCatalog.program(for: container, binaries: binaries) {
        case .run(let arguments, let workingDirectory):
            return .process(arguments: arguments, workingDirectory: workingDirectory)
        case .pullFailure(let message):
            let local = images.images().map(\.reference.familiar)
            let crun = ContainerRuntime.isInstalled ? "" : " (crun is not installed: local images cannot run)"
            return .pullFailure(
                message + "; local images: " + (local.isEmpty ? "none" : local.joined(separator: ", ")) + crun
                    + " (ktlab image load --name \(layout.name) FILE adds one)")
        }
    }

    func bundleDirectory(_ namespace: String, _ name: String, _ container: String) -> String {
        directory(namespace: namespace, name: name, container: container) + ".bundle"
    }

    func launchImage(
        namespace: String, name: String, pod: JSONValue, container: JSONValue, image: LocalImage,
        volumes: [String: String]
    ) throws {
        let containerName = container["name"]?.stringValue ?? "c"
        let key = Self.key(namespace, name)
        guard let running = pods.withLockedValue({ $0[key] }) else { return }
        let manager = FileManager.default
        let bundle = bundleDirectory(namespace, name, containerName)
        try manager.createDirectory(atPath: bundle, withIntermediateDirectories: true)
        let shared = try ImageStore.unpack(image, into: layout.rootfsDirectory)
        let readOnly = container["securityContext"]?["readOnlyRootFilesystem"]?.boolValue == true
        var rootfs = shared
        if !readOnly {
            // A writable root of its own, fresh at each start as a container's is.
            rootfs = bundle + "/rootfs"
            if manager.fileExists(atPath: rootfs) { try Host.removeTree(rootfs) }
            try Host.run(["cp", "-a", shared, rootfs])
        }
        let hostname = name
        try "\(hostname)\n".write(toFile: bundle + "/hostname", atomically: true, encoding: .utf8)
        try """
        127.0.0.1\tlocalhost
        ::1\tlocalhost ip6-localhost ip6-loopback
        \(running.ip)\t\(hostname)

        """.write(toFile: bundle + "/hosts", atomically: true, encoding: .utf8)
        var mounts = [
            OCISpec.Mount(source: bundle + "/hosts", destination: "/etc/hosts", readOnly: false),
            OCISpec.Mount(source: bundle + "/hostname", destination: "/etc/hostname", readOnly: false),
            OCISpec.Mount(
                source: "/etc/netns/\(running.namespace)/resolv.conf", destination: "/etc/resolv.conf", readOnly: false),
        ]
        mounts += try volumeMounts(volumes, for: container)
        var environment = self.environment(for: container, pod: pod, namespace: namespace, ip: running.ip)
        environment["HOME"] = nil
        if let account = try writeServiceAccount(namespace: namespace, name: name, pod: pod) {
            mounts.append(
                OCISpec.Mount(source: account, destination: ClusterAccess.serviceAccountDirectory, readOnly: true))
            environment["KUBERNETES_SERVICE_HOST"] = layout.nodeLinkAddress
            environment["KUBERNETES_SERVICE_PORT"] = String(layout.apiPort)
        }
        let spec = try OCISpec.spec(
            OCISpec.Input(
                pod: pod, container: container, image: image.config, rootfs: rootfs,
                networkNamespace: "/run/netns/\(running.namespace)", environment: environment, mounts: mounts))
        try spec.jsonData().write(to: URL(fileURLWithPath: bundle + "/config.json"))
        let id = "\(running.namespace)-\(containerName)"
        runtime.delete(id: id)  // one a crashed server left
        let logPath = directory(namespace: namespace, name: name, container: containerName) + ".log"
        _ = manager.createFile(atPath: logPath, contents: nil)
        let log = try FileHandle(forWritingTo: URL(fileURLWithPath: logPath))
        log.seekToEndOfFile()
        let argv = runtime.runCommand(id: id, bundle: bundle)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: argv[0])
        process.arguments = Array(argv.dropFirst())
        process.standardInput = FileHandle.nullDevice
        process.standardOutput = log
        process.standardError = log
        process.terminationHandler = { [weak self] finished in
            self?.exited(
                key: key, namespace: namespace, name: name, container: container, status: finished.terminationStatus)
        }
        recordEvent(
            pod: pod, type: "Normal", reason: "Pulled",
            message: "Container image \"\(image.name)\" already present on machine (\(image.archive), \(image.digest))")
        try Host.launch(process)
        pods.withLockedValue {
            $0[key]?.processes[containerName] = process
            $0[key]?.runtimeIDs[containerName] = id
        }
        let user = spec["process"]?["user"]
        recordEvent(
            pod: pod, type: "Normal", reason: "Started",
            message: "Started container \(containerName) under crun (OCI runtime) as uid "
                + "\(user?["uid"]?.intValue ?? 0) gid \(user?["gid"]?.intValue ?? 0), root file system "
                + (readOnly ? "read-only" : "writable"))
        logger.info(
            "pod \(namespace)/\(name) container \(containerName): image \(image.name) under crun as \(id) (pid \(process.processIdentifier))"
        )
    }
}
