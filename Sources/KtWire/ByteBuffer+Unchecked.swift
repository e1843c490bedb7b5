import NIOCore

/// Reads for views whose length was checked once when they were made, so that a failing read can only be a
/// bug in KtWire itself.
extension ByteBuffer {
    @inline(__always)
    func checkedInteger<T: FixedWidthInteger>(at offset: Int, as type: T.Type = T.self) -> T {
        guard let value = getInteger(at: readerIndex + offset, as: T.self) else {
            preconditionFailure("KtWire read \(T.self) at \(offset) past a length it had validated")
        }
        return value
    }

    @inline(__always)
    func checkedSlice(at offset: Int, length: Int) -> ByteBuffer {
        guard let slice = getSlice(at: readerIndex + offset, length: length) else {
            preconditionFailure("KtWire sliced \(length) bytes at \(offset) past a length it had validated")
        }
        return slice
    }

    @inline(__always)
    func checkedBytes(at offset: Int, length: Int) -> [UInt8] {
        guard let bytes = getBytes(at: readerIndex + offset, length: length) else {
            preconditionFailure("KtWire copied \(length) bytes at \(offset) past a length it had validated")
        }
        return bytes
    }

    @inline(__always)
    func checkedIPv6Address(at offset: Int) -> IPv6Address {
        let high: UInt64 = checkedInteger(at: offset)
        let low: UInt64 = checkedInteger(at: offset + 8)
        return IPv6Address(bits: UInt128(high) << 64 | UInt128(low))
    }

    /// Writes an IPv6 address in network order.
    @inline(__always)
    mutating func writeIPv6Address(_ address: IPv6Address) {
        writeInteger(UInt64(truncatingIfNeeded: address.bits >> 64))
        writeInteger(UInt64(truncatingIfNeeded: address.bits))
    }
}
