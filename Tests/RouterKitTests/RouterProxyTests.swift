import Foundation
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import Testing

@testable import RouterKit

/// kt-router's HTTP/1.1 proxy on loopback, in this process, against a NIO upstream and Python's sockets as the
/// client: pipelined requests answered in order, an unreachable route answered 502 naming its upstream, and a route
/// chosen per request on one keep-alive connection. (WebSocket, gRPC, HTTP/2 and h2c against real peers: MeshTests.)
@Suite(.serialized) struct RouterProxyTests {
    /// Answers `<name>:<path>` to every request.
    final class Echo: ChannelInboundHandler, @unchecked Sendable {
        typealias InboundIn = HTTPServerRequestPart
        typealias OutboundOut = HTTPServerResponsePart
        let name: String
        /// Answers one request per connection and closes it when a second comes, keep-alive notwithstanding: as an
        /// upstream whose keep-alive timeout ends just as a request goes out.
        let oneRequestPerConnection: Bool
        private var answered = 0
        init(name: String, oneRequestPerConnection: Bool = false) {
            self.name = name
            self.oneRequestPerConnection = oneRequestPerConnection
        }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            guard case .head(let head) = unwrapInboundIn(data) else { return }
            if oneRequestPerConnection, answered > 0 {
                context.close(promise: nil)
                return
            }
            answered += 1
            let body = "\(name):\(head.uri)\n"
            var headers = HTTPHeaders()
            headers.add(name: "content-length", value: String(body.utf8.count))
            context.write(
                wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: .ok, headers: headers))),
                promise: nil)
            context.write(wrapOutboundOut(.body(.byteBuffer(ByteBuffer(string: body)))), promise: nil)
            context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
        }
    }

    static func upstream(
        _ name: String, host: String, port: Int, group: EventLoopGroup, oneRequestPerConnection: Bool = false
    ) async throws -> any Channel {
        try await ServerBootstrap(group: group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline()
                    try channel.pipeline.syncOperations.addHandler(
                        Echo(name: name, oneRequestPerConnection: oneRequestPerConnection))
                }
            }
            .bind(host: host, port: port).get()
    }

    /// Runs `script` (Python, reading the router's port from argv[1]) and returns what it printed.
    static func python(_ script: String, port: Int) throws -> String {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["python3", "-c", script, String(port)]
        let output = Pipe()
        process.standardOutput = output
        try process.run()
        let data = output.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return String(decoding: data, as: UTF8.self)
    }

    @Test func pipelinedRequestsAreAnsweredInOrderAndRoutedEachOnItsOwn() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let port = Int.random(in: 20000..<30000)
        let original = try await Self.upstream("original", host: "127.0.0.1", port: 0, group: group)
        let shadow = try await Self.upstream("shadow", host: "127.0.0.3", port: port, group: group)
        let routes = RouteStore()
        routes.replace(
            RouteTable([
                Route(
                    header: "VERSION", value: "v2", upstream: Upstream(name: "shadow", host: "127.0.0.3"), owner: "t"),
                Route(header: "x-dead", value: "1", upstream: Upstream(name: "dead", host: "127.0.0.4"), owner: "t"),
            ]))
        let server = RouterServer(
            configuration: RouterConfiguration(
                ports: [.init(listen: port, defaultPort: original.localAddress?.port ?? 0)],
                defaultUpstream: Upstream(name: "original", host: "127.0.0.1"), healthPort: 0, accessLog: false,
                host: "127.0.0.2"),
            routes: routes, group: group, logger: Logger(label: "test"))
        let listeners = try await server.startProxies()
        func stop() async {
            for channel in listeners + [original, shadow] { try? await channel.close() }
            try? await group.shutdownGracefully()
        }

        // Three requests in one write on one connection: the middle one carries the header.
        let pipelined = try? Self.python(
            """
            import re, socket, sys
            s = socket.create_connection(("127.0.0.2", int(sys.argv[1])), timeout=5)
            s.sendall(b"GET /a HTTP/1.1\\r\\nHost: x\\r\\n\\r\\nGET /b HTTP/1.1\\r\\nHost: x\\r\\nVersion: v2\\r\\n\\r\\n"
                      b"GET /c HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n")
            data = b""
            while b"original:/c" not in data:
                chunk = s.recv(65536)
                if not chunk: break
                data += chunk
            print(" ".join(m.decode() for m in re.findall(rb"(?:original|shadow):/[a-z]", data)))
            """, port: port)
        #expect(pipelined == "original:/a shadow:/b original:/c\n", "\(pipelined ?? "python failed")")

        // An upstream that cannot be reached: 502, naming it.
        let dead =
            (try? Self.python(
                """
                import socket, sys
                s = socket.create_connection(("127.0.0.2", int(sys.argv[1])), timeout=5)
                s.sendall(b"GET / HTTP/1.1\\r\\nHost: x\\r\\nX-Dead: 1\\r\\n\\r\\n")
                data = b""
                while True:
                    chunk = s.recv(65536)
                    if not chunk: break
                    data += chunk
                print(data.decode())
                """, port: port)) ?? "python failed"
        await stop()
        #expect(dead.hasPrefix("HTTP/1.1 502 Bad Gateway\r\n"), "\(dead)")
        #expect(
            dead.contains("kt-router: upstream dead (127.0.0.4:\(port)) is not answering: Connection refused"),
            "\(dead)")
    }

    /// The upstream closes a kept connection as the next request reaches it (its keep-alive timeout ending): that
    /// request is sent again on a new connection instead of failing with a 502.
    @Test func aRequestOnAConnectionTheUpstreamClosedIsSentAgain() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let port = Int.random(in: 30000..<40000)
        let original = try await Self.upstream(
            "original", host: "127.0.0.1", port: 0, group: group, oneRequestPerConnection: true)
        let routes = RouteStore()
        routes.replace(RouteTable())
        let server = RouterServer(
            configuration: RouterConfiguration(
                ports: [.init(listen: port, defaultPort: original.localAddress?.port ?? 0)],
                defaultUpstream: Upstream(name: "original", host: "127.0.0.1"), healthPort: 0, accessLog: false,
                host: "127.0.0.2"),
            routes: routes, group: group, logger: Logger(label: "test"))
        let listeners = try await server.startProxies()
        // Three requests on one client connection: each time the router's kept upstream connection is closed when
        // the next request reaches the upstream on it.
        let answers = try? Self.python(
            """
            import re, socket, sys
            s = socket.create_connection(("127.0.0.2", int(sys.argv[1])), timeout=5)
            out = []
            for path in ("a", "b", "c"):
                s.sendall(b"GET /" + path.encode() + b" HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n")
                data = b""
                while not re.search(rb"original:/[a-z]\\n|502", data):
                    chunk = s.recv(65536)
                    if not chunk: break
                    data += chunk
                out.append(b"502" if b"502" in data else re.search(rb"original:/[a-z]", data).group(0))
            print(" ".join(o.decode() for o in out))
            """, port: port)
        #expect(answers == "original:/a original:/b original:/c\n", "\(answers ?? "python failed")")
        for channel in listeners + [original] { try? await channel.close() }
        try? await group.shutdownGracefully()
    }
}
