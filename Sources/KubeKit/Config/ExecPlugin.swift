import Foundation

/// An exec credential plugin from a kubeconfig `users[].user.exec` (client.authentication.k8s.io v1 / v1beta1),
/// checked the way client-go checks it.
public struct ExecPluginConfiguration: Sendable, Hashable {
    public enum InteractiveMode: String, Sendable, Hashable {
        case never = "Never"
        case ifAvailable = "IfAvailable"
        case always = "Always"
    }

    public static let supportedVersions = ["client.authentication.k8s.io/v1", "client.authentication.k8s.io/v1beta1"]

    public var command: String
    public var args: [String]
    public var environment: [KubeconfigFile.ExecConfig.EnvEntry]
    public var apiVersion: String
    public var interactiveMode: InteractiveMode
    public var installHint: String?
    /// The `spec.cluster` handed to the plugin when `provideClusterInfo` is true.
    public var clusterInfo: JSONValue?
    /// Where this came from, for messages.
    public var origin: String

    init(
        _ exec: KubeconfigFile.ExecConfig, origin: String, field: String, cluster: KubeconfigFile.Cluster,
        clusterCA: [UInt8]?, server: String
    ) throws {
        guard let command = exec.command, !command.isEmpty else {
            throw KubeconfigError(path: origin, field: "\(field).command", problem: "is not set")
        }
        guard let apiVersion = exec.apiVersion, Self.supportedVersions.contains(apiVersion) else {
            throw KubeconfigError(
                path: origin, field: "\(field).apiVersion",
                problem: "is \"\(exec.apiVersion ?? "")\"; exec plugins must use one of "
                    + Self.supportedVersions.joined(separator: ", "))
        }
        let mode: InteractiveMode
        if let text = exec.interactiveMode, !text.isEmpty {
            guard let parsed = InteractiveMode(rawValue: text) else {
                throw KubeconfigError(
                    path: origin, field: "\(field).interactiveMode",
                    problem: "is \"\(text)\"; expected Never, IfAvailable or Always")
            }
            mode = parsed
        } else if apiVersion.hasSuffix("/v1") {
            throw KubeconfigError(
                path: origin, field: "\(field).interactiveMode",
                problem: "must be set for \(apiVersion) exec plugins (Never, IfAvailable or Always)")
        } else {
            mode = .ifAvailable
        }
        self.command = command
        self.args = exec.args ?? []
        self.environment = exec.env ?? []
        self.apiVersion = apiVersion
        self.interactiveMode = mode
        self.installHint = exec.installHint
        self.origin = origin
        if exec.provideClusterInfo ?? false {
            var info: [String: JSONValue] = ["server": .string(server)]
            if let name = cluster.tlsServerName { info["tls-server-name"] = .string(name) }
            if let insecure = cluster.insecureSkipTLSVerify { info["insecure-skip-tls-verify"] = .bool(insecure) }
            if let clusterCA { info["certificate-authority-data"] = .string(Data(clusterCA).base64EncodedString()) }
            if let proxy = cluster.proxyURL { info["proxy-url"] = .string(proxy) }
            if let config = cluster.extensions?.first(where: { $0.name == "client.authentication.k8s.io/exec" }) {
                info["config"] = config.extension ?? .null
            }
            clusterInfo = .object(info)
        } else {
            clusterInfo = nil
        }
    }
}

/// What an exec plugin printed: a token or a client certificate and key, until an optional expiry.
public struct ExecCredential: Sendable, Hashable {
    public var token: String?
    public var clientCertificate: [UInt8]?
    public var clientKey: [UInt8]?
    public var expiration: Date?

    /// Parses the plugin's stdout (`{"apiVersion": ..., "kind": "ExecCredential", "status": {...}}`).
    public static func parse(_ output: [UInt8], expectedVersion: String, command: String) throws -> ExecCredential {
        func failure(_ problem: String) -> ExecPluginError { .badOutput(command: command, problem: problem) }
        guard let document = try? JSONValue(json: Data(output)), document.objectValue != nil else {
            throw failure("stdout is not a JSON object")
        }
        let version = document["apiVersion"]?.stringValue ?? ""
        guard version == expectedVersion else {
            throw failure("it is configured for \(expectedVersion) but answered with apiVersion \"\(version)\"")
        }
        guard document["kind"]?.stringValue == "ExecCredential" else { throw failure("kind is not ExecCredential") }
        guard let status = document["status"], status.objectValue != nil else { throw failure("status is missing") }
        var credential = ExecCredential()
        credential.token = status["token"]?.stringValue.flatMap { $0.isEmpty ? nil : $0 }
        credential.clientCertificate = status["clientCertificateData"]?.stringValue.map { Array($0.utf8) }
        credential.clientKey = status["clientKeyData"]?.stringValue.map { Array($0.utf8) }
        if (credential.clientCertificate == nil) != (credential.clientKey == nil) {
            throw failure("status has only one of clientCertificateData and clientKeyData")
        }
        if credential.token == nil && credential.clientCertificate == nil {
            throw failure("status has neither a token nor a client certificate")
        }
        if let text = status["expirationTimestamp"]?.stringValue {
            guard let date = RFC3339.parse(text) else {
                throw failure("status.expirationTimestamp \"\(text)\" is not an RFC 3339 time")
            }
            credential.expiration = date
        }
        return credential
    }
}

public enum ExecPluginError: Error, Sendable, Hashable, CustomStringConvertible {
    case notFound(command: String, hint: String?)
    case failed(command: String, exitCode: Int32)
    case badOutput(command: String, problem: String)
    case needsTerminal(command: String)
    case couldNotStart(command: String, reason: String)

