import Foundation
import NIOConcurrencyHelpers

/// The access log: one line per request (or HTTP/2 stream) on standard output, buffered and written every 200 ms
/// (or at 64 KiB) instead of one formatted, flushed log record each: at tens of thousands of requests a second the
/// log otherwise costs a third of the router's time. Lines carry the time to the second, as a web server's do.
public final class AccessLog: Sendable {
    private struct State {
        var buffer: [UInt8] = []
        var stamp = ""
    }

    private let state = NIOLockedValueBox(State())
    private let descriptor: Int32
    private let flusher: Task<Void, Never>?

    public init(descriptor: Int32 = 1) {
        self.descriptor = descriptor
        let box = state
        box.withLockedValue { $0.stamp = Self.now() }
        flusher = Task.detached {
            while !Task.isCancelled {
                try? await Task.sleep(for: .milliseconds(200))
                let pending = box.withLockedValue { state -> [UInt8] in
                    state.stamp = Self.now()
                    defer { state.buffer.removeAll(keepingCapacity: true) }
                    return state.buffer
                }
                Self.write(pending, to: descriptor)
            }
        }
    }

    deinit { flusher?.cancel() }

    /// Adds a line (`time info kt-router: <line>`).
    public func add(_ line: String) {
        let full = state.withLockedValue { state -> [UInt8]? in
            state.buffer.append(contentsOf: state.stamp.utf8)
            state.buffer.append(contentsOf: " info kt-router: ".utf8)
            state.buffer.append(contentsOf: line.utf8)
            state.buffer.append(UInt8(ascii: "\n"))
            guard state.buffer.count >= 64 << 10 else { return nil }
            defer { state.buffer.removeAll(keepingCapacity: true) }
            return state.buffer
        }
        if let full { Self.write(full, to: descriptor) }
    }

    /// Writes what is buffered now (on the way out).
    public func flush() {
        let pending = state.withLockedValue { state -> [UInt8] in
            defer { state.buffer.removeAll(keepingCapacity: true) }
            return state.buffer
        }
        Self.write(pending, to: descriptor)
    }

    static func write(_ bytes: [UInt8], to descriptor: Int32) {
        var offset = 0
        while offset < bytes.count {
            let written = bytes[offset...].withUnsafeBytes { Glibc.write(descriptor, $0.baseAddress, $0.count) }
            if written < 0 && errno == EINTR { continue }
            guard written > 0 else { return }
            offset += written
        }
    }

    static func now() -> String {
        var seconds = time(nil)
        var parts = tm()
        gmtime_r(&seconds, &parts)
        return String(
            format: "%04d-%02d-%02dT%02d:%02d:%02dZ", parts.tm_year + 1900, parts.tm_mon + 1, parts.tm_mday,
            parts.tm_hour, parts.tm_min, parts.tm_sec)
    }
}
