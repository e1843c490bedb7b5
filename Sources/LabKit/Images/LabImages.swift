import Foundation

/// `ktlab image load` and `ktlab image list`: a lab's local images, as `kind load image-archive` gives a kind
/// cluster its own.
public enum LabImages {
    /// Checks that `archive` is an OCI image archive ktlab can read, then copies it into the lab (written beside
    /// and renamed: an interrupted load leaves nothing half-written). Returns the images it holds.
    public static func load(archive: String, lab: String) throws -> [LocalImage] {
        guard let state = LabState.read(lab) else {
            throw LabControl.Failure("lab \"\(lab)\" is not up (ktlab up --name \(lab)); nothing was loaded")
        }
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: archive, isDirectory: &isDirectory), !isDirectory.boolValue,
            FileManager.default.isReadableFile(atPath: archive)
        else {
            throw LabControl.Failure("cannot read \(archive) as a file; nothing was loaded")
        }
        let images: [LocalImage]
        do {
            images = try ImageStore.inspect(archive: archive)
        } catch {
            throw LabControl.Failure("\(error); nothing was loaded")
        }
        let directory = state.layout.imagesDirectory
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let fileName =
            String(images[0].reference.familiar.map { $0.isLetter || $0.isNumber || "._-".contains($0) ? $0 : "_" })
            + ".tar"
        let target = "\(directory)/\(fileName)"
        let partial = "\(directory)/.\(fileName).\(getpid())"
        unlink(partial)
        do {
            try FileManager.default.copyItem(atPath: archive, toPath: partial)
            guard rename(partial, target) == 0 else {
                throw LabControl.Failure("cannot rename \(partial) to \(target): errno \(errno)")
            }
        } catch {
            unlink(partial)
            throw LabControl.Failure("copying \(archive) into \(directory) failed: \(error); nothing was loaded")
        }
        return try ImageStore.inspect(archive: target)
    }

    /// The images a lab runs under crun, in the order it looks for them.
    public static func list(lab: String, binaries: String) throws -> [LocalImage] {
        guard let state = LabState.read(lab) else {
            throw LabControl.Failure("lab \"\(lab)\" is not up (ktlab up --name \(lab))")
        }
        return ImageStore(directories: LabServer.imageDirectories(state.layout, binaries: binaries)).images()
    }

    /// One line per image: name, digest, compressed size, archive.
    public static func table(_ images: [LocalImage]) -> String {
        guard !images.isEmpty else { return "no local images (make images, or ktlab image load FILE)" }
        let rows =
            [["IMAGE", "DIGEST", "SIZE", "ARCHIVE"]]
            + images.map { image in
                [
                    image.reference.familiar, String(image.digest.prefix(19)),
                    String(format: "%.1f MB", Double(image.size) / 1e6), image.archive,
                ]
            }
        let widths = (0..<4).map { column in rows.map { $0[column].count }.max() ?? 0 }
        return rows.map { row in
            row.enumerated().map { index, cell in
                index == 3 ? cell : cell.padding(toLength: widths[index], withPad: " ", startingAt: 0)
            }.joined(separator: "   ")
        }.joined(separator: "\n")
    }
}
