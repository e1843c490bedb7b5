import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore

/// A Kubernetes API client for one cluster and user: typed get/list/create/update/patch/delete and watch, with
/// credentials (token, token file, basic, exec plugin), retries with backoff on connection errors (never on an
/// answer in 4xx) and errors decoded from `Status`.
public final class KubeClient: Sendable {
    public let access: ClusterAccess
    /// The `fieldManager` sent with writes (`ktctl`).
    public let fieldManager: String
    let logger: Logger
    let retry: RetryPolicy
    private let transports: TransportSource
    private let tokenFile: TokenFileCache?
    private let plugin: ExecCredentialProvider?
    /// The API server's clock, from the `Date` header of every answer.
    public let serverClock = ServerClock()

    /// How many times and how long to wait between attempts when the server cannot be reached.
    public struct RetryPolicy: Sendable, Hashable {
        public var attempts: Int
        public var firstDelay: Duration
        public var maximumDelay: Duration
        /// How long one request may take (a watch's own timeout is added to it).
        public var requestTimeout: Duration

        public init(
            attempts: Int = 4, firstDelay: Duration = .milliseconds(200), maximumDelay: Duration = .seconds(3),
            requestTimeout: Duration = .seconds(30)
        ) {
            self.attempts = attempts
            self.firstDelay = firstDelay
            self.maximumDelay = maximumDelay
            self.requestTimeout = requestTimeout
        }
    }

    /// A client for `access` over HTTPS.
    public convenience init(
        access: ClusterAccess, fieldManager: String = "ktctl", retry: RetryPolicy = RetryPolicy(),
        logger: Logger = Logger(label: "kubekit")
    ) throws {
        // Built once up front so that a bad CA or key is reported before anything is sent.
        let first = try HTTPTransport(access: access)
        self.init(
            access: access, fieldManager: fieldManager, retry: retry, logger: logger,
            transport: { identity in
                identity == nil ? first : try HTTPTransport(access: access, clientIdentity: identity)
            })
    }

    /// A client whose transport is made by `transport` (called again with an exec plugin's client certificate).
    public init(
        access: ClusterAccess, fieldManager: String = "ktctl", retry: RetryPolicy = RetryPolicy(),
        logger: Logger = Logger(label: "kubekit"),
        transport: @escaping @Sendable ((certificate: [UInt8], key: [UInt8])?) throws -> any KubeTransport
    ) {
        self.access = access
        self.fieldManager = fieldManager
        self.retry = retry
        self.logger = logger
        self.transports = TransportSource(make: transport)
        switch access.credentials {
        case .bearer(_, let file?): tokenFile = TokenFileCache(path: file)
        default: tokenFile = nil
        }
        if case .exec(let configuration) = access.credentials {
            plugin = ExecCredentialProvider(configuration)
        } else {
            plugin = nil
        }
    }

    public func shutdown() async {
        await transports.shutdown()
    }

    // MARK: - Sending

    /// Sends one request with credentials, retrying connection failures; a non-2xx answer throws `KubeAPIError`.
    public func send(_ request: APIRequest) async throws -> APIResponse {
        try await attempt(request) { transport, authorized in
            let response = try await transport.perform(authorized, timeout: self.retry.requestTimeout)
            return (response, response)
        }
    }

    /// Sends a request whose 2xx body is read as it arrives (watch, logs).
    public func stream(_ request: APIRequest, timeout: Duration) async throws -> AsyncThrowingStream<
        ByteBuffer, any Error
    > {
        try await attempt(request) { transport, authorized in
            let (head, body) = try await transport.stream(authorized, timeout: timeout)
            return (head, body)
        }
    }

    private func attempt<Result>(
        _ request: APIRequest,
        _ body: (any KubeTransport, APIRequest) async throws -> (APIResponse, Result)
    ) async throws -> Result {
        var delay = retry.firstDelay
        var refreshedCredentials = false
        var attempt = 0
        while true {
            attempt += 1
            let (authorized, identity) = try await authorize(request)
            let transport = try await transports.transport(for: identity)
            let head: APIResponse
            let result: Result
            do {
                (head, result) = try await body(transport, authorized)
            } catch let error as KubeTransportError
                where error.kind != .tls && attempt < retry.attempts && Self.mayRetry(request, after: error)
            {
                logger.debug(
                    "\(request.method.rawValue) \(request.path): \(error.detail); retrying in \(delay)",
                    metadata: ["attempt": "\(attempt)"])
                try await Task.sleep(for: delay)
                delay = min(delay * 2, retry.maximumDelay)
                continue
            }
            logger.trace("\(request.method.rawValue) \(request.target) → \(head.status)")
            if let date = head.header("Date") { serverClock.observe(dateHeader: date) }
            if (200..<300).contains(head.status) { return result }
            if head.status == 401, let plugin, !refreshedCredentials {
                // client-go runs the plugin again after a 401 and retries once.
                await plugin.invalidate()
                refreshedCredentials = true
                continue
            }
            if head.status == 429 || head.status == 503, attempt < retry.attempts {
                let after = head.header("Retry-After").flatMap(Int.init).map { Duration.seconds(min($0, 10)) }
                try await Task.sleep(for: after ?? delay)
                delay = min(delay * 2, retry.maximumDelay)
                continue
            }
            throw KubeAPIError.from(head, request: request)
        }
    }

