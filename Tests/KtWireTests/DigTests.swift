import Foundation
import Glibc
import NIOCore
import NamespaceTestSupport
import Synchronization
import Testing

@testable import KtWire

/// `dig` against a tiny authoritative responder built on KtWire, inside a throwaway network namespace.
@Suite(
    .serialized,
    .enabled(
        if: TestNamespace.unavailableReason == nil && TestNamespace.findExecutable("dig") != nil,
        "needs root, iproute2 and dig (bind9-dnsutils)"))
struct DigTests {
    @Test func digGetsWellFormedAnswers() throws {
        let namespace = try TestNamespace(prefix: "ktwire-dig")
        defer { namespace.delete() }
        let responder = try namespace.inside { try TinyResponder() }
        defer { responder.stop() }

        // A record, with dig's default EDNS and cookie.
        let a = try namespace.run(responder.dig("tomcat.default.svc.cluster.local", "A"))
        #expect(a.status == 0, "\(a.error)")
        #expect(a.output.contains("status: NOERROR"))
        #expect(a.output.contains("flags: qr aa rd ra;"))
        #expect(squeezed(a.output).contains("tomcat.default.svc.cluster.local. 5 IN A 10.96.0.15"))
        #expect(a.output.contains("; EDNS: version: 0"))
        // KtWire parsed the query dig really sent.
        let query = try #require(responder.queries.last)
        #expect(query.questions == [DNSQuestion(name: "tomcat.default.svc.cluster.local", type: .a)])
        #expect(query.edns?.options.contains { $0.code == EDNSOption.cookieCode } == true)
        #expect(query.header.recursionDesired && !query.header.isResponse)

        let aaaa = try namespace.run(responder.dig("tomcat.default.svc.cluster.local", "AAAA"))
        #expect(squeezed(aaaa.output).contains("tomcat.default.svc.cluster.local. 5 IN AAAA fd00:96::15"))
        let srv = try namespace.run(responder.dig("_http._tcp.tomcat.default.svc.cluster.local", "SRV"))
        #expect(squeezed(srv.output).contains("IN SRV 0 100 8080 tomcat.default.svc.cluster.local."))
        let ptr = try namespace.run(responder.dig("-x", "10.96.0.15"))
        #expect(squeezed(ptr.output).contains("15.0.96.10.in-addr.arpa. 5 IN PTR tomcat.default.svc.cluster.local."))

        let missing = try namespace.run(responder.dig("nope.default.svc.cluster.local", "A"))
        #expect(missing.output.contains("status: NXDOMAIN"))
        #expect(
            squeezed(missing.output).contains(
                "cluster.local. 5 IN SOA ns.dns.cluster.local. hostmaster.cluster.local. 1 7200"))

        // Without EDNS, 40 TXT records do not fit in 512 bytes: dig sees TC and whole records only.
        let big = try namespace.run(responder.dig("+noedns", "+ignore", "big.default.svc.cluster.local", "TXT"))
        #expect(big.output.contains("flags: qr aa tc rd ra;"))
        #expect(!big.output.contains("Warning: Message parser reports malformed message packet"))
        #expect(responder.failures == 0)
    }
}

/// dig's output with every run of spaces and tabs made one space.
private func squeezed(_ text: String) -> String {
    text.split(separator: "\n").map { $0.split(whereSeparator: { $0 == " " || $0 == "\t" }).joined(separator: " ") }
        .joined(separator: "\n")
}

/// An authoritative responder for a few cluster names, on 127.0.0.1 of the namespace it was made in.
final class TinyResponder: Sendable {
    let port: UInt16
    private let socket: CInt
    private let state = Mutex<(queries: [DNSMessage], failures: Int, stopping: Bool)>(([], 0, false))
    private let finished = DispatchSemaphore(value: 0)

    init() throws {
        let socket = Glibc.socket(AF_INET, Int32(SOCK_DGRAM.rawValue), 0)
        guard socket >= 0 else { throw TestNamespaceError("socket: errno \(errno)") }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = IPv4Address.loopback.bits.bigEndian
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(socket, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        guard bound == 0 else { throw TestNamespaceError("bind: errno \(errno)") }
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(socket, $0, &length) }
        }
        var timeout = timeval(tv_sec: 0, tv_usec: 100_000)
        setsockopt(socket, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        self.port = UInt16(bigEndian: address.sin_port)
        self.socket = socket
        Thread { [self] in serve() }.start()
    }

    var queries: [DNSMessage] { state.withLock { $0.queries } }
    var failures: Int { state.withLock { $0.failures } }

    func dig(_ arguments: String...) -> [String] {
        ["dig", "@127.0.0.1", "-p", String(port), "+tries=1", "+time=3"] + arguments
    }

    func stop() {
        state.withLock { $0.stopping = true }
        finished.wait()
        close(socket)
    }

    private func serve() {
        var bytes = [UInt8](repeating: 0, count: 65536)
        while !state.withLock({ $0.stopping }) {
            var peer = sockaddr_in()
            var peerLength = socklen_t(MemoryLayout<sockaddr_in>.size)
            let count = withUnsafeMutablePointer(to: &peer) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    recvfrom(socket, &bytes, bytes.count, 0, $0, &peerLength)
                }
            }
            guard count > 0 else { continue }
            guard let query = try? DNSMessage(parsing: ByteBuffer(bytes: bytes[..<count])) else {
                state.withLock { $0.failures += 1 }
                continue
            }
            state.withLock { $0.queries.append(query) }
            let limit = Int(query.edns?.udpPayloadSize ?? 512)
            let reply = Array(buffer: Self.answer(query).encoded(limit: max(limit, 512)))
            _ = withUnsafePointer(to: &peer) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    sendto(socket, reply, reply.count, 0, $0, peerLength)
                }
            }
        }
        finished.signal()
    }

    /// The zone: one service, its SRV and PTR, and 40 TXT records that cannot fit in 512 bytes.
    static func answer(_ query: DNSMessage) -> DNSMessage {
        guard let question = query.questions.first else { return query.makeResponse(responseCode: .formatError) }
        let service: DNSName = "tomcat.default.svc.cluster.local"
        var response = query.makeResponse(authoritative: true)
        let name = question.name
        switch (name, question.type) {
        case (service, .a):
            response.answers = [DNSRecord(name: name, ttl: 5, data: .a(IPv4Address(10, 96, 0, 15)))]
        case (service, .aaaa):
            response.answers = [DNSRecord(name: name, ttl: 5, data: .aaaa(IPv6Address(bits: 0xFD00_0096 << 96 | 0x15)))]
        case ("_http._tcp.tomcat.default.svc.cluster.local", .srv):
            response.answers = [
                DNSRecord(
                    name: name, ttl: 5,
                    data: .srv(DNSServiceData(priority: 0, weight: 100, port: 8080, target: service)))
            ]
        case ("15.0.96.10.in-addr.arpa", .ptr):
            response.answers = [DNSRecord(name: name, ttl: 5, data: .ptr(service))]
        case ("big.default.svc.cluster.local", .txt):
            response.answers = (0..<40).map {
                DNSRecord(name: name, ttl: 5, data: .txt([Array("record \($0) of a set too large for 512 bytes".utf8)]))
            }
        default:
            response.responseCode = .nameError
            response.authorities = [
                DNSRecord(
                    name: "cluster.local", ttl: 5,
                    data: .soa(
                        DNSStartOfAuthority(
                            primaryServer: "ns.dns.cluster.local", responsibleMailbox: "hostmaster.cluster.local",
                            serial: 1, refresh: 7200, retry: 1800, expire: 86400, minimum: 5)))
            ]
        }
        return response
    }
}
