import Foundation
import NIOCore

/// One change seen by a watch.
public enum WatchEvent<T: KubeResource>: Sendable {
    case added(T)
    case modified(T)
    case deleted(T)
    /// The server's progress mark: nothing to report up to this resourceVersion.
    case bookmark(resourceVersion: String)

    public var object: T? {
        switch self {
        case .added(let object), .modified(let object), .deleted(let object): return object
        case .bookmark: return nil
        }
    }

    public var resourceVersion: String? {
        switch self {
        case .bookmark(let version): return version
        default: return object?.metadata.resourceVersion
        }
    }

    /// Decodes one event document (`{"type": "...", "object": {...}}`); an `ERROR` event throws its Status.
    public static func decode(_ document: JSONValue, request: APIRequest) throws -> WatchEvent {
        guard let type = document["type"]?.stringValue, let object = document["object"] else {
            throw KubeDecodingError(
                what: "watch event", problem: "has no type or object: \(document.jsonText.prefix(200))")
        }
        switch type {
        case "ADDED": return .added(try T.decoding(object))
        case "MODIFIED": return .modified(try T.decoding(object))
        case "DELETED": return .deleted(try T.decoding(object))
        case "BOOKMARK": return .bookmark(resourceVersion: object["metadata"]?["resourceVersion"]?.stringValue ?? "")
        case "ERROR":
            let status = (try? Status.decoding(object)) ?? Status(status: "Failure", message: object.jsonText)
            throw KubeAPIError(code: status.code ?? 500, status: status, verb: request.verb, subject: request.subject)
        default:
            throw KubeDecodingError(what: "watch event", problem: "has the unknown type \(type)")
        }
    }
}

/// What a lasting watch reports: the full state (at the start and after each re-list), then changes.
public enum WatchUpdate<T: KubeResource>: Sendable {
    /// Every object that exists now; anything the caller knew and is not here is gone.
    case listed([T])
    case event(WatchEvent<T>)
}

/// Splits a byte stream into top-level JSON values, whatever the chunk boundaries (watch bodies are one JSON
/// object per event, usually but not always followed by a newline).
public struct JSONStreamFramer: Sendable {
    /// The largest single event accepted: a watch of big ConfigMaps can carry a few MiB per event.
    public static let maximumValueBytes = 64 << 20

    private var buffer: [UInt8] = []
    private var scanned = 0
    private var depth = 0
    private var inString = false
    private var escaped = false
    private var start: Int?

    public init() {}

    public enum FramingError: Error, Sendable, Hashable {
        case tooLarge
        case unexpectedByte(UInt8)
    }

    /// Adds bytes and returns every value completed by them, in order.
    public mutating func feed(_ bytes: some Sequence<UInt8>) throws -> [[UInt8]] {
        buffer.append(contentsOf: bytes)
        var values: [[UInt8]] = []
        while scanned < buffer.count {
            let byte = buffer[scanned]
            defer { scanned += 1 }
            if inString {
                if escaped {
                    escaped = false
                } else if byte == UInt8(ascii: "\\") {
                    escaped = true
                } else if byte == UInt8(ascii: "\"") {
                    inString = false
                }
                continue
            }
            switch byte {
            case UInt8(ascii: " "), UInt8(ascii: "\n"), UInt8(ascii: "\r"), UInt8(ascii: "\t"):
                continue
            case UInt8(ascii: "{"), UInt8(ascii: "["):
                if depth == 0 { start = scanned }
                depth += 1
            case UInt8(ascii: "}"), UInt8(ascii: "]"):
                guard depth > 0 else { throw FramingError.unexpectedByte(byte) }
                depth -= 1
                if depth == 0, let begin = start {
                    values.append(Array(buffer[begin...scanned]))
                    start = nil
                }
            case UInt8(ascii: "\""):
                guard depth > 0 else { throw FramingError.unexpectedByte(byte) }
                inString = true
            default:
                guard depth > 0 else { throw FramingError.unexpectedByte(byte) }
            }
        }
        // Drop what has been handed out.
        let keepFrom = start ?? buffer.count
        if keepFrom > 0 {
            buffer.removeFirst(keepFrom)
            scanned -= keepFrom
            start = start.map { $0 - keepFrom }
        }
        if buffer.count > Self.maximumValueBytes { throw FramingError.tooLarge }
        return values
    }
}

