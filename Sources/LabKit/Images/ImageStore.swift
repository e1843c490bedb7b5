import Foundation
import KubeKit
import NIOConcurrencyHelpers

/// What an image's config says a container runs by default (the OCI image config's `config`).
public struct ImageConfig: Sendable, Equatable {
    public var entrypoint: [String] = []
    public var command: [String] = []
    public var environment: [String] = []
    public var user: String = ""
    public var workingDirectory: String = ""

    public init() {}

    init(_ document: JSONValue) {
        let config = document["config"] ?? [:]
        entrypoint = (config["Entrypoint"]?.arrayValue ?? []).compactMap(\.stringValue)
        command = (config["Cmd"]?.arrayValue ?? []).compactMap(\.stringValue)
        environment = (config["Env"]?.arrayValue ?? []).compactMap(\.stringValue)
        user = config["User"]?.stringValue ?? ""
        workingDirectory = config["WorkingDir"]?.stringValue ?? ""
    }
}

/// An image in an OCI archive (a tar of an OCI image layout, as `make images`, `skopeo copy … oci-archive:` and
/// `podman save --format oci-archive` write), named by its index's `org.opencontainers.image.ref.name`.
public struct LocalImage: Sendable, Equatable {
    /// The name as the archive gives it (`kt-shadow:0.1.0`).
    public var name: String
    public var reference: ImageReference
    public var archive: String
    /// The manifest's digest: what `skopeo inspect` calls the image's digest.
    public var digest: String
    public var config: ImageConfig
    /// Compressed bytes of the layers, config and manifest.
    public var size: Int64
}

/// Why an archive is not an image ktlab can run.
public struct ImageArchiveError: Error, CustomStringConvertible, Sendable {
    public var description: String
}

/// The images ktlab runs under crun: OCI archives in a few directories (the lab's own, where `ktlab image load`
/// copies them, and `.build/images` beside the binaries, where `make images` writes them). An archive is read once
/// per change of its size or time.
public final class ImageStore: Sendable {
    public let directories: [String]
    private let cache = NIOLockedValueBox<[String: (stamp: String, images: [LocalImage])]>([:])

    public init(directories: [String]) {
        self.directories = directories
    }

    /// Every image of every archive, the first directory's first when two give the same name.
    public func images() -> [LocalImage] {
        var seen = Set<ImageReference>()
        var all: [LocalImage] = []
        for directory in directories {
            let names = ((try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []).sorted()
            for file in names where file.hasSuffix(".tar") {
                for image in cached("\(directory)/\(file)") where seen.insert(image.reference).inserted {
                    all.append(image)
                }
            }
        }
        return all
    }

    /// The image a pod's `image` names, if one is here: same repository and tag, or the digest it pins.
    public func find(_ name: String) -> LocalImage? {
        guard let wanted = ImageReference(name) else { return nil }
        return images().first { image in
            guard image.reference.repository == wanted.repository else { return false }
            if let digest = wanted.digest { return image.digest == digest }
            return image.reference.tag == wanted.tag
        }
    }

    private func cached(_ archive: String) -> [LocalImage] {
        guard let attributes = try? FileManager.default.attributesOfItem(atPath: archive) else { return [] }
        let stamp = "\(attributes[.size] ?? 0) \((attributes[.modificationDate] as? Date)?.timeIntervalSince1970 ?? 0)"
        if let entry = cache.withLockedValue({ $0[archive] }), entry.stamp == stamp { return entry.images }
        let images = (try? Self.inspect(archive: archive)) ?? []
        cache.withLockedValue { $0[archive] = (stamp, images) }
        return images
    }

    /// Reads an archive's index, manifests and configs (nothing is unpacked).
    public static func inspect(archive: String) throws -> [LocalImage] {
        func member(_ path: String) throws -> JSONValue {
            let text: String
            do {
                text = try Host.run(["tar", "-xOf", archive, path])
            } catch {
                throw ImageArchiveError(
                    description: "\(archive) is not an OCI image archive: it has no \(path) (\(error))")
            }
            do {
                return try JSONValue(json: Data(text.utf8))
            } catch {
                throw ImageArchiveError(description: "\(archive): \(path) is not JSON: \(error)")
            }
        }
        func blob(_ digest: String) throws -> JSONValue {
            guard digest.hasPrefix("sha256:"), digest.count == 71,
                digest.dropFirst(7).allSatisfy({ $0.isHexDigit })
            else { throw ImageArchiveError(description: "\(archive): \"\(digest)\" is not a sha256 digest") }
            return try member("blobs/sha256/\(digest.dropFirst(7))")
        }
        let index = try member("index.json")
        var images: [LocalImage] = []
        for descriptor in index["manifests"]?.arrayValue ?? [] {
            guard let name = descriptor["annotations"]?["org.opencontainers.image.ref.name"]?.stringValue else {
                continue
            }
            guard let reference = ImageReference(name) else {
                throw ImageArchiveError(description: "\(archive): \"\(name)\" is not an image name")
            }
            guard let digest = descriptor["digest"]?.stringValue else {
                throw ImageArchiveError(description: "\(archive): the manifest of \(name) has no digest")
            }
            let manifest = try blob(digest)
            guard let configDigest = manifest["config"]?["digest"]?.stringValue else {
                throw ImageArchiveError(description: "\(archive): \(name) is not an image manifest (no config)")
            }
            let config = try blob(configDigest)
            let layers = manifest["layers"]?.arrayValue ?? []
            let size =
                (manifest["config"]?["size"]?.intValue ?? 0) + layers.reduce(0) { $0 + ($1["size"]?.intValue ?? 0) }
                + (descriptor["size"]?.intValue ?? 0)
            images.append(
                LocalImage(
                    name: name, reference: reference, archive: archive, digest: digest, config: ImageConfig(config),
                    size: size))
        }
        guard !images.isEmpty else {
            throw ImageArchiveError(
                description: "\(archive) names no image (no org.opencontainers.image.ref.name in index.json)")
        }
        return images
    }

    /// The image's root file system, unpacked once under `cache` (one directory per digest) with umoci. The tree
    /// is shared by every container that runs the image with a read-only root; a writable root is a copy of it.
    public static func unpack(_ image: LocalImage, into cache: String) throws -> String {
        let directory = "\(cache)/\(image.digest.dropFirst(7))"
        let rootfs = "\(directory)/rootfs"
        let manager = FileManager.default
        if manager.fileExists(atPath: "\(directory)/complete") { return rootfs }
        // A half-made tree from an interrupted unpack goes first (plain files: nothing is ever mounted in it).
        if manager.fileExists(atPath: directory) { try Host.removeTree(directory) }
        let layout = "\(directory)/layout"
        try manager.createDirectory(atPath: layout, withIntermediateDirectories: true)
        try Host.run(["tar", "-xf", image.archive, "-C", layout])
        try Host.run(["umoci", "raw", "unpack", "--image", "\(layout):\(image.name)", rootfs])
        try Host.removeTree(layout)
        manager.createFile(atPath: "\(directory)/complete", contents: Data())
        return rootfs
    }
}
