import Glibc
import KtWire
import NIOConcurrencyHelpers
import NIOCore

// Servers and byte patterns that the tunnel and engine tests share.

// MARK: - The pattern

/// The byte stream the transfer tests send: byte `i` is `i % 251` (a prime, so chunk boundaries never line up).
public enum Pattern {
    public static let block: [UInt8] = (0..<(251 * 1024)).map { UInt8($0 % 251) }
    /// The longest slice one call can take from `block` at any phase.
    public static let maximumChunk = block.count - 251

    public static func chunk(at offset: Int, length: Int, allocator: ByteBufferAllocator) -> ByteBuffer {
        let phase = offset % 251
        let count = min(length, maximumChunk)
        var buffer = allocator.buffer(capacity: count)
        block.withUnsafeBytes { buffer.writeBytes(UnsafeRawBufferPointer(rebasing: $0[phase..<(phase + count)])) }
        return buffer
    }

    /// Writes `size` bytes of the pattern to `outbound` in chunks of up to 256 KiB.
    public static func send(_ size: Int, to outbound: NIOAsyncChannelOutboundWriter<ByteBuffer>) async throws {
        var sent = 0
        while sent < size {
            let chunk = chunk(at: sent, length: min(256 * 1024, size - sent), allocator: .init())
            sent += chunk.readableBytes
            try await outbound.write(chunk)
        }
    }

    /// Whether `bytes` are the pattern from `offset` on; the index of the first wrong byte if not.
    public static func firstMismatch(_ bytes: ByteBuffer, at offset: Int) -> Int? {
        var checked = 0
        return bytes.withUnsafeReadableBytes { raw -> Int? in
            while checked < raw.count {
                let phase = (offset + checked) % 251
                let count = min(raw.count - checked, maximumChunk)
                let equal = block.withUnsafeBytes { pattern in
                    memcmp(raw.baseAddress! + checked, pattern.baseAddress! + phase, count) == 0
                }
                if !equal {
                    for index in 0..<count where raw[checked + index] != UInt8((offset + checked + index) % 251) {
                        return offset + checked + index
                    }
                }
                checked += count
            }
            return nil
        }
    }
}

// MARK: - Handlers

public final class EchoHandler: ChannelInboundHandler, Sendable {
    public typealias InboundIn = ByteBuffer

    public init() {}

    public func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        context.write(data, promise: nil)
    }

    public func channelReadComplete(context: ChannelHandlerContext) {
        context.flush()
    }

    public func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let event = event as? ChannelEvent, event == .inputClosed {
            context.close(mode: .output, promise: nil)
        }
    }
}

public final class PatternSink: ChannelInboundHandler, @unchecked Sendable {
    public typealias InboundIn = ByteBuffer
    public typealias OutboundOut = ByteBuffer
    private var received = 0
    private var mismatch: Int?

    public init() {}

    public func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let bytes = unwrapInboundIn(data)
        if mismatch == nil { mismatch = Pattern.firstMismatch(bytes, at: received) }
        received += bytes.readableBytes
    }

    public func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let event = event as? ChannelEvent, event == .inputClosed {
            let line = "\(received) \(mismatch ?? -1)\n"
            context.writeAndFlush(wrapOutboundOut(ByteBuffer(string: line))).whenComplete { _ in
                context.close(promise: nil)
            }
        }
    }
}

public final class PatternSource: ChannelInboundHandler, @unchecked Sendable {
    public typealias InboundIn = ByteBuffer
    public typealias OutboundOut = ByteBuffer
    private let size: Int
    private let progress: NIOLockedValueBox<Int>
    private var sent = 0

    public init(size: Int, progress: NIOLockedValueBox<Int>) {
        self.size = size
        self.progress = progress
    }

    public func channelActive(context: ChannelHandlerContext) {
        pump(context: context)
        context.fireChannelActive()
    }

    public func channelWritabilityChanged(context: ChannelHandlerContext) {
        pump(context: context)
    }

    private func pump(context: ChannelHandlerContext) {
        while context.channel.isWritable, sent < size {
            let chunk = Pattern.chunk(
                at: sent, length: min(64 * 1024, size - sent), allocator: context.channel.allocator)
            sent += chunk.readableBytes
            if sent == size {
                // The last write's completion, not `close(mode: .output)` at once: NIO turns an output close on a
                // socket whose input has ended (the tunnel's EOF came first) into a full close that drops
                // unwritten data.
                sent += 1  // once
                context.writeAndFlush(wrapOutboundOut(chunk)).assumeIsolated().whenComplete { _ in
                    context.close(mode: .output, promise: nil)
                }
                break
            }
            context.write(wrapOutboundOut(chunk), promise: nil)
        }
        context.flush()
        let total = min(sent, size)
        progress.withLockedValue { $0 = total }
    }
}

/// Writes "bye\n" and half-closes at once, then counts and checks the pattern it receives until EOF.
public final class SayThenCount: ChannelInboundHandler, @unchecked Sendable {
    public typealias InboundIn = ByteBuffer
    public typealias OutboundOut = ByteBuffer
    private let counted: NIOLockedValueBox<(bytes: Int, mismatch: Int?, ended: Bool)>
    private var received = 0
    private var mismatch: Int?

    public init(counted: NIOLockedValueBox<(bytes: Int, mismatch: Int?, ended: Bool)>) {
        self.counted = counted
    }

    public func channelActive(context: ChannelHandlerContext) {
        context.writeAndFlush(wrapOutboundOut(ByteBuffer(string: "bye\n")), promise: nil)
        context.close(mode: .output, promise: nil)
        context.fireChannelActive()
    }

    public func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let bytes = unwrapInboundIn(data)
        if mismatch == nil { mismatch = Pattern.firstMismatch(bytes, at: received) }
        received += bytes.readableBytes
    }

    public func channelInactive(context: ChannelHandlerContext) {
        let (bytes, mismatch) = (received, mismatch)
        counted.withLockedValue { $0 = (bytes, mismatch, true) }
        context.fireChannelInactive()
    }
}

public final class UDPEcho: ChannelInboundHandler, Sendable {
    public typealias InboundIn = AddressedEnvelope<ByteBuffer>
    public typealias OutboundOut = AddressedEnvelope<ByteBuffer>

    public init() {}

    public func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        context.writeAndFlush(data, promise: nil)
    }
}

public final class TestDNS: ChannelInboundHandler, Sendable {
    public typealias InboundIn = AddressedEnvelope<ByteBuffer>
    public typealias OutboundOut = AddressedEnvelope<ByteBuffer>
    private let records: [DNSName: IPv4Address]
    private let queries: NIOLockedValueBox<[String]>

    public init(records: [DNSName: IPv4Address], queries: NIOLockedValueBox<[String]>) {
        self.records = records
        self.queries = queries
    }

    public func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let envelope = unwrapInboundIn(data)
        guard let query = try? DNSMessage(parsing: envelope.data), let question = query.questions.first else { return }
        queries.withLockedValue { $0.append("\(question.name)") }
        var response: DNSMessage
        if let address = records[question.name] {
            response = query.makeResponse(authoritative: true)
            if question.type == .a {
                response.answers = [DNSRecord(name: question.name, ttl: 5, data: .a(address))]
            }
        } else {
            response = query.makeResponse(responseCode: .nameError, authoritative: true)
        }
        context.writeAndFlush(
            wrapOutboundOut(AddressedEnvelope(remoteAddress: envelope.remoteAddress, data: response.encoded())),
            promise: nil)
    }
}
