import KtEngine
import KtWire
import NIOCore
import Testing

/// The proxy's parsers on their own; the proxy end to end (curl through it to a pod) is in ConnectTests.
@Suite struct ProxyProtocolTests {
    @Test func socksGreetingAndRequestArriveInPieces() throws {
        let whole: [UInt8] = [5, 2, 0, 2] + [5, 1, 0, 3, 6] + Array("tomcat".utf8) + [0x1f, 0x90] + [9, 9]
        var buffer = ByteBuffer()
        var greeting: [UInt8]?
        var request: Socks5.Request?
        for byte in whole {
            buffer.writeInteger(byte)
            if greeting == nil {
                let before = buffer
                greeting = try Socks5.parseGreeting(&buffer)
                if greeting == nil { #expect(buffer == before) }
            } else if request == nil {
                let before = buffer
                request = try Socks5.parseRequest(&buffer)
                if request == nil { #expect(buffer == before) }
            }
        }
        #expect(greeting == [0, 2])
        #expect(request == Socks5.Request(command: 1, destination: ProxyDestination(host: .name("tomcat"), port: 8080)))
        // What follows the request stays for the flow.
        #expect(buffer.readableBytesView.elementsEqual([9, 9]))
    }

    @Test func socksAddressesOfEachKind() throws {
        var v4 = ByteBuffer(bytes: [5, 1, 0, 1, 10, 96, 0, 10, 0, 80])
        #expect(try Socks5.parseRequest(&v4)?.destination.description == "10.96.0.10:80")
        var v6 = ByteBuffer(bytes: [5, 1, 0, 4] + [UInt8](repeating: 0, count: 15) + [1, 0x1f, 0x90])
        #expect(try Socks5.parseRequest(&v6)?.destination.description == "[::1]:8080")
        // A name that is an address literal is the address.
        var literal = ByteBuffer(bytes: [5, 1, 0, 3, 8] + Array("10.0.0.1".utf8) + [0, 80])
        #expect(try Socks5.parseRequest(&literal)?.destination.host == .address(IPAddress("10.0.0.1")!))
    }

    @Test func badSocksInputIsNamed() {
        var version4 = ByteBuffer(bytes: [4, 1])
        #expect(throws: ProxyError("SOCKS version 4 (only 5 is spoken)")) { try Socks5.parseGreeting(&version4) }
        var noMethods = ByteBuffer(bytes: [5, 0])
        #expect(throws: ProxyError.self) { try Socks5.parseGreeting(&noMethods) }
        var badType = ByteBuffer(bytes: [5, 1, 0, 7, 1, 2])
        #expect(throws: ProxyError("SOCKS address type 7 (1, 3 and 4 are known)")) {
            try Socks5.parseRequest(&badType)
        }
        var spaceInName = ByteBuffer(bytes: [5, 1, 0, 3, 3] + Array("a b".utf8) + [0, 80])
        #expect(throws: ProxyError.self) { try Socks5.parseRequest(&spaceInName) }
    }

    @Test func replyAndDatagramHeadersRoundTrip() throws {
        let allocator = ByteBufferAllocator()
        let bound = ProxyDestination(host: .address(IPAddress("127.0.0.1")!), port: 40000)
        let reply = Socks5.reply(.succeeded, bound: bound, allocator: allocator)
        #expect(reply.readableBytesView.elementsEqual([5, 0, 0, 1, 127, 0, 0, 1, 0x9c, 0x40]))
        for source in [bound, ProxyDestination(host: .address(IPAddress("fd00::5")!), port: 53)] {
            var datagram = Socks5.datagramHeader(from: source, allocator: allocator)
            datagram.writeString("payload")
            #expect(try Socks5.parseDatagram(&datagram) == source)
            #expect(datagram.readString(length: datagram.readableBytes) == "payload")
        }
        var fragment = ByteBuffer(bytes: [0, 0, 1, 1, 10, 0, 0, 1, 0, 53])
        #expect(throws: ProxyError("a fragmented SOCKS UDP datagram (fragment 1)")) {
            try Socks5.parseDatagram(&fragment)
        }
    }

    @Test func httpConnect() throws {
        var buffer = ByteBuffer(string: "CONNECT tomcat.default:8080 HTTP/1.1\r\nHost: tomcat.default:8080\r\n")
        #expect(try HTTPProxyRequest.parse(&buffer) == nil)
        buffer.writeString("\r\nearly bytes")
        let request = try #require(try HTTPProxyRequest.parse(&buffer))
        #expect(request.method == "CONNECT")
        #expect(request.destination == ProxyDestination(host: .name("tomcat.default"), port: 8080))
        #expect(request.forwardedHead == nil)
        #expect(buffer.readString(length: buffer.readableBytes) == "early bytes")
        var v6 = ByteBuffer(string: "CONNECT [fd00::1]:443 HTTP/1.1\r\n\r\n")
        #expect(try HTTPProxyRequest.parse(&v6)?.destination.description == "[fd00::1]:443")
        var noPort = ByteBuffer(string: "CONNECT tomcat HTTP/1.1\r\n\r\n")
        #expect(throws: ProxyError("'tomcat' has no port")) { try HTTPProxyRequest.parse(&noPort) }
    }

    @Test func plainHTTPIsRewrittenForTheOrigin() throws {
        var buffer = ByteBuffer(
            string: "GET http://tomcat:8080/a/b?c=d HTTP/1.1\r\nHost: tomcat:8080\r\nProxy-Connection: Keep-Alive\r\n"
                + "Accept: */*\r\n\r\n")
        let request = try #require(try HTTPProxyRequest.parse(&buffer))
        #expect(request.destination == ProxyDestination(host: .name("tomcat"), port: 8080))
        #expect(
            request.forwardedHead
                == "GET /a/b?c=d HTTP/1.1\r\nHost: tomcat:8080\r\nAccept: */*\r\nConnection: close\r\n\r\n")
        var bare = ByteBuffer(string: "HEAD http://10.96.0.10 HTTP/1.0\r\n\r\n")
        let head = try #require(try HTTPProxyRequest.parse(&bare))
        #expect(head.destination.description == "10.96.0.10:80")
        #expect(head.forwardedHead == "HEAD / HTTP/1.0\r\nHost: 10.96.0.10\r\nConnection: close\r\n\r\n")
    }

    @Test func badHTTPInputIsNamed() {
        var origin = ByteBuffer(string: "GET / HTTP/1.1\r\n\r\n")
        #expect(throws: ProxyError("'/' is not an absolute http:// URL (this is a proxy)")) {
            try HTTPProxyRequest.parse(&origin)
        }
        var https = ByteBuffer(string: "GET https://x/ HTTP/1.1\r\n\r\n")
        #expect(throws: ProxyError.self) { try HTTPProxyRequest.parse(&https) }
        var garbage = ByteBuffer(string: "\u{1}\u{2}\r\n\r\n")
        #expect(throws: ProxyError.self) { try HTTPProxyRequest.parse(&garbage) }
        var endless = ByteBuffer(string: "GET http://x/ HTTP/1.1\r\n" + String(repeating: "X: y\r\n", count: 20000))
        #expect(throws: ProxyError("the request head is longer than 64 KiB")) { try HTTPProxyRequest.parse(&endless) }
        var badPort = ByteBuffer(string: "CONNECT x:99999 HTTP/1.1\r\n\r\n")
        #expect(throws: ProxyError("'99999' is not a port (1-65535)")) { try HTTPProxyRequest.parse(&badPort) }
    }
}
