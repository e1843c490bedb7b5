import KtWire
import NIOCore

/// UDP parse: no crash; a parsed datagram emits and parses back with a valid checksum.
func fuzzUDP(_ data: UnsafePointer<UInt8>?, _ count: Int) -> CInt {
    let input = ByteBuffer(bytes: UnsafeRawBufferPointer(start: data, count: data == nil ? 0 : count))
    guard let datagram = try? UDPDatagram(validating: input) else { return 0 }
    precondition(datagram.buffer.readableBytes == datagram.length, "view must cover exactly the length field")
    let pseudo = IPPseudoHeader.v4(source: IPv4Address(10, 0, 0, 1), destination: IPv4Address(10, 0, 0, 2))
    var out = ByteBuffer()
    datagram.header.emit(into: &out, payload: datagram.payload, pseudoHeader: pseudo)
    guard let again = try? UDPDatagram(validating: out) else { preconditionFailure("emitted UDP does not parse") }
    precondition(again.header == datagram.header && again.payload == datagram.payload, "UDP round trip changed it")
    precondition(again.isChecksumValid(pseudo), "emitted UDP checksum is wrong")
    return 0
}
