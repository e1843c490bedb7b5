import KtEngine
import KtWire
import NIOCore

/// The proxy's parsers, fed as a client would: the bytes arrive in pieces of 5, and each parser is asked again
/// after every piece. The first byte picks one: 0 a SOCKS5 greeting then request, 1 an HTTP proxy request head,
/// 2 a SOCKS UDP datagram, 3 RFC 1929 username/password, 4 the access rule's inputs (a `Proxy-Authorization`
/// value, and a `/proc/net/tcp` table searched for a socket's owner). No input may crash; a parser that says "more" must leave the buffer as it was, and a
/// forwarded HTTP head must parse as a request of the same method.
func fuzzProxy(_ data: UnsafePointer<UInt8>?, _ count: Int) -> CInt {
    guard let data, count > 0 else { return 0 }
    let selector = data[0] % 5
    let body = Array(UnsafeBufferPointer(start: data + 1, count: count - 1))
    switch selector {
    case 0:
        var buffer = ByteBuffer()
        var greeted = false
        for piece in stride(from: 0, to: body.count, by: 5) {
            buffer.writeBytes(body[piece..<min(piece + 5, body.count)])
            let before = buffer
            do {
                if !greeted {
                    guard try Socks5.parseGreeting(&buffer) != nil else {
                        precondition(buffer == before, "a greeting that needs more bytes consumed some")
                        continue
                    }
                    greeted = true
                }
                let again = buffer
                if let request = try Socks5.parseRequest(&buffer) {
                    _ = request.destination.description
                    return 0
                }
                precondition(buffer == again, "a request that needs more bytes consumed some")
            } catch {
                return 0
            }
        }
    case 1:
        var buffer = ByteBuffer()
        for piece in stride(from: 0, to: body.count, by: 5) {
            buffer.writeBytes(body[piece..<min(piece + 5, body.count)])
            let before = buffer
            let parsed: HTTPProxyRequest?
            do {
                parsed = try HTTPProxyRequest.parse(&buffer)
            } catch {
                return 0
            }
            guard let request = parsed else {
                precondition(buffer == before, "an HTTP head that needs more bytes consumed some")
                continue
            }
            if let head = request.forwardedHead {
                var forwarded = ByteBuffer(string: head.replacingOccurrences(of: "GET /", with: "GET http://x/"))
                _ = try? HTTPProxyRequest.parse(&forwarded)
            }
            return 0
        }
    case 3:
        var buffer = ByteBuffer()
        for piece in stride(from: 0, to: body.count, by: 5) {
            buffer.writeBytes(body[piece..<min(piece + 5, body.count)])
            let before = buffer
            guard let parsed = try? Socks5.parseUsernamePassword(&buffer) else { return 0 }
            guard parsed != nil else {
                precondition(buffer == before, "a username/password that needs more bytes consumed some")
                continue
            }
            return 0
        }
    case 4:
        let text = String(decoding: body, as: UTF8.self)
        _ = HTTPProxyRequest.basicCredentials(text)
        let endpoint = SocketOwner.Endpoint(address: .v4(IPv4Address(127, 0, 0, 1)), port: 2223)
        _ = SocketOwner.owner(in: text, local: endpoint, remote: endpoint)
        _ = SocketOwner.owner(in: text, local: endpoint, remote: nil)
        for word in text.split(separator: " ") { _ = SocketOwner.parseEndpoint(word) }
    default:
        var buffer = ByteBuffer(bytes: body)
        if let destination = try? Socks5.parseDatagram(&buffer) {
            let header = Socks5.datagramHeader(from: destination, allocator: ByteBufferAllocator())
            var again = header
            precondition(
                (try? Socks5.parseDatagram(&again)) == destination, "a datagram header does not parse back")
        }
    }
    return 0
}
