import NIOCore

/// A view of a UDP datagram (RFC 768) whose length field was checked once.
///
/// The view covers exactly the datagram's `length` bytes: anything after it in the IP payload is dropped.
public struct UDPDatagram: Hashable, Sendable {
    /// The datagram's bytes, header included.
    public let buffer: ByteBuffer

    /// The header's size.
    public static let headerLength = 8

    /// Checks the header of `buffer`'s readable bytes.
    public init(validating buffer: ByteBuffer) throws(WireError) {
        guard buffer.readableBytes >= Self.headerLength else {
            throw WireError(.truncated, "UDP.header", "\(buffer.readableBytes) bytes, need 8")
        }
        let length = Int(buffer.checkedInteger(at: 4, as: UInt16.self))
        guard length >= Self.headerLength else {
            throw WireError(.invalidValue, "UDP.length", "\(length) is less than the header's 8")
        }
        guard length <= buffer.readableBytes else {
            throw WireError(.truncated, "UDP.payload", "length \(length), have \(buffer.readableBytes)")
        }
        self.buffer = buffer.checkedSlice(at: 0, length: length)
    }

    public var sourcePort: PortNumber { PortNumber(buffer.checkedInteger(at: 0)) }
    public var destinationPort: PortNumber { PortNumber(buffer.checkedInteger(at: 2)) }
    /// The length field: header plus payload.
    public var length: Int { Int(buffer.checkedInteger(at: 4, as: UInt16.self)) }
    /// The checksum as carried; 0 over IPv4 means the sender computed none.
    public var checksum: UInt16 { buffer.checkedInteger(at: 6) }
    /// The data after the header.
    public var payload: ByteBuffer { buffer.checkedSlice(at: 8, length: buffer.readableBytes - 8) }

    /// True if the checksum is correct for `pseudoHeader`, or absent over IPv4 (RFC 768). Over IPv6 a zero
    /// checksum is invalid (RFC 8200 §8.1).
    public func isChecksumValid(_ pseudoHeader: IPPseudoHeader) -> Bool {
        if checksum == 0, case .v4 = pseudoHeader { return true }
        var sum = InternetChecksum()
        pseudoHeader.add(to: &sum, protocol: .udp, length: buffer.readableBytes)
        sum.add(buffer)
        return sum.isValid
    }

    /// The header as a value.
    public var header: UDPHeader { UDPHeader(sourcePort: sourcePort, destinationPort: destinationPort) }
}

/// A UDP header as a value, ready to emit.
public struct UDPHeader: Hashable, Sendable {
    public var sourcePort: PortNumber
    public var destinationPort: PortNumber

    public init(sourcePort: PortNumber, destinationPort: PortNumber) {
        self.sourcePort = sourcePort
        self.destinationPort = destinationPort
    }

    /// Writes the header and `payload` (exactly 8 + payload bytes) with the checksum computed for
    /// `pseudoHeader`. A computed checksum of zero is sent as 0xFFFF (RFC 768).
    public func emit(into buffer: inout ByteBuffer, payload: ByteBuffer, pseudoHeader: IPPseudoHeader) {
        let start = buffer.writerIndex
        let length = UDPDatagram.headerLength + payload.readableBytes
        precondition(length <= Int(UInt16.max), "UDP datagram of \(length) bytes")
        buffer.writeInteger(sourcePort.rawValue)
        buffer.writeInteger(destinationPort.rawValue)
        buffer.writeInteger(UInt16(length))
        buffer.writeInteger(UInt16(0))
        var payload = payload
        buffer.writeBuffer(&payload)
        var checksum = InternetChecksum()
        pseudoHeader.add(to: &checksum, protocol: .udp, length: length)
        checksum.add(buffer, at: start, length: length)
        let value = checksum.value
        buffer.setInteger(value == 0 ? 0xFFFF : value, at: start + 6)
    }
}
