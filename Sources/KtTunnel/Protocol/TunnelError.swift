import Glibc

/// Why a tunnel operation failed, in words a user can act on.
public enum TunnelError: Error, Hashable, Sendable, CustomStringConvertible {
    /// The SSH connection could not be made or was lost.
    case connectionFailed(String)
    /// The server's host key is not the one pinned for this session.
    case hostKeyMismatch(expected: String, presented: String)
    /// The server refused our key.
    case authenticationFailed
    /// A dial through the tunnel failed; see ``DialFailure``.
    case dial(DialFailure)
    /// The SSH connection under the flow ended.
    case connectionLost
    /// The server does not offer a kt-shadow feature (a stock sshd, for example).
    case unsupported(String)
    /// The server refused a reverse forward.
    case forwardRejected(port: Int)
    /// Writing the session key file failed.
    case keyFile(path: String, errno: Int32)
    /// The peer sent something the protocol does not allow.
    case protocolViolation(String)

    public var description: String {
        switch self {
        case .connectionFailed(let reason): return "the SSH connection to the shadow failed: \(reason)"
        case .hostKeyMismatch(let expected, let presented):
            return "the shadow presented host key \(presented), not the pinned \(expected); refusing to connect "
                + "(someone may be intercepting the port-forward)"
        case .authenticationFailed: return "the shadow refused the session key"
        case .dial(let failure): return failure.description
        case .connectionLost: return "the SSH connection to the shadow was lost"
        case .unsupported(let what): return "the server does not support \(what)"
        case .forwardRejected(let port): return "the shadow refused to listen on port \(port)"
        case .keyFile(let path, let code):
            return "could not write the session key \(path): \(String(cString: strerror(code)))"
        case .protocolViolation(let what): return "protocol violation: \(what)"
        }
    }
}

/// Why the shadow could not dial a destination: what the stack turns into RST or ICMP.
public enum DialFailure: Hashable, Sendable, CustomStringConvertible {
    /// The destination answered with RST.
    case refused
    /// No route, or no answer to ARP/ND ("host unreachable").
    case unreachable
    /// No answer in time.
    case timedOut
    /// The name did not resolve (with the pod's resolv.conf search list).
    case nameNotFound
    /// The shadow is at its limit of dials in progress.
    case busy
    /// Anything else, with the shadow's words.
    case other(String)

    public var description: String {
        switch self {
        case .refused: return "connection refused"
        case .unreachable: return "host unreachable"
        case .timedOut: return "connection timed out"
        case .nameNotFound: return "name not found"
        case .busy: return "the shadow has too many dials in progress"
        case .other(let text): return text
        }
    }

    /// The word on the wire (see ``DialStatus``).
    var code: String {
        switch self {
        case .refused: return "refused"
        case .unreachable: return "unreachable"
        case .timedOut: return "timeout"
        case .nameNotFound: return "nxdomain"
        case .busy: return "busy"
        case .other: return "error"
        }
    }
}
