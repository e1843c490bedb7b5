import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL

/// Requests over HTTPS (or HTTP) with AsyncHTTPClient: the cluster's CA, a client certificate, `tls-server-name`,
/// `proxy-url` (http or socks5), and HTTP/2 when the server offers it.
public final class HTTPTransport: KubeTransport {
    let client: HTTPClient
    let access: ClusterAccess
    /// The host put in request URLs: `tls-server-name` when set (and mapped to the real host), else the server's.
    let urlHost: String

    /// `clientIdentity` replaces the kubeconfig's client certificate (an exec plugin's answer).
    public init(
        access: ClusterAccess, clientIdentity: (certificate: [UInt8], key: [UInt8])? = nil,
        group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton
    ) throws {
        self.access = access
        var configuration = HTTPClient.Configuration()
        configuration.timeout = .init(connect: .seconds(10), read: nil)
        configuration.redirectConfiguration = .disallow
        configuration.decompression = access.disableCompression ? .disabled : .enabled(limit: .none)
        configuration.connectionPool = .init(idleTimeout: .seconds(90))
        // KubeClient retries with its own backoff and never after a TLS failure; AsyncHTTPClient's own retries would
        // hold a wrong-CA error for the whole connect timeout.
        configuration.connectionPool.retryConnectionEstablishment = false
        if access.server.scheme == "https" {
            configuration.tlsConfiguration = try TLSFactory.configuration(for: access, clientIdentity: clientIdentity)
        }
        let host = access.server.host ?? "localhost"
        if let serverName = access.tls.serverName, serverName != host {
            configuration.dnsOverride = [serverName: host]
            urlHost = serverName
        } else {
            urlHost = host
        }
        configuration.proxy = try Self.proxy(for: access)
        client = HTTPClient(eventLoopGroupProvider: .shared(group), configuration: configuration)
    }

    static func proxy(for access: ClusterAccess) throws -> HTTPClient.Configuration.Proxy? {
        guard let url = access.proxyURL, let host = url.host else { return nil }
        switch url.scheme?.lowercased() {
        case "http": return .server(host: host, port: url.port ?? 80)
        case "socks5": return .socksServer(host: host, port: url.port ?? 1080)
        default:
            throw KubeconfigError(
                path: access.clusterOrigin, field: "clusters[\(access.clusterName)].cluster.proxy-url",
                problem: "is an https:// proxy, which ktctl cannot use yet", hint: "use an http:// or socks5:// proxy")
        }
    }

    func url(for request: APIRequest) -> String {
        var components = URLComponents()
        components.scheme = access.server.scheme
        components.host = urlHost
        components.port = access.server.port
        components.percentEncodedPath = access.apiPrefix + request.path
        if !request.query.isEmpty {
            components.percentEncodedQuery = APIRequest.encodeQuery(request.query.map { ($0.name, $0.value) })
        }
        return components.string ?? access.server.absoluteString
    }

    func clientRequest(_ request: APIRequest) -> HTTPClientRequest {
        var clientRequest = HTTPClientRequest(url: url(for: request))
        clientRequest.method = HTTPMethod(rawValue: request.method.rawValue)
        for header in request.headers { clientRequest.headers.replaceOrAdd(name: header.name, value: header.value) }
        clientRequest.headers.replaceOrAdd(name: "User-Agent", value: "ktctl (linux) kubekit")
        if let body = request.body {
            clientRequest.body = .bytes(ByteBuffer(bytes: body))
        }
        return clientRequest
    }

    public func perform(_ request: APIRequest, timeout: Duration) async throws -> APIResponse {
        do {
            let response = try await client.execute(clientRequest(request), timeout: Self.amount(timeout))
            var body = try await response.body.collect(upTo: 256 << 20)
            let bytes = body.readBytes(length: body.readableBytes) ?? []
            return APIResponse(
                status: Int(response.status.code), headers: response.headers.map { .init($0.name, $0.value) },
                body: bytes)
        } catch {
            throw translate(error)
        }
    }

