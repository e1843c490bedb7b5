import KtWire
import NIOCore

/// ICMPv4 and ICMPv6 parse, quoted packets included: no crash; parsed messages emit and parse back to themselves.
func fuzzICMP(_ data: UnsafePointer<UInt8>?, _ count: Int) -> CInt {
    let input = ByteBuffer(bytes: UnsafeRawBufferPointer(start: data, count: data == nil ? 0 : count))
    if let message = try? ICMPv4Message(parsing: input, verifyChecksum: false) {
        var out = ByteBuffer()
        message.emit(into: &out)
        precondition(out.readableBytes == message.encodedLength, "ICMPv4 encodedLength is wrong")
        guard let again = try? ICMPv4Message(parsing: out) else { preconditionFailure("emitted ICMPv4 does not parse") }
        precondition(again == message, "ICMPv4 round trip changed the message")
    }
    let pseudo = IPPseudoHeader.v6(source: .loopback, destination: .loopback)
    if let message = try? ICMPv6Message(parsing: input) {
        var out = ByteBuffer()
        message.emit(into: &out, pseudoHeader: pseudo)
        precondition(out.readableBytes == message.encodedLength, "ICMPv6 encodedLength is wrong")
        guard let again = try? ICMPv6Message(parsing: out, pseudoHeader: pseudo) else {
            preconditionFailure("emitted ICMPv6 does not parse")
        }
        precondition(again == message, "ICMPv6 round trip changed the message")
    }
    return 0
}