extension KubeClient {
    /// One watch request: events until the server ends the stream (or `timeoutSeconds` pass). An `ERROR` event
    /// throws (410 Gone as `.gone`).
    public func watch<T: KubeResource>(
        _ type: T.Type, namespace: String? = nil, allNamespaces: Bool = false, options: ListOptions = ListOptions(),
        timeoutSeconds: Int? = nil
    ) async throws -> AsyncThrowingStream<WatchEvent<T>, any Error> {
        let scope = allNamespaces ? nil : resolvedNamespace(type, namespace)
        let request = APIRequest.watch(T.resource, namespace: scope, options: options, timeoutSeconds: timeoutSeconds)
        let limit = Duration.seconds((timeoutSeconds ?? 24 * 3600) + 30)
        let body = try await stream(request, timeout: limit)
        let (events, continuation) = AsyncThrowingStream<WatchEvent<T>, any Error>.makeStream()
        let task = Task {
            var framer = JSONStreamFramer()
            do {
                for try await chunk in body {
                    for value in try framer.feed(chunk.readableBytesView) {
                        let document = try JSONValue(json: Data(value))
                        continuation.yield(try WatchEvent<T>.decode(document, request: request))
                    }
                }
                continuation.finish()
            } catch {
                continuation.finish(throwing: error)
            }
        }
        continuation.onTermination = { _ in task.cancel() }
        return events
    }

    /// A watch that lasts until cancelled: lists, then watches from the list's resourceVersion; when the server
    /// ends the stream it watches again from the last version seen; when that version is too old (410) it lists
    /// again. Connection errors are retried with backoff; other errors end the stream.
    public func watchContinuously<T: KubeResource>(
        _ type: T.Type, namespace: String? = nil, allNamespaces: Bool = false, options: ListOptions = ListOptions(),
        watchTimeout: ClosedRange<Int> = 300...600
    ) -> AsyncThrowingStream<WatchUpdate<T>, any Error> {
        let (updates, continuation) = AsyncThrowingStream<WatchUpdate<T>, any Error>.makeStream()
        let task = Task {
            var version: String? = nil
            var delay = retry.firstDelay
            while !Task.isCancelled {
                do {
                    if version == nil {
                        var listOptions = options
                        listOptions.resourceVersion = nil
                        let list = try await listAll(
                            type, namespace: namespace, allNamespaces: allNamespaces, options: listOptions)
                        continuation.yield(.listed(list.items))
                        version = list.metadata.resourceVersion ?? "0"
                    }
                    var watchOptions = options
                    watchOptions.resourceVersion = version
                    let events = try await watch(
                        type, namespace: namespace, allNamespaces: allNamespaces, options: watchOptions,
                        timeoutSeconds: Int.random(in: watchTimeout))
                    for try await event in events {
                        if let seen = event.resourceVersion, !seen.isEmpty { version = seen }
                        if case .bookmark = event { continue }
                        continuation.yield(.event(event))
                    }
                    delay = retry.firstDelay
                } catch let error as KubeAPIError where error.reason == .gone {
                    logger.debug("watch of \(T.resource): \(error.message); listing again")
                    version = nil
                } catch let error as KubeTransportError where error.kind != .tls {
                    logger.debug("watch of \(T.resource) interrupted: \(error.detail); again in \(delay)")
                    try? await Task.sleep(for: delay)
                    delay = min(delay * 2, retry.maximumDelay)
                } catch is CancellationError {
                    break
                } catch {
                    continuation.finish(throwing: error)
                    return
                }
            }
            continuation.finish()
        }
        continuation.onTermination = { _ in task.cancel() }
        return updates
    }
}
