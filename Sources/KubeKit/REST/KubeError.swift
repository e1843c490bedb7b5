import Foundation

/// The API server refused a request; decoded from the `Status` it sent.
public struct KubeAPIError: Error, Sendable, Hashable, CustomStringConvertible {
    public enum Reason: Sendable, Hashable {
        case notFound, alreadyExists, conflict, forbidden, unauthorized, gone, invalid, badRequest
        case tooManyRequests, unsupportedMediaType, serverError, other
    }

    public var code: Int
    public var reason: Reason
    public var status: Status
    /// The verb and subject of the request, e.g. `list` and `pods in namespace "default"`.
    public var verb: String
    public var subject: String

    public init(code: Int, status: Status, verb: String, subject: String) {
        self.code = code
        self.status = status
        self.verb = verb
        self.subject = subject
        self.reason = Self.classify(code: code, reason: status.reason)
    }

    static func classify(code: Int, reason: String?) -> Reason {
        switch (code, reason) {
        case (_, "NotFound"), (404, _): return .notFound
        case (_, "AlreadyExists"): return .alreadyExists
        case (_, "Conflict"), (409, _): return .conflict
        case (_, "Forbidden"), (403, _): return .forbidden
        case (_, "Unauthorized"), (401, _): return .unauthorized
        case (_, "Expired"), (_, "Gone"), (410, _): return .gone
        case (_, "Invalid"), (422, _): return .invalid
        case (_, "TooManyRequests"), (429, _): return .tooManyRequests
        case (415, _): return .unsupportedMediaType
        case (400, _): return .badRequest
        case (500...599, _): return .serverError
        default: return .other
        }
    }

    /// Decodes the error of a response that was not 2xx.
    public static func from(_ response: APIResponse, request: APIRequest) -> KubeAPIError {
        var status: Status
        if let document = try? JSONValue(json: Data(response.body)), document["kind"]?.stringValue == "Status",
            let decoded = try? Status.decoding(document)
        {
            status = decoded
        } else {
            let text = String(decoding: response.body.prefix(512), as: UTF8.self)
                .trimmingCharacters(in: .whitespacesAndNewlines)
            status = Status(
                status: "Failure", message: text.isEmpty ? "the server answered HTTP \(response.status)" : text,
                code: response.status)
        }
        return KubeAPIError(code: response.status, status: status, verb: request.verb, subject: request.subject)
    }

    public var message: String { status.message ?? "HTTP \(code)" }

    public var description: String {
        switch reason {
        case .forbidden:
            return "not allowed to \(verb) \(subject): \(message). Nothing was changed; ask a cluster admin for "
                + "the \(verb) permission on it (check with `kubectl auth can-i \(verb) ...`)"
        case .unauthorized:
            return "the API server did not accept the credentials (401) when trying to \(verb) \(subject): \(message)."
                + " Refresh the kubeconfig's token or certificate (kubectl would fail the same way)"
        case .notFound:
            return "\(subject) not found (\(verb)): \(message)"
        case .alreadyExists:
            return "\(subject) already exists: \(message)"
        case .conflict:
            return "\(subject) was changed by someone else (409 Conflict on \(verb)): \(message)"
        case .gone:
            return "the resourceVersion asked for is too old (410 Gone on \(verb) \(subject)): \(message)"
        default:
            return "cannot \(verb) \(subject): HTTP \(code) \(status.reason ?? ""): \(message)"
        }
    }
}

/// The request never got an answer: no connection, a TLS failure, or a timeout.
public struct KubeTransportError: Error, Sendable, Hashable, CustomStringConvertible {
    public enum Kind: Sendable, Hashable {
        /// The server's certificate was not accepted (or ours was refused).
        case tls
        case connection
        case timeout
    }

    public var kind: Kind
    public var server: String
    public var detail: String
    /// For TLS failures: the CA the certificate was checked against.
    public var certificateAuthority: String?

    public init(kind: Kind, server: String, detail: String, certificateAuthority: String? = nil) {
        self.kind = kind
        self.server = server
        self.detail = detail
        self.certificateAuthority = certificateAuthority
    }

    public var description: String {
        switch kind {
        case .tls:
            return "TLS with \(server) failed: \(detail). The server's certificate was checked against "
                + "\(certificateAuthority ?? "the system's trusted CAs"); check that the kubeconfig's "
                + "certificate-authority belongs to this cluster. Nothing was sent to the cluster"
        case .connection:
            return "cannot reach the API server \(server): \(detail). Check the kubeconfig's server address and "
                + "the network (kubectl would fail the same way)"
        case .timeout:
            return "the API server \(server) did not answer in time: \(detail)"
        }
    }
}
