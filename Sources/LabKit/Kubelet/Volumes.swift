import Foundation
import KubeKit

/// Why a pod's volumes could not be set up. `waits` when the pod stays in ContainerCreating and is tried again (a
/// ConfigMap or Secret that may yet be created); otherwise the pod's spec asks for what the lab cannot do.
struct VolumeError: Error, CustomStringConvertible {
    var message: String
    var waits: Bool
    var description: String { message }
}

/// Volumes, the lab's way: a container's filesystem is its directory (`…/pods/<ns>_<pod>/<container>`, where
/// `/usr/local/tomcat` is `<container>/usr/local/tomcat`), and a pod's volumes are directories beside its
/// containers (`…/pods/<ns>_<pod>/volumes/<volume>`). A volumeMount is a symbolic link at the mount path inside the
/// container's directory to the volume (or, with `subPath`, to the file or directory in it), so an emptyDir is
/// shared by the pod's containers as on a node.
extension Kubelet {
    func volumeDirectory(namespace: String, name: String, volume: String) -> String {
        "\(layout.podsDirectory)/\(namespace)_\(name)/volumes/\(volume)"
    }

    /// Each volume's directory, by name (those already materialised).
    func volumeDirectories(namespace: String, name: String, pod: JSONValue) -> [String: String] {
        var directories: [String: String] = [:]
        for volume in pod["spec"]?["volumes"]?.arrayValue ?? [] {
            guard let volumeName = volume["name"]?.stringValue else { continue }
            directories[volumeName] = volumeDirectory(namespace: namespace, name: name, volume: volumeName)
        }
        return directories
    }

    /// Writes every volume of the pod: emptyDir (empty), configMap and secret (a file per key, or per `items`
    /// entry, with `defaultMode`/`mode`), downwardAPI (fieldRef values) and projected volumes of those sources.
    func materialiseVolumes(namespace: String, name: String, pod: JSONValue) throws -> [String: String] {
        var directories: [String: String] = [:]
        for volume in pod["spec"]?["volumes"]?.arrayValue ?? [] {
            guard let volumeName = volume["name"]?.stringValue else { continue }
            var files: [String: (Data, Int)] = [:]
            if volume["emptyDir"] != nil {
                // Nothing to write.
            } else if let source = volume["configMap"] {
                try files.merge(configMapFiles(source, volume: volumeName, namespace: namespace)) { $1 }
            } else if let source = volume["secret"] {
                try files.merge(secretFiles(source, volume: volumeName, namespace: namespace)) { $1 }
            } else if let source = volume["downwardAPI"] {
                try files.merge(downwardFiles(source, volume: volumeName, pod: pod, namespace: namespace)) { $1 }
            } else if let source = volume["projected"] {
                let mode = source["defaultMode"]
                for projection in source["sources"]?.arrayValue ?? [] {
                    if var part = projection["configMap"] {
                        if part["defaultMode"] == nil { part["defaultMode"] = mode ?? .null }
                        try files.merge(configMapFiles(part, volume: volumeName, namespace: namespace)) { $1 }
                    } else if var part = projection["secret"] {
                        if part["defaultMode"] == nil { part["defaultMode"] = mode ?? .null }
                        part["secretName"] = part["name"] ?? .null
                        try files.merge(secretFiles(part, volume: volumeName, namespace: namespace)) { $1 }
                    } else if var part = projection["downwardAPI"] {
                        if part["defaultMode"] == nil { part["defaultMode"] = mode ?? .null }
                        try files.merge(downwardFiles(part, volume: volumeName, pod: pod, namespace: namespace)) {
                            $1
                        }
                    } else {
                        let kind = projection.objectValue?.keys.sorted().first ?? "unknown"
                        throw VolumeError(
                            message: "volume \"\(volumeName)\": ktlab cannot project a \(kind) source "
                                + "(it projects configMap, secret and downwardAPI)", waits: false)
                    }
                }
            } else {
                let kind = volume.objectValue?.keys.filter { $0 != "name" }.sorted().first ?? "unknown"
                throw VolumeError(
                    message: "volume \"\(volumeName)\": ktlab has no \(kind) volumes "
                        + "(it has emptyDir, configMap, secret, downwardAPI and projected)", waits: false)
            }
            let directory = volumeDirectory(namespace: namespace, name: name, volume: volumeName)
            try write(files, into: directory, volume: volumeName)
            if volume["emptyDir"] != nil {
                // World-writable, as a kubelet makes it: any user of the pod's containers writes there.
                try FileManager.default.setAttributes([.posixPermissions: 0o777], ofItemAtPath: directory)
            }
            directories[volumeName] = directory
        }
        return directories
    }

