import NIOCore

@testable import KtWire

extension ByteBuffer {
    /// A buffer holding exactly `bytes`.
    init(_ bytes: [UInt8]) {
        self.init(bytes: bytes)
    }
}

/// Every strict prefix of `bytes`, shortest first: what a parser sees when input is cut anywhere.
func truncations(of bytes: [UInt8]) -> [[UInt8]] {
    (0..<bytes.count).map { Array(bytes[..<$0]) }
}

/// Bytes written by an emitter into a fresh buffer.
func emitted(_ write: (inout ByteBuffer) -> Void) -> [UInt8] {
    var buffer = ByteBuffer()
    write(&buffer)
    return Array(buffer: buffer)
}

/// The Internet checksum computed the slow, obvious way (RFC 1071 §4.1), to check the fast one against.
func referenceChecksum(_ bytes: [UInt8]) -> UInt16 {
    var sum: UInt32 = 0
    var index = 0
    while index < bytes.count {
        let high = UInt32(bytes[index]) << 8
        let low = index + 1 < bytes.count ? UInt32(bytes[index + 1]) : 0
        sum += high | low
        while sum > 0xFFFF { sum = (sum & 0xFFFF) + (sum >> 16) }
        index += 2
    }
    return ~UInt16(sum)
}
