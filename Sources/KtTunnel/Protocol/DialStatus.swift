import NIOCore

/// kt-shadow's dial protocol on a `session` channel.
///
/// A stock `direct-tcpip` open can only fail with one generic reason (swift-nio-ssh always sends
/// SSH_OPEN_CONNECT_FAILED with no text), but the stack must tell refused from unreachable from timed out. So a
/// kt-shadow client opens a session channel and sends `exec` with the command `kt-dial <host> <port>`; the shadow
/// dials and writes one status line first, then the channel carries the raw byte stream:
///
///     ok\n
///     err <refused|unreachable|timeout|nxdomain|busy|error> <free text>\n
///
/// Stock OpenSSH clients keep using `direct-tcpip`, which the shadow also serves.
public enum DialStatus: Hashable, Sendable {
    case connected
    case failed(DialFailure)

    /// The command that asks for a dial.
    public static func command(host: String, port: Int) -> String { "kt-dial \(host) \(port)" }

    /// Parses `kt-dial <host> <port>`; nil if the command is something else or malformed.
    public static func parseCommand(_ command: String) -> (host: String, port: Int)? {
        let parts = command.split(separator: " ", omittingEmptySubsequences: true)
        guard parts.count == 3, parts[0] == "kt-dial", let port = Int(parts[2]), (1...65535).contains(port),
            !parts[1].isEmpty, parts[1].count <= 253
        else { return nil }
        return (String(parts[1]), port)
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