    /// A connection error means the request may or may not have reached the server: only requests that are safe to
    /// repeat are repeated (a create could otherwise happen twice).
    static func mayRetry(_ request: APIRequest, after error: KubeTransportError) -> Bool {
        switch request.method {
        case .get, .put, .delete: return true
        case .post, .patch: return error.detail.contains("refused") || error.detail.contains("connectTimeout")
        }
    }

    private func authorize(_ request: APIRequest) async throws -> (
        APIRequest, (certificate: [UInt8], key: [UInt8])?
    ) {
        var request = request
        switch access.credentials {
        case .none:
            return (request, nil)
        case .bearer(let token, _):
            let current = tokenFile?.token() ?? token
            request.headers.append(.init("Authorization", "Bearer \(current)"))
            return (request, nil)
        case .basic(let username, let password):
            let encoded = Data("\(username):\(password)".utf8).base64EncodedString()
            request.headers.append(.init("Authorization", "Basic \(encoded)"))
            return (request, nil)
        case .exec:
            guard let plugin else { return (request, nil) }
            let credential = try await plugin.credential()
            if let token = credential.token {
                request.headers.append(.init("Authorization", "Bearer \(token)"))
            }
            if let certificate = credential.clientCertificate, let key = credential.clientKey {
                return (request, (certificate, key))
            }
            return (request, nil)
        }
    }

    /// The headers a request to this cluster carries right now (for the port-forward's WebSocket handshake).
    public func authorizationHeaders() async throws -> [APIRequest.Header] {
        let (request, _) = try await authorize(APIRequest(method: .get, path: "/", verb: "get", subject: ""))
        return request.headers.filter { $0.name == "Authorization" }
    }

    // MARK: - Typed verbs

    func resolvedNamespace<T: KubeResource>(_ type: T.Type, _ namespace: String?) -> String? {
        T.resource.namespaced ? (namespace ?? access.namespace) : nil
    }

    /// One object; `namespace` nil means the client's namespace (`-n`, else the context's).
    public func get<T: KubeResource>(_ type: T.Type, name: String, namespace: String? = nil) async throws -> T {
        let response = try await send(.get(T.resource, name: name, namespace: resolvedNamespace(type, namespace)))
        return try Self.decode(T.self, response)
    }

    /// One page of a list.
    public func list<T: KubeResource>(
        _ type: T.Type, namespace: String? = nil, allNamespaces: Bool = false, options: ListOptions = ListOptions()
    ) async throws -> ObjectList<T> {
        let scope = allNamespaces ? nil : resolvedNamespace(type, namespace)
        let response = try await send(.list(T.resource, namespace: scope, options: options))
        return try ObjectList<T>.decoding(try Self.document(response))
    }

    /// Every page of a list (`limit` per page), and the resourceVersion of the last page to watch from.
    public func listAll<T: KubeResource>(
        _ type: T.Type, namespace: String? = nil, allNamespaces: Bool = false, options: ListOptions = ListOptions(),
        pageSize: Int = 500
    ) async throws -> ObjectList<T> {
        var options = options
        options.limit = pageSize
        var all = try await list(type, namespace: namespace, allNamespaces: allNamespaces, options: options)
        while let token = all.metadata.continue, !token.isEmpty {
            options.continueToken = token
            options.resourceVersion = nil
            let page = try await list(type, namespace: namespace, allNamespaces: allNamespaces, options: options)
            all.items += page.items
            all.metadata = page.metadata
        }
        return all
    }

    public func create<T: KubeResource>(_ object: T, namespace: String? = nil) async throws -> T {
        let scope = resolvedNamespace(T.self, namespace ?? object.metadata.namespace)
        let response = try await send(
            try .create(T.resource, namespace: scope, body: try object.document(), fieldManager: fieldManager))
        return try Self.decode(T.self, response)
    }

    /// PUT: fails with `.conflict` when the object changed since it was read (its resourceVersion is sent).
    public func update<T: KubeResource>(_ object: T, subresource: String? = nil) async throws -> T {
        let scope = resolvedNamespace(T.self, object.metadata.namespace)
        let response = try await send(
            try .update(
                T.resource, name: object.name, namespace: scope, body: try object.document(),
                subresource: subresource, fieldManager: fieldManager))
        return try Self.decode(T.self, response)
    }

