import KtTunnel
import KtWire
import NIOCore
import ShadowKit

/// The tunnel's own formats. The first byte picks the parser, the rest is its input:
/// 0 a datagram-channel byte stream (every decoded frame encodes back to the same bytes), 1 a dial status line,
/// 2 a control-channel `why` line (question or answer), 3 a resolv.conf (and the search candidates it gives), 4 a hosts file, 5 an
/// authorized-keys list, 6 an exec command as kt-shadow reads it (`kt-udp-listen <port>`). No input may crash; errors are fine.
func fuzzTunnel(_ data: UnsafePointer<UInt8>?, _ count: Int) -> CInt {
    guard let data, count > 0 else { return 0 }
    let selector = data[0] % 7
    let body = UnsafeRawBufferPointer(start: data + 1, count: count - 1)
    switch selector {
    case 0:
        var stream = ByteBuffer(bytes: body)
        while true {
            let before = stream
            guard let frame = try? DatagramFrame.decode(from: &stream) else { break }
            var encoded = ByteBuffer()
            precondition(frame.encode(into: &encoded), "a decoded frame does not encode")
            let consumed = before.getSlice(at: before.readerIndex, length: before.readableBytes - stream.readableBytes)
            precondition(encoded == consumed, "datagram frame round trip changed the bytes")
        }
    case 1:
        var buffer = ByteBuffer(bytes: body)
        if let status = try? DialStatus.read(from: &buffer) {
            var again = ByteBuffer(string: status.line)
            if case .failed(.other) = status {
                _ = try? DialStatus.read(from: &again)
            } else {
                precondition((try? DialStatus.read(from: &again)) == status, "dial status line round trip")
            }
        }
    case 2:
        let line = String(decoding: body, as: UTF8.self)[...]
        if let (host, port) = DialStatus.parseWhyRequest(line) {
            precondition(
                DialStatus.parseWhyRequest(DialStatus.whyRequest(host: host, port: port).dropLast())! == (host, port))
        }
        _ = DialStatus.parseWhyAnswer(line)
    case 3:
        let conf = ResolvConf(parsing: String(decoding: body, as: UTF8.self))
        precondition(conf.nameservers.count <= ResolvConf.maximumNameservers)
        precondition(conf.search.count <= ResolvConf.maximumSearchDomains)
        if let name = try? DNSName(parsing: "tomcat") { _ = conf.candidates(for: name) }
    case 4:
        let hosts = HostsFile(parsing: String(decoding: body, as: UTF8.self))
        _ = hosts.addresses(for: "localhost")
    case 6:
        if let port = ShadowCommands.udpListenPort(String(decoding: body, as: UTF8.self)) {
            precondition((1...65535).contains(port))
        }
    default:
        _ = try? ShadowConfiguration.parseAuthorizedKeys(String(decoding: body, as: UTF8.self), source: "fuzz")
    }
    return 0
}
