/// An image name as a pod spec writes it, in the canonical form a container runtime compares: `kt-shadow:0.1.0` is
/// `docker.io/library/kt-shadow:0.1.0`, `ghcr.io/a/b` is `ghcr.io/a/b:latest`, and `name@sha256:…` names a digest.
public struct ImageReference: Hashable, Sendable, CustomStringConvertible {
    /// Registry and path: `docker.io/library/kt-shadow`.
    public var repository: String
    /// The tag, when no digest is given (`latest` when neither is).
    public var tag: String?
    /// `sha256:<hex>` when the name pins one.
    public var digest: String?

    /// Nil when `text` is not an image name (empty, spaces, upper case in the path, an empty component).
    public init?(_ text: String) {
        guard !text.isEmpty, !text.contains(where: { $0.isWhitespace }) else { return nil }
        var name = Substring(text)
        var digest: String?
        if let at = name.firstIndex(of: "@") {
            let pinned = name[name.index(after: at)...]
            guard pinned.hasPrefix("sha256:"), pinned.count == 71,
                pinned.dropFirst(7).allSatisfy({ $0.isHexDigit && !$0.isUppercase })
            else { return nil }
            digest = String(pinned)
            name = name[..<at]
        }
        var tag: String?
        if let colon = name.lastIndex(of: ":"), !name[colon...].contains("/") {
            let value = name[name.index(after: colon)...]
            guard !value.isEmpty, value.count <= 128,
                value.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || "._-".contains($0)) })
            else { return nil }
            tag = String(value)
            name = name[..<colon]
        }
        var components = name.split(separator: "/", omittingEmptySubsequences: false).map(String.init)
        guard !components.isEmpty, components.allSatisfy({ !$0.isEmpty }) else { return nil }
        let first = components[0]
        let hasRegistry =
            components.count > 1 && (first.contains(".") || first.contains(":") || first == "localhost")
        if !hasRegistry {
            if components.count == 1 { components.insert("library", at: 0) }
            components.insert("docker.io", at: 0)
        } else if ["docker.io", "index.docker.io", "registry-1.docker.io"].contains(first) {
            components[0] = "docker.io"
            if components.count == 2 { components.insert("library", at: 1) }
        }
        if hasRegistry {
            let hostAndPort = first.split(separator: ":", omittingEmptySubsequences: false)
            guard hostAndPort.count <= 2, !hostAndPort[0].isEmpty,
                hostAndPort[0].allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || ".-".contains($0)) }),
                hostAndPort.count == 1 || (!hostAndPort[1].isEmpty && hostAndPort[1].allSatisfy(\.isNumber))
            else { return nil }
        }
        let path = components.dropFirst()
        guard
            path.allSatisfy({ component in
                component.allSatisfy { $0.isASCII && ($0.isLowercase || $0.isNumber || "._-".contains($0)) }
            })
        else { return nil }
        self.repository = components.joined(separator: "/")
        self.digest = digest
        self.tag = tag ?? (digest == nil ? "latest" : nil)
    }

    public var description: String {
        repository + (tag.map { ":\($0)" } ?? "") + (digest.map { "@\($0)" } ?? "")
    }

    /// The short form people write: `kt-shadow:0.1.0` for Docker Hub's library images, the full name otherwise.
    public var familiar: String {
        var name = repository
        if name.hasPrefix("docker.io/") {
            let rest = name.dropFirst("docker.io/".count)
            let first = rest.split(separator: "/").first ?? ""
            if rest.hasPrefix("library/"), !rest.dropFirst("library/".count).contains("/") {
                name = String(rest.dropFirst("library/".count))
            } else if !first.contains("."), !first.contains(":"), first != "localhost", first != "library" {
                // Without docker.io/ the first component must not read as a registry.
                name = String(rest)
            }
        }
        return name + (tag.map { ":\($0)" } ?? "") + (digest.map { "@\($0)" } ?? "")
    }
}