    /// Reads, changes and writes an object, reading again and re-applying `change` when someone else wrote it in
    /// between (409), up to `attempts` times.
    public func update<T: KubeResource>(
        _ type: T.Type, name: String, namespace: String? = nil, attempts: Int = 5,
        change: (inout T) throws -> Void
    ) async throws -> T {
        var attempt = 0
        while true {
            attempt += 1
            var object = try await get(type, name: name, namespace: namespace)
            try change(&object)
            do {
                return try await update(object)
            } catch let error as KubeAPIError where error.reason == .conflict && attempt < attempts {
                logger.debug("\(error); reading \(name) again")
            }
        }
    }

    public func patch<T: KubeResource>(
        _ type: T.Type, name: String, namespace: String? = nil, _ patch: Patch, subresource: String? = nil
    ) async throws -> T {
        let response = try await send(
            try .patch(
                T.resource, name: name, namespace: resolvedNamespace(type, namespace), patch: patch,
                subresource: subresource, fieldManager: fieldManager))
        return try Self.decode(T.self, response)
    }

    /// The `scale` subresource of a Deployment, ReplicaSet or StatefulSet.
    public func scale<T: KubeResource>(_ type: T.Type, name: String, namespace: String? = nil) async throws -> Scale {
        let response = try await send(
            .get(T.resource, name: name, namespace: resolvedNamespace(type, namespace), subresource: "scale"))
        return try Self.decode(Scale.self, response)
    }

    /// Sets the replica count through the `scale` subresource (a merge patch, as `kubectl scale` sends).
    @discardableResult
    public func scale<T: KubeResource>(_ type: T.Type, name: String, namespace: String? = nil, to replicas: Int)
        async throws -> Scale
    {
        let response = try await send(
            try .patch(
                T.resource, name: name, namespace: resolvedNamespace(type, namespace),
                patch: .merge(["spec": ["replicas": .int(Int64(replicas))]]), subresource: "scale",
                fieldManager: fieldManager))
        return try Self.decode(Scale.self, response)
    }

    /// Deletes an object. Returns false when it was already gone.
    @discardableResult
    public func delete<T: KubeResource>(
        _ type: T.Type, name: String, namespace: String? = nil, options: DeleteOptions = DeleteOptions()
    ) async throws -> Bool {
        do {
            _ = try await send(
                try .delete(T.resource, name: name, namespace: resolvedNamespace(type, namespace), options: options))
            return true
        } catch let error as KubeAPIError where error.reason == .notFound {
            return false
        }
    }

    // MARK: - Decoding

    static func document(_ response: APIResponse) throws -> JSONValue {
        do {
            return try JSONValue(json: Data(response.body))
        } catch {
            throw KubeDecodingError(
                what: "response", problem: "is not JSON: \(String(decoding: response.body.prefix(200), as: UTF8.self))")
        }
    }

    static func decode<T: KubeResource>(_ type: T.Type, _ response: APIResponse) throws -> T {
        let document = try document(response)
        do {
            return try T.decoding(document)
        } catch {
            throw KubeDecodingError(what: T.resource.kind, problem: "does not match the expected shape: \(error)")
        }
    }
}

/// The server answered with something KubeKit cannot read.
public struct KubeDecodingError: Error, Sendable, Hashable, CustomStringConvertible {
    public var what: String
    public var problem: String
    public var description: String { "the API server's \(what) \(problem)" }
}

/// The transport for the current client identity (a new one when an exec plugin hands out a new certificate).
final class TransportSource: Sendable {
    private struct State {
        var identity: [UInt8]?
        var transport: (any KubeTransport)?
        var retired: [any KubeTransport] = []
    }
    private let state = NIOLockedValueBox(State())
    private let make: @Sendable ((certificate: [UInt8], key: [UInt8])?) throws -> any KubeTransport

    init(make: @escaping @Sendable ((certificate: [UInt8], key: [UInt8])?) throws -> any KubeTransport) {
        self.make = make
    }

    func transport(for identity: (certificate: [UInt8], key: [UInt8])?) async throws -> any KubeTransport {
        let key = identity.map { $0.certificate + $0.key }
        return try state.withLockedValue { state in
            if let transport = state.transport, state.identity == key { return transport }
            let transport = try make(identity)
            if let old = state.transport { state.retired.append(old) }
            state.transport = transport
            state.identity = key
            return transport
        }
    }

    func shutdown() async {
        let all = state.withLockedValue { state in
            let all = state.retired + (state.transport.map { [$0] } ?? [])
            state.retired = []
            state.transport = nil
            return all
        }
        for transport in all { try? await transport.shutdown() }
    }
}

/// A `tokenFile` read again at most once a minute (client-go's cached token source); the file wins when readable.
final class TokenFileCache: Sendable {
    private let path: String
    private let state = NIOLockedValueBox<(token: String?, read: ContinuousClock.Instant?)>((nil, nil))

    init(path: String) { self.path = path }

    func token() -> String? {
        state.withLockedValue { state in
            let now = ContinuousClock.now
            if let read = state.read, now - read < .seconds(60) { return state.token }
            if let data = FileManager.default.contents(atPath: path) {
                let text = String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
                if !text.isEmpty { state.token = text }
            }
            state.read = now
            return state.token
        }
    }
}