    public func stream(_ request: APIRequest, timeout: Duration) async throws -> (
        head: APIResponse, body: AsyncThrowingStream<ByteBuffer, any Error>
    ) {
        let response: HTTPClientResponse
        do {
            response = try await client.execute(clientRequest(request), timeout: Self.amount(timeout))
        } catch {
            throw translate(error)
        }
        let headers = response.headers.map { APIRequest.Header($0.name, $0.value) }
        let status = Int(response.status.code)
        guard (200..<300).contains(status) else {
            var body = (try? await response.body.collect(upTo: 1 << 20)) ?? ByteBuffer()
            let bytes = body.readBytes(length: body.readableBytes) ?? []
            let (empty, continuation) = AsyncThrowingStream<ByteBuffer, any Error>.makeStream()
            continuation.finish()
            return (APIResponse(status: status, headers: headers, body: bytes), empty)
        }
        let (stream, continuation) = AsyncThrowingStream<ByteBuffer, any Error>.makeStream()
        let pump = Task {
            do {
                for try await chunk in response.body { continuation.yield(chunk) }
                continuation.finish()
            } catch {
                continuation.finish(throwing: self.translate(error))
            }
        }
        continuation.onTermination = { _ in pump.cancel() }
        return (APIResponse(status: status, headers: headers, body: []), stream)
    }

    public func shutdown() async throws {
        try await client.shutdown()
    }

    static func amount(_ duration: Duration) -> TimeAmount {
        let (seconds, attoseconds) = duration.components
        return .nanoseconds(seconds * 1_000_000_000 + attoseconds / 1_000_000_000)
    }

    /// Turns AsyncHTTPClient and NIO errors into what a user can act on.
    func translate(_ error: any Error) -> any Error {
        if error is KubeTransportError || error is CancellationError { return error }
        let server = access.server.absoluteString
        let text = String(describing: error)
        if error is NIOSSLError || error is BoringSSLError || text.contains("SSL") || text.contains("certificate") {
            var detail = text
            if text.contains("CERTIFICATE_VERIFY_FAILED") || text.contains("certificate verify failed") {
                detail = "the server's certificate is not signed by the trusted CA (certificate verify failed)"
            } else if text.contains("hostname") || text.contains("unableToValidateCertificate") {
                detail = "the server's certificate does not name \(urlHost) (\(text))"
            }
            return KubeTransportError(
                kind: .tls, server: server, detail: detail,
                certificateAuthority: access.tls.certificateAuthoritySource)
        }
        if let client = error as? HTTPClientError {
            if client == .deadlineExceeded || client == .readTimeout {
                return KubeTransportError(kind: .timeout, server: server, detail: text)
            }
        }
        return KubeTransportError(kind: .connection, server: server, detail: text)
    }
}

/// The TLS settings of a cluster as NIOSSL wants them; shared by REST and port-forward.
public enum TLSFactory {
    public static func configuration(
        for access: ClusterAccess, clientIdentity: (certificate: [UInt8], key: [UInt8])? = nil
    ) throws -> TLSConfiguration {
        var tls = TLSConfiguration.makeClientConfiguration()
        tls.minimumTLSVersion = .tlsv12
        // On close, wait only briefly for the server's close_notify (NIOSSL's default is 5 s, which would hold
        // ktctl's exit after a cancelled watch).
        tls.shutdownTimeout = .milliseconds(300)
        if access.tls.insecureSkipVerify {
            tls.certificateVerification = .none
        } else if let ca = access.tls.certificateAuthority {
            let certificates: [NIOSSLCertificate]
            do {
                certificates = try NIOSSLCertificate.fromPEMBytes(ca)
            } catch {
                throw KubeconfigError(
                    path: access.tls.certificateAuthoritySource ?? access.clusterOrigin, field: nil,
                    problem: "is not a PEM certificate bundle (\(error))",
                    hint: "point certificate-authority at the cluster's CA certificate")
            }
            guard !certificates.isEmpty else {
                throw KubeconfigError(
                    path: access.tls.certificateAuthoritySource ?? access.clusterOrigin, field: nil,
                    problem: "holds no PEM certificate", hint: "point certificate-authority at the cluster's CA")
            }
            tls.trustRoots = .certificates(certificates)
        }
        let identity =
            clientIdentity
            ?? access.tls.clientCertificate.flatMap { certificate in
                access.tls.clientKey.map { (certificate: certificate, key: $0) }
            }
        if let identity {
            let source = access.tls.clientCertificateSource ?? "the client certificate"
            do {
                tls.certificateChain = try NIOSSLCertificate.fromPEMBytes(identity.certificate).map { .certificate($0) }
            } catch {
                throw KubeconfigError(
                    path: source, field: nil, problem: "is not a PEM certificate (\(error))")
            }
            do {
                tls.privateKey = .privateKey(try NIOSSLPrivateKey(bytes: identity.key, format: .pem))
            } catch {
                throw KubeconfigError(
                    path: source, field: nil, problem: "has a client key that is not a PEM private key (\(error))")
            }
        }
        return tls
    }
}