    func write(_ files: [String: (Data, Int)], into directory: String, volume: String) throws {
        let manager = FileManager.default
        try manager.createDirectory(atPath: directory, withIntermediateDirectories: true)
        for (path, (contents, mode)) in files {
            let components = path.split(separator: "/")
            guard !path.hasPrefix("/"), !components.contains(".."), !components.isEmpty else {
                throw VolumeError(
                    message: "volume \"\(volume)\": item path \"\(path)\" must be relative and must not contain '..'",
                    waits: false)
            }
            let file = directory + "/" + path
            try manager.createDirectory(
                atPath: (file as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
            try contents.write(to: URL(fileURLWithPath: file))
            try manager.setAttributes([.posixPermissions: mode & 0o777], ofItemAtPath: file)
        }
    }

    /// `items` picks keys (and names their files); without it every key is a file of its own name.
    static func select(
        _ data: [String: Data], items: [JSONValue]?, defaultMode: Int, volume: String, what: String, optional: Bool
    ) throws -> [String: (Data, Int)] {
        guard let items else { return data.mapValues { ($0, defaultMode) } }
        var files: [String: (Data, Int)] = [:]
        for item in items {
            guard let key = item["key"]?.stringValue else { continue }
            guard let contents = data[key] else {
                if optional { continue }
                throw VolumeError(
                    message: "MountVolume.SetUp failed for volume \"\(volume)\" : \(what) has no key \"\(key)\"",
                    waits: true)
            }
            let mode = item["mode"]?.intValue.map(Int.init) ?? defaultMode
            files[item["path"]?.stringValue ?? key] = (contents, mode)
        }
        return files
    }

    func configMapFiles(_ source: JSONValue, volume: String, namespace: String) throws -> [String: (Data, Int)] {
        let name = source["name"]?.stringValue ?? ""
        let optional = source["optional"]?.boolValue ?? false
        guard let configMap = try? store.get(ConfigMap.resource, namespace: namespace, name: name) else {
            if optional { return [:] }
            throw VolumeError(
                message: "MountVolume.SetUp failed for volume \"\(volume)\" : configmap \"\(name)\" not found",
                waits: true)
        }
        var data: [String: Data] = [:]
        for (key, value) in configMap["data"]?.objectValue ?? [:] { data[key] = Data((value.stringValue ?? "").utf8) }
        for (key, value) in configMap["binaryData"]?.objectValue ?? [:] {
            data[key] = Data(base64Encoded: value.stringValue ?? "") ?? Data()
        }
        return try Self.select(
            data, items: source["items"]?.arrayValue, defaultMode: Int(source["defaultMode"]?.intValue ?? 0o644),
            volume: volume, what: "configmap \"\(name)\"", optional: optional)
    }

    func secretFiles(_ source: JSONValue, volume: String, namespace: String) throws -> [String: (Data, Int)] {
        let name = source["secretName"]?.stringValue ?? ""
        let optional = source["optional"]?.boolValue ?? false
        guard let secret = try? store.get(Secret.resource, namespace: namespace, name: name) else {
            if optional { return [:] }
            throw VolumeError(
                message: "MountVolume.SetUp failed for volume \"\(volume)\" : secret \"\(name)\" not found",
                waits: true)
        }
        let data = (secret["data"]?.objectValue ?? [:]).mapValues {
            Data(base64Encoded: $0.stringValue ?? "") ?? Data()
        }
        return try Self.select(
            data, items: source["items"]?.arrayValue, defaultMode: Int(source["defaultMode"]?.intValue ?? 0o644),
            volume: volume, what: "secret \"\(name)\"", optional: optional)
    }

    func downwardFiles(_ source: JSONValue, volume: String, pod: JSONValue, namespace: String) throws -> [String: (
        Data, Int
    )] {
        let defaultMode = Int(source["defaultMode"]?.intValue ?? 0o644)
        let ip = pods.withLockedValue { $0[Self.key(namespace, pod["metadata"]?["name"]?.stringValue ?? "")]?.ip } ?? ""
        var files: [String: (Data, Int)] = [:]
        for item in source["items"]?.arrayValue ?? [] {
            guard let path = item["path"]?.stringValue else { continue }
            let field = item["fieldRef"]?["fieldPath"]?.stringValue ?? ""
            let value: String?
            switch field {
            case "metadata.labels", "metadata.annotations":
                let map = pod["metadata"]?[field == "metadata.labels" ? "labels" : "annotations"]?.objectValue ?? [:]
                value = map.keys.sorted().map { "\($0)=\"\(map[$0]?.stringValue ?? "")\"" }.joined(separator: "\n")
            default:
                value = resolve(item, pod: pod, namespace: namespace, ip: ip)
            }
            guard let value else {
                throw VolumeError(
                    message: "volume \"\(volume)\": ktlab cannot project \(field.isEmpty ? "this item" : field) "
                        + "into \(path)", waits: false)
            }
            files[path] = (Data(value.utf8), Int(item["mode"]?.intValue ?? Int64(defaultMode)))
        }
        return files
    }

    /// Links each of the container's volumeMounts into its directory.
    /// The service account's token, the lab CA and the namespace, as the kubelet projects them
    /// (`kube-api-access-*`), under `<root>/var/run/secrets/kubernetes.io/serviceaccount`; nil when the pod (or its
    /// account) says `automountServiceAccountToken: false` or the lab mints no tokens. Returns the directory.
    func mountServiceAccount(namespace: String, name: String, pod: JSONValue, into root: String) throws -> String? {
        guard let directory = try writeServiceAccount(namespace: namespace, name: name, pod: pod) else { return nil }
        let manager = FileManager.default
        let link = root + ClusterAccess.serviceAccountDirectory
        try manager.createDirectory(
            atPath: (link as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        if (try? manager.destinationOfSymbolicLink(atPath: link)) != nil { try manager.removeItem(atPath: link) }
        try manager.createSymbolicLink(atPath: link, withDestinationPath: directory)
        return link
    }

    /// The pod's service account token, CA and namespace in a volume directory of the pod (nil: none is mounted).
    func writeServiceAccount(namespace: String, name: String, pod: JSONValue) throws -> String? {
        guard let tokens = serviceAccountTokens else { return nil }
        let account = pod["spec"]?["serviceAccountName"]?.stringValue ?? "default"
        let stored = try? store.get(ResourceRegistry.serviceAccount, namespace: namespace, name: account)
        let automount =
            pod["spec"]?["automountServiceAccountToken"]?.boolValue ?? stored?["automountServiceAccountToken"]?
            .boolValue ?? true
        guard automount else { return nil }
        let directory = volumeDirectory(namespace: namespace, name: name, volume: "kube-api-access-ktlab")
        let manager = FileManager.default
        try manager.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let ca = manager.contents(atPath: "\(layout.pkiDirectory)/ca.crt") ?? Data()
        for (file, data) in [
            ("token", Data(tokens.token(namespace: namespace, name: account).utf8)), ("ca.crt", ca),
            ("namespace", Data(namespace.utf8)),
        ] {
            guard
                manager.createFile(
                    atPath: "\(directory)/\(file)", contents: data, attributes: [.posixPermissions: 0o644])
            else { throw VolumeError(message: "cannot write the service account's \(file)", waits: false) }
        }
        return directory
    }

    /// A container's volumeMounts, checked (the volume exists; an absolute mountPath and a relative subPath, without
    /// `..`), each as the host path it shows (a subPath's directory made if missing) and where: what both kinds of
    /// container mount.
    func volumeMounts(_ volumes: [String: String], for container: JSONValue) throws -> [OCISpec.Mount] {
        let containerName = container["name"]?.stringValue ?? "c"
        var mounts: [OCISpec.Mount] = []
        for mount in container["volumeMounts"]?.arrayValue ?? [] {
            guard let volume = mount["name"]?.stringValue, let mountPath = mount["mountPath"]?.stringValue else {
                continue
            }
            guard let directory = volumes[volume] else {
                throw VolumeError(
                    message: "container \(containerName): volumeMount \"\(volume)\" names no volume of the pod",
                    waits: false)
            }
            let subPath = mount["subPath"]?.stringValue ?? ""
            guard mountPath.hasPrefix("/"), !mountPath.split(separator: "/").contains(".."),
                !subPath.hasPrefix("/"), !subPath.split(separator: "/").contains("..")
            else {
                throw VolumeError(
                    message: "container \(containerName): volumeMount \"\(volume)\" needs an absolute mountPath "
                        + "and a relative subPath without '..'", waits: false)
            }
            let source = subPath.isEmpty ? directory : directory + "/" + subPath
            if !subPath.isEmpty && !FileManager.default.fileExists(atPath: source) {
                try FileManager.default.createDirectory(atPath: source, withIntermediateDirectories: true)
            }
            mounts.append(
                OCISpec.Mount(
                    source: source, destination: mountPath, readOnly: mount["readOnly"]?.boolValue ?? false))
        }
        return mounts
    }

    /// A process container's volumeMounts: a symbolic link at each mount path inside its directory.
    func mount(_ volumes: [String: String], into root: String, for container: JSONValue) throws {
        let manager = FileManager.default
        let containerName = container["name"]?.stringValue ?? "c"
        for mount in try volumeMounts(volumes, for: container) {
            let link = root + mount.destination
            try manager.createDirectory(
                atPath: (link as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
            if (try? manager.destinationOfSymbolicLink(atPath: link)) != nil {
                try manager.removeItem(atPath: link)
            } else if let contents = try? manager.contentsOfDirectory(atPath: link) {
                guard contents.isEmpty else {
                    throw VolumeError(
                        message: "container \(containerName): mountPath \(mount.destination) already holds files",
                        waits: false)
                }
                try manager.removeItem(atPath: link)
            }
            try manager.createSymbolicLink(atPath: link, withDestinationPath: mount.source)
        }
    }

    /// An Event about the pod from the kubelet, as `kubectl describe` and `kubectl get events` show them.
    func recordEvent(pod: JSONValue, type: String, reason: String, message: String) {
        let namespace = pod["metadata"]?["namespace"]?.stringValue ?? "default"
        let name = pod["metadata"]?["name"]?.stringValue ?? ""
        let now = RFC3339.format(Date())
        let event: JSONValue = [
            "metadata": ["generateName": .string("\(name)."), "namespace": .string(namespace)],
            "involvedObject": [
                "kind": "Pod", "apiVersion": "v1", "namespace": .string(namespace), "name": .string(name),
                "uid": pod["metadata"]?["uid"] ?? .null,
            ],
            "type": .string(type), "reason": .string(reason), "message": .string(message),
            "source": ["component": "kubelet", "host": .string("\(layout.name)-node")],
            "reportingComponent": "kubelet", "reportingInstance": .string("\(layout.name)-node"),
            "firstTimestamp": .string(now), "lastTimestamp": .string(now), "count": 1,
        ]
        _ = try? store.create(Event.resource, namespace: namespace, object: event)
    }
}
