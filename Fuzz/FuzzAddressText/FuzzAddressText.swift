import KtWire
import NIOCore

/// Text parsers (IPv4, IPv6, prefixes, DNS names): no crash, and whatever parses prints and parses back the same.
func fuzzAddressText(_ data: UnsafePointer<UInt8>?, _ count: Int) -> CInt {
    let text = String(decoding: UnsafeRawBufferPointer(start: data, count: data == nil ? 0 : count), as: UTF8.self)
    if let v4 = IPv4Address(text) { precondition(IPv4Address(v4.description) == v4, "IPv4 text round trip") }
    if let v6 = IPv6Address(text) { precondition(IPv6Address(v6.description) == v6, "IPv6 text round trip") }
    if let prefix = try? AnyIPPrefix.parse(text) {
        precondition((try? AnyIPPrefix.parse(prefix.description)) == prefix, "prefix text round trip")
    }
    if let name = try? DNSName(parsing: text) {
        precondition((try? DNSName(parsing: name.description)) == name, "DNS name text round trip")
        precondition(name.wireLength <= DNSName.maximumWireLength, "name longer than 255 octets")
    }
    return 0
}
