import Foundation
import NIOCore
import NIOHTTP1
import NIOHTTP2

/// `Upgrade: h2c` (RFC 7540 §3.2), taken by the router itself so that every stream of the connection is routed on its
/// own: the 101 goes out, the HTTP/1 handlers come off, and HTTP/2 takes the connection. The request that asked for
/// the upgrade is stream 1 of the new connection; HTTP/2 here has no way to be handed a stream it did not read, so the
/// request is handed to it as the HEADERS frame the client would have sent, right after the client's preface and
/// SETTINGS (encoded as literals that touch no HPACK table, so the client's own header compression is unaffected).
enum H2CUpgrade {
    static func accept(
        _ head: HTTPRequestHead, decision: (upstream: Upstream, port: Int, why: String), proxy: ProxyContext,
        handlers: HTTP1ServerHandlers, context: ChannelHandlerContext, from handler: HTTP1Proxy
    ) {
        guard let frame = headersFrame(for: head) else {
            // Too large for one frame: refused the plain way (a 101 is optional for a server).
            var headers = HTTPHeaders()
            headers.add(name: "content-length", value: "0")
            headers.add(name: "connection", value: "close")
            context.write(
                NIOAny(
                    HTTPServerResponsePart.head(
                        HTTPResponseHead(version: .http1_1, status: .requestHeaderFieldsTooLarge, headers: headers))),
                promise: nil)
            context.writeAndFlush(NIOAny(HTTPServerResponsePart.end(nil)), promise: nil)
            context.close(promise: nil)
            return
        }
        var headers = HTTPHeaders()
        headers.add(name: "connection", value: "Upgrade")
        headers.add(name: "upgrade", value: "h2c")
        context.writeAndFlush(
            NIOAny(
                HTTPServerResponsePart.head(
                    HTTPResponseHead(version: .http1_1, status: .switchingProtocols, headers: headers))),
            promise: nil)
        let pipeline = context.pipeline.syncOperations
        let channel = context.channel
        do {
            // The injector holds whatever arrives until HTTP/2 is in place behind it; the HTTP/1 handlers go before
            // HTTP/2 is added (its first write, the server's SETTINGS, must not meet the HTTP/1 encoder).
            let injector = StreamOneInjector(frame: frame)
            try pipeline.addHandler(injector)
            pipeline.removeHandler(context: context, promise: nil)
            handlers.removeAllButDecoder(from: pipeline)
            handlers.removeDecoder(from: pipeline)
            HTTP2Server.configure(channel, proxy: proxy).whenComplete { result in
                switch result {
                case .success: injector.release()
                case .failure: channel.close(promise: nil)
                }
            }
        } catch {
            context.close(promise: nil)
        }
        proxy.log(
            "\(channel.remoteAddress?.ipAddress ?? "?") \"\(head.method) \(head.uri) HTTP/1.1\" upgraded to h2c")
    }

    /// The HEADERS frame (END_HEADERS, END_STREAM) of stream 1 for the upgrading request: pseudo-headers from its
    /// request line and Host, then its other headers, lower case, without those that belong to HTTP/1's connection.
    static func headersFrame(for head: HTTPRequestHead) -> [UInt8]? {
        var fields: [(String, String)] = [
            (":method", head.method.rawValue), (":scheme", "http"),
            (":authority", head.headers.first(name: "host") ?? ""), (":path", head.uri),
        ]
        let connectionNamed = Set(head.headers[canonicalForm: "connection"].map { $0.lowercased() })
        let dropped = Set([
            "host", "connection", "upgrade", "http2-settings", "keep-alive", "proxy-connection", "transfer-encoding",
            "te",
        ]).union(connectionNamed)
        for (name, value) in head.headers where !dropped.contains(name.lowercased()) {
            fields.append((name.lowercased(), value))
        }
        var block: [UInt8] = []
        for (name, value) in fields {
            // Literal header field without indexing, new name (RFC 7541 §6.2.2), strings not Huffman-coded.
            block.append(0x00)
            appendInteger(name.utf8.count, prefixBits: 7, to: &block)
            block.append(contentsOf: name.utf8)
            appendInteger(value.utf8.count, prefixBits: 7, to: &block)
            block.append(contentsOf: value.utf8)
        }
        guard block.count <= 16_384 else { return nil }
        let length = block.count
        return [
            UInt8(length >> 16 & 0xff), UInt8(length >> 8 & 0xff), UInt8(length & 0xff),
            0x01,  // HEADERS
            0x05,  // END_STREAM | END_HEADERS
            0, 0, 0, 1,  // stream 1
        ] + block
    }

    /// RFC 7541 §5.1, with the first byte's flag bits zero.
    static func appendInteger(_ value: Int, prefixBits: Int, to bytes: inout [UInt8]) {
        let limit = (1 << prefixBits) - 1
        guard value >= limit else {
            bytes.append(UInt8(value))
            return
        }
        bytes.append(UInt8(limit))
        var rest = value - limit
        while rest >= 128 {
            bytes.append(UInt8(rest & 0x7f | 0x80))
            rest >>= 7
        }
        bytes.append(UInt8(rest))
    }
}

/// Passes the client's connection preface and its first frame (SETTINGS) on, then the synthetic stream-1 HEADERS,
/// then steps aside.
final class StreamOneInjector: ChannelInboundHandler, RemovableChannelHandler, @unchecked Sendable {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer

    private var frame: [UInt8]
    private var buffered: ByteBuffer?
    private var released = false
    private var context: ChannelHandlerContext?

    init(frame: [UInt8]) {
        self.frame = frame
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
    }

    /// HTTP/2 is in place: what was held goes on.
    func release() {
        released = true
        if let context { process(context: context) }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var incoming = unwrapInboundIn(data)
        if buffered == nil {
            buffered = incoming
        } else {
            buffered!.writeBuffer(&incoming)
        }
        process(context: context)
    }

    private func process(context: ChannelHandlerContext) {
        guard released, var bytes = buffered else { return }
        let prefaceLength = 24
        guard bytes.readableBytes >= prefaceLength + 9,
            let length = bytes.getInteger(at: bytes.readerIndex + prefaceLength, as: UInt32.self).map({ $0 >> 8 })
        else { return }
        let end = prefaceLength + 9 + Int(length)
        guard bytes.readableBytes >= end, let head = bytes.readSlice(length: end) else { return }
        buffered = nil
        context.fireChannelRead(wrapInboundOut(head))
        context.fireChannelRead(wrapInboundOut(ByteBuffer(bytes: frame)))
        if bytes.readableBytes > 0 { context.fireChannelRead(wrapInboundOut(bytes)) }
        context.fireChannelReadComplete()
        context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
    }
}
