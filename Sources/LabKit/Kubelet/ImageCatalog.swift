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
                arguments: command.isEmpty ? ["python3", "-c", tomcatServer] : command + args, workingDirectory: root)
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

    /// What `tomcat:*` runs: static files of webapps/ROOT on 8080, with Tomcat's welcome files (index.html,
    /// index.htm, index.jsp) for a directory and JSP files served as HTML text.
    static let tomcatServer = """
        import functools, http.server, os
        class Handler(http.server.SimpleHTTPRequestHandler):
            extensions_map = {**http.server.SimpleHTTPRequestHandler.extensions_map, ".jsp": "text/html"}
            def send_head(self):
                path = self.translate_path(self.path)
                if os.path.isdir(path):
                    for name in ("index.html", "index.htm", "index.jsp"):
                        if os.path.exists(os.path.join(path, name)):
                            self.path = self.path.rstrip("/") + "/" + name
                            break
                return super().send_head()
            def log_message(self, format, *args):
                pass
        os.makedirs("webapps", exist_ok=True)  # like tomcat:9's image: webapps exists, ROOT does not
        http.server.ThreadingHTTPServer.allow_reuse_address = True
        server = http.server.ThreadingHTTPServer(("0.0.0.0", 8080), functools.partial(Handler, directory="webapps/ROOT"))
        server.serve_forever()
        """

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
