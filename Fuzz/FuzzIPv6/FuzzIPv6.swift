import KtWire
import NIOCore

/// IPv6 parse with extension-header walk: no crash, offsets inside the packet, header round trip.
func fuzzIPv6(_ data: UnsafePointer<UInt8>?, _ count: Int) -> CInt {
    let input = ByteBuffer(bytes: UnsafeRawBufferPointer(start: data, count: data == nil ? 0 : count))
    if let packet = try? IPv6Packet(validating: input) {
        precondition(packet.upperLayerOffset <= packet.buffer.readableBytes, "upper layer starts past the end")
        _ = (packet.upperLayerPayload, packet.isFragment, packet.flowLabel)
        var out = ByteBuffer()
        packet.header.emit(into: &out, payloadLength: packet.payloadLength)
        let rest = packet.buffer.getSlice(at: packet.buffer.readerIndex + 40, length: packet.payloadLength)
        guard var rest else { preconditionFailure("payload shorter than payloadLength") }
        out.writeBuffer(&rest)
        guard let again = try? IPv6Packet(validating: out) else { preconditionFailure("emitted IPv6 does not parse") }
        precondition(again == packet, "IPv6 round trip changed the packet")
    }
    if let quoted = try? IPv6Packet(validatingQuoted: input) {
        precondition(quoted.upperLayerOffset <= quoted.buffer.readableBytes || quoted.upperLayerOffset >= 40)
    }
    if let any = try? IPPacket(validating: input) {
        _ = (any.source, any.destination, any.transportPayload, any.pseudoHeader)
    }
    return 0
}
