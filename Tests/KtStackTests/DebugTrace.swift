import KtStack
import KtWire
import NIOCore

/// One line per packet, like tcpdump: for reading failures of the simulation and the unit tests.
func trace(_ bytes: ByteBuffer) -> String {
    guard let ip = try? IPPacket(validating: bytes, verifyChecksum: false) else { return "malformed" }
    switch ip.transportProtocol {
    case .tcp:
        guard let tcp = try? TCPSegment(validating: ip.transportPayload) else { return "bad tcp" }
        var text =
            "\(ip.source):\(tcp.sourcePort) > \(ip.destination):\(tcp.destinationPort) [\(tcp.flags)] seq \(tcp.sequenceNumber)"
        if tcp.flags.contains(.ack) { text += " ack \(tcp.acknowledgementNumber)" }
        text += " win \(tcp.window) len \(tcp.payloadLength)"
        if tcp.payloadLength > 0 { text += " data \(Array(buffer: tcp.payload).prefix(3))" }
        if !tcp.options.sackBlocks.isEmpty {
            text += " sack \(tcp.options.sackBlocks.map { "\($0.left)-\($0.right)" })"
        }
        return text
    default:
        return "\(ip.transportProtocol) \(ip.source) > \(ip.destination)"
    }
}
