import KtWire
import NIOCore

/// DNS message parse (compression pointers, loops, every record type): no crash; a parsed message encodes and
/// parses back to itself, and truncating it to 512 bytes gives a valid message with TC set.
func fuzzDNS(_ data: UnsafePointer<UInt8>?, _ count: Int) -> CInt {
    let input = ByteBuffer(bytes: UnsafeRawBufferPointer(start: data, count: data == nil ? 0 : count))
    guard let message = try? DNSMessage(parsing: input) else { return 0 }
    _ = message.answers.map(\.description)
    let encoded = message.encoded()
    guard let again = try? DNSMessage(parsing: encoded) else { preconditionFailure("encoded DNS does not parse") }
    precondition(again == message, "DNS round trip changed the message")
    let cut = message.encoded(limit: 512)
    guard let truncated = try? DNSMessage(parsing: cut) else { preconditionFailure("truncated DNS does not parse") }
    precondition(cut.readableBytes <= 512 || truncated.answers.isEmpty, "truncation left records over the limit")
    precondition(
        truncated.header.truncated == (message.header.truncated || encoded.readableBytes > 512),
        "TC bit wrong after truncation")
    return 0
}
