import KtWire
import NIOCore

/// IPv4 parse: any bytes give a packet or a `WireError`; a parsed header emits and parses back to itself.
func fuzzIPv4(_ data: UnsafePointer<UInt8>?, _ count: Int) -> CInt {
    let input = ByteBuffer(bytes: UnsafeRawBufferPointer(start: data, count: data == nil ? 0 : count))
    for verify in [true, false] {
        guard let packet = try? IPv4Packet(validating: input, verifyChecksum: verify) else { continue }
        precondition(packet.buffer.readableBytes == packet.totalLength, "view must cover exactly totalLength")
        _ = (packet.isFragment, packet.trafficClass, packet.options, packet.isHeaderChecksumValid)
        var header = packet.header
        header.options = header.options.count % 4 == 0 ? header.options : []
        var out = ByteBuffer()
        header.emit(into: &out, payloadLength: packet.payload.readableBytes)
        var payload = packet.payload
        out.writeBuffer(&payload)
        guard let again = try? IPv4Packet(validating: out) else { preconditionFailure("emitted IPv4 does not parse") }
        precondition(again.header == header && again.payload == packet.payload, "IPv4 round trip changed the packet")
    }
    _ = try? IPv4Packet(validatingQuoted: input)
    return 0
}
