import KtWire
import NIOCore

/// TCP header and options parse: no crash; a parsed header (with any options) emits and parses back to itself.
func fuzzTCP(_ data: UnsafePointer<UInt8>?, _ count: Int) -> CInt {
    let input = ByteBuffer(bytes: UnsafeRawBufferPointer(start: data, count: data == nil ? 0 : count))
    guard let segment = try? TCPSegment(validating: input) else { return 0 }
    _ = (
        segment.sequenceLength, segment.flags.description, segment.isChecksumValid(.v4(source: .any, destination: .any))
    )
    let header = segment.header
    // Canonical emission may need more room than the sender's layout; only emit what fits.
    guard header.options.encodedLength <= TCPOptions.maximumLength else { return 0 }
    let pseudo = IPPseudoHeader.v6(source: .loopback, destination: .any)
    var out = ByteBuffer()
    header.emit(into: &out, payload: segment.payload, pseudoHeader: pseudo)
    guard let again = try? TCPSegment(validating: out) else { preconditionFailure("emitted TCP does not parse") }
    precondition(again.header == header && again.payload == segment.payload, "TCP round trip changed the segment")
    precondition(again.isChecksumValid(pseudo), "emitted TCP checksum is wrong")
    return 0
}
