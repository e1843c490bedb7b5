import Foundation
import KubeKit

/// What a container runs in the lab, decided by its image (there is no container runtime, only processes in the
/// pod's network namespace).
public enum ImageCatalog {
    public enum Program: Sendable, Hashable {
        /// argv and working directory (relative to the container's root directory).
        case run(arguments: [String], workingDirectory: String)
        case pullFailure(String)
    }

    /// Images whose command runs as given (a shell-like base image).
    static let commandImages = ["busybox", "bash", "alpine", "debian", "ubuntu", "python", "nginx", "curlimages/curl"]

    /// `binaries` is where kt-shadow and kt-router are (next to ktlab).
    public static func program(for container: JSONValue, binaries: String) -> Program {
        let image = container["image"]?.stringValue ?? ""
        let command = (container["command"]?.arrayValue ?? []).compactMap(\.stringValue)
        let args = (container["args"]?.arrayValue ?? []).compactMap(\.stringValue)
        let repository = Self.repository(of: image)
        let workingDirectory = container["workingDir"]?.stringValue
        if repository == "tomcat" || repository.hasSuffix("/tomcat") {
            // A static HTTP server on 8080 serving webapps/ROOT under /usr/local/tomcat, as the seed uses it.
            let root = workingDirectory ?? "/usr/local/tomcat"
            return .run(
                arguments: command.isEmpty
                    ? ["python3", "-m", "http.server", "8080", "--bind", "0.0.0.0", "--directory", "webapps/ROOT"]
                    : command + args,
                workingDirectory: root)
        }
        if repository.hasSuffix("shadow") || repository.hasSuffix("kt-shadow") {
            return .run(arguments: ["\(binaries)/kt-shadow"] + args, workingDirectory: workingDirectory ?? "/")
        }
        if repository.hasSuffix("router") || repository.hasSuffix("kt-router") {
            return .run(arguments: ["\(binaries)/kt-router"] + args, workingDirectory: workingDirectory ?? "/")
        }
        if commandImages.contains(where: { repository == $0 || repository.hasSuffix("/\($0)") }) {
            let argv = command.isEmpty ? (args.isEmpty ? ["sleep", "infinity"] : args) : command + args
            return .run(arguments: argv, workingDirectory: workingDirectory ?? "/")
        }
        return .pullFailure(
            "Failed to pull image \"\(image)\": ktlab has no such image (it runs tomcat:*, busybox, bash, alpine, "
                + "debian, ubuntu, python and the project's shadow and router images)")
    }

    /// `docker.io/library/tomcat:9@sha256:…` → `tomcat`.
    static func repository(of image: String) -> String {
        var name = image
        if let at = name.firstIndex(of: "@") { name = String(name[..<at]) }
        if let colon = name.lastIndex(of: ":"), !name[colon...].contains("/") { name = String(name[..<colon]) }
        for prefix in ["docker.io/library/", "docker.io/", "library/"] where name.hasPrefix(prefix) {
            name = String(name.dropFirst(prefix.count))
        }
        return name
    }
}