    public var description: String {
        switch self {
        case .notFound(let command, let hint):
            return "exec credential plugin \(command) was not found" + (hint.map { "; \($0)" } ?? "")
        case .failed(let command, let code):
            return "exec credential plugin \(command) failed with exit code \(code) (its messages are above)"
        case .badOutput(let command, let problem):
            return "exec credential plugin \(command) printed an unusable credential: \(problem)"
        case .needsTerminal(let command):
            return "exec credential plugin \(command) has interactiveMode Always but stdin is not a terminal"
        case .couldNotStart(let command, let reason):
            return "exec credential plugin \(command) could not be started: \(reason)"
        }
    }
}

/// Runs a plugin when a credential is needed and keeps its answer until it expires or the server answers 401.
public actor ExecCredentialProvider {
    public let configuration: ExecPluginConfiguration
    private var cached: ExecCredential?
    private let stdinIsTerminal: Bool
    private let now: @Sendable () -> Date

    public init(
        _ configuration: ExecPluginConfiguration, stdinIsTerminal: Bool = isatty(0) == 1,
        now: @escaping @Sendable () -> Date = Date.init
    ) {
        self.configuration = configuration
        self.stdinIsTerminal = stdinIsTerminal
        self.now = now
    }

    /// The cached credential while it is valid, else a fresh one from the plugin.
    public func credential() async throws -> ExecCredential {
        if let cached, cached.expiration.map({ $0 > now() }) ?? true { return cached }
        let fresh = try await run()
        cached = fresh
        return fresh
    }

    /// Forgets the cached credential (after a 401), so that the next request runs the plugin again.
    public func invalidate() { cached = nil }

    private func run() async throws -> ExecCredential {
        let configuration = self.configuration
        let interactive: Bool
        switch configuration.interactiveMode {
        case .never: interactive = false
        case .ifAvailable: interactive = stdinIsTerminal
        case .always:
            guard stdinIsTerminal else { throw ExecPluginError.needsTerminal(command: configuration.command) }
            interactive = true
        }
        var info: [String: JSONValue] = ["interactive": .bool(interactive)]
        if let cluster = configuration.clusterInfo { info["cluster"] = cluster }
        let execInfo: JSONValue = .object([
            "kind": .string("ExecCredential"), "apiVersion": .string(configuration.apiVersion),
            "spec": .object(info),
        ])
        var environment = ProcessInfo.processInfo.environment
        for entry in configuration.environment { environment[entry.name] = entry.value }
        environment["KUBERNETES_EXEC_INFO"] = execInfo.jsonText

        guard let executable = Self.locate(configuration.command, path: environment["PATH"] ?? "/usr/bin:/bin") else {
            throw ExecPluginError.notFound(command: configuration.command, hint: configuration.installHint)
        }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = configuration.args
        process.environment = environment
        process.standardInput = interactive ? FileHandle.standardInput : FileHandle.nullDevice
        process.standardError = FileHandle.standardError
        let output = Pipe()
        process.standardOutput = output
        let (code, stdout): (Int32, [UInt8]) = try await withCheckedThrowingContinuation { continuation in
            let thread = Thread {
                do {
                    try Self.start(process)
                    let bytes = output.fileHandleForReading.readDataToEndOfFile()
                    process.waitUntilExit()
                    continuation.resume(returning: (process.terminationStatus, Array(bytes)))
                } catch {
                    let notFound = (error as? CocoaError)?.code == .fileReadNoSuchFile
                    continuation.resume(
                        throwing: notFound
                            ? ExecPluginError.notFound(command: configuration.command, hint: configuration.installHint)
                            : ExecPluginError.couldNotStart(command: configuration.command, reason: "\(error)"))
                }
            }
            thread.start()
        }
        guard code == 0 else { throw ExecPluginError.failed(command: configuration.command, exitCode: code) }
        return try ExecCredential.parse(
            stdout, expectedVersion: configuration.apiVersion, command: configuration.command)
    }

    /// Starts `process`, again a few times while the kernel answers "text file busy": a plugin written a moment ago
    /// (a fresh install, a test) can still be open for writing in a child that another thread forked and that has not
    /// yet reached exec.
    static func start(_ process: Process) throws {
        var attempt = 0
        while true {
            do {
                return try process.run()
            } catch {
                attempt += 1
                guard attempt < 20, isTextFileBusy(error) else { throw error }
                usleep(UInt32(10_000 * attempt))
            }
        }
    }

    static func isTextFileBusy(_ error: Error) -> Bool {
        var current: NSError? = error as NSError
        while let nsError = current {
            if nsError.domain == NSPOSIXErrorDomain, nsError.code == Int(ETXTBSY) { return true }
            current = nsError.userInfo[NSUnderlyingErrorKey] as? NSError
        }
        return false
    }

    static func locate(_ command: String, path: String) -> String? {
        if command.contains("/") { return FileManager.default.isExecutableFile(atPath: command) ? command : nil }
        for directory in path.split(separator: ":") {
            let candidate = "\(directory)/\(command)"
            if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
        }
        return nil
    }
}

/// RFC 3339 timestamps as Kubernetes writes them (`2026-11-22T10:00:00Z`, fractions and offsets allowed).
public enum RFC3339 {
    public static func parse(_ text: String) -> Date? {
        let plain = ISO8601DateFormatter()
        plain.formatOptions = [.withInternetDateTime]
        if let date = plain.date(from: text) { return date }
        let fractional = ISO8601DateFormatter()
        fractional.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        return fractional.date(from: text)
    }

    public static func format(_ date: Date) -> String {
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime]
        return formatter.string(from: date)
    }
}
