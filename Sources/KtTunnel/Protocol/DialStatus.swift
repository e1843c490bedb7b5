import NIOCore

/// Why a dial through kt-shadow failed.
///
/// Flows open as standard `direct-tcpip` channels: the shadow dials before it confirms, so a flow costs one round
/// trip, as with OpenSSH. A refused open carries no reason (swift-nio-ssh always sends SSH_OPEN_CONNECT_FAILED with
/// no text), but the stack must tell refused from unreachable from timed out. So after a refusal the client asks on
/// the control channel, and the shadow answers from its record of recent failures on that connection:
///
///     why <host> <port>\n
///     why <host> <port> err <refused|unreachable|timeout|nxdomain|busy|error> <free text>\n
///
/// Only failures pay the second round trip.
public enum DialStatus: Hashable, Sendable {
    case connected
    case failed(DialFailure)

    /// The control-channel question about a failed dial to `host:port`.
    public static func whyRequest(host: String, port: Int) -> String { "why \(host) \(port)\n" }

    /// Parses a `why <host> <port>` line (newline removed); nil if it is something else or malformed.
    public static func parseWhyRequest(_ line: Substring) -> (host: String, port: Int)? {
        let parts = line.split(separator: " ", omittingEmptySubsequences: true)
        guard parts.count == 3, parts[0] == "why", let port = Int(parts[2]), (1...65535).contains(port),
            !parts[1].isEmpty, parts[1].count <= 253
        else { return nil }
        return (String(parts[1]), port)
    }

    /// The shadow's answer line, newline included.
    public static func whyAnswer(host: String, port: Int, status: DialStatus) -> String {
        "why \(host) \(port) " + status.line
    }

    /// Parses an answer line (newline removed): the dial it is about and its status; nil if malformed.
    public static func parseWhyAnswer(_ line: Substring) -> (host: String, port: Int, status: DialStatus)? {
        let parts = line.split(separator: " ", maxSplits: 3, omittingEmptySubsequences: false)
        guard parts.count == 4, parts[0] == "why", let port = Int(parts[2]) else { return nil }
        var rest = ByteBuffer(string: parts[3] + "\n")
        guard let status = try? read(from: &rest) else { return nil }
        return (String(parts[1]), port, status)
    }

    /// The longest status line we accept: a word and a short explanation.
    public static let maximumLineLength = 512

    /// The line for this status, newline included.
    public var line: String {
        switch self {
        case .connected: return "ok\n"
        case .failed(let failure):
            let text = failure.description.replacingOccurrences(of: "\n", with: " ")
            return "err \(failure.code) \(text.prefix(400))\n"
        }
    }

    /// Reads a status line from the front of `buffer`: nil if the line is not complete yet, the status and the
    /// bytes after it when it is; throws if it is malformed or too long.
    public static func read(from buffer: inout ByteBuffer) throws(TunnelError) -> DialStatus? {
        let view = buffer.readableBytesView
        guard let newline = view.firstIndex(of: UInt8(ascii: "\n")) else {
            if buffer.readableBytes > maximumLineLength { throw .protocolViolation("dial status line too long") }
            return nil
        }
        let length = newline - view.startIndex
        guard length <= maximumLineLength, let line = buffer.readString(length: length) else {
            throw .protocolViolation("dial status line too long")
        }
        buffer.moveReaderIndex(forwardBy: 1)
        if line == "ok" { return .connected }
        let parts = line.split(separator: " ", maxSplits: 2, omittingEmptySubsequences: false)
        guard parts.count >= 2, parts[0] == "err" else {
            throw .protocolViolation("bad dial status '\(line.prefix(40))'")
        }
        let text = parts.count == 3 ? String(parts[2]) : ""
        switch parts[1] {
        case "refused": return .failed(.refused)
        case "unreachable": return .failed(.unreachable)
        case "timeout": return .failed(.timedOut)
        case "nxdomain": return .failed(.nameNotFound)
        case "busy": return .failed(.busy)
        default: return .failed(.other(text))
        }
    }
}
