import Foundation
import NIOCore

/// The boundary between the client's logic and the network: one request, one response. `HTTPTransport` is the real
/// one; tests of our own logic use `RecordingTransport`, which answers from a script and records every call.
public protocol KubeTransport: Sendable {
    /// Sends a request and reads the whole answer (any status) within `timeout`.
    func perform(_ request: APIRequest, timeout: Duration) async throws -> APIResponse

    /// Sends a request and returns as soon as the status line is in: a 2xx answer's body arrives as it is
    /// written; any other answer's body is read whole into `head.body`.
    func stream(_ request: APIRequest, timeout: Duration) async throws -> (
        head: APIResponse, body: AsyncThrowingStream<ByteBuffer, any Error>
    )

    /// Ends every connection; requests in progress fail.
    func shutdown() async throws
}

/// An in-memory transport for unit tests of code built on `KubeClient`: answers with `respond` and records every
/// request. It knows nothing of Kubernetes; real behaviour is tested against ktlab.
public final class RecordingTransport: KubeTransport, @unchecked Sendable {
    private let lock = NSLock()
    private var recorded: [APIRequest] = []
    private let respond: @Sendable (APIRequest) throws -> APIResponse

    public init(respond: @escaping @Sendable (APIRequest) throws -> APIResponse) {
        self.respond = respond
    }

    public var requests: [APIRequest] { lock.withLock { recorded } }

    public func perform(_ request: APIRequest, timeout: Duration) async throws -> APIResponse {
        lock.withLock { recorded.append(request) }
        return try respond(request)
    }

    public func stream(_ request: APIRequest, timeout: Duration) async throws -> (
        head: APIResponse, body: AsyncThrowingStream<ByteBuffer, any Error>
    ) {
        let response = try await perform(request, timeout: timeout)
        let (stream, continuation) = AsyncThrowingStream<ByteBuffer, any Error>.makeStream()
        if (200..<300).contains(response.status) {
            continuation.yield(ByteBuffer(bytes: response.body))
            continuation.finish()
            return (APIResponse(status: response.status, headers: response.headers, body: []), stream)
        }
        continuation.finish()
        return (response, stream)
    }

    public func shutdown() async throws {}
}
