import NIOCore

/// The TCP control bits (RFC 9293 §3.1, RFC 3168 §6.1 for ECE and CWR).
public struct TCPFlags: OptionSet, Hashable, Sendable, CustomStringConvertible {
    public var rawValue: UInt8

    public init(rawValue: UInt8) {
        self.rawValue = rawValue
    }

    public static let fin = TCPFlags(rawValue: 0x01)
    public static let syn = TCPFlags(rawValue: 0x02)
    public static let rst = TCPFlags(rawValue: 0x04)
    public static let psh = TCPFlags(rawValue: 0x08)
    public static let ack = TCPFlags(rawValue: 0x10)
    public static let urg = TCPFlags(rawValue: 0x20)
    public static let ece = TCPFlags(rawValue: 0x40)
    public static let cwr = TCPFlags(rawValue: 0x80)

    /// tcpdump's letters: `S`, `.` for ACK, `F`, `R`, `P`, `U`, `E`, `W`.
    public var description: String {
        let letters: [(TCPFlags, String)] = [
            (.syn, "S"), (.fin, "F"), (.rst, "R"), (.psh, "P"), (.urg, "U"), (.ece, "E"), (.cwr, "W"), (.ack, "."),
        ]
        let text = letters.filter { contains($0.0) }.map(\.1).joined()
        return text.isEmpty ? "none" : text
    }
}

/// A view of a TCP segment whose header and options were checked once, so no accessor can fail.
public struct TCPSegment: Hashable, Sendable {
    /// The segment's bytes: header, options and payload.
    public let buffer: ByteBuffer
    /// The options, decoded at validation.
    public let options: TCPOptions

    /// The fixed header's size.
    public static let minimumHeaderLength = 20

    /// Checks the header and the options of `buffer`'s readable bytes. The checksum is not checked here: with
    /// TUN offloads the kernel hands over segments whose checksum is left for the receiver to fill. Use
    /// ``isChecksumValid(_:)`` where it matters.
    public init(validating buffer: ByteBuffer) throws(WireError) {
        guard buffer.readableBytes >= Self.minimumHeaderLength else {
            throw WireError(.truncated, "TCP.header", "\(buffer.readableBytes) bytes, need \(Self.minimumHeaderLength)")
        }
        let offsetByte: UInt8 = buffer.checkedInteger(at: 12)
        let headerLength = Int(offsetByte >> 4) * 4
        guard headerLength >= Self.minimumHeaderLength else {
            throw WireError(.invalidValue, "TCP.dataOffset", "\(offsetByte >> 4) words; the minimum is 5")
        }
        guard headerLength <= buffer.readableBytes else {
            throw WireError(.truncated, "TCP.options", "data offset \(headerLength), have \(buffer.readableBytes)")
        }
        self.buffer = buffer
        self.options = try TCPOptions(parsing: buffer.checkedSlice(at: 20, length: headerLength - 20))
    }

    // MARK: - Fields

    public var sourcePort: PortNumber { PortNumber(buffer.checkedInteger(at: 0)) }
    public var destinationPort: PortNumber { PortNumber(buffer.checkedInteger(at: 2)) }
    public var sequenceNumber: TCPSequenceNumber { TCPSequenceNumber(buffer.checkedInteger(at: 4)) }
    public var acknowledgementNumber: TCPSequenceNumber { TCPSequenceNumber(buffer.checkedInteger(at: 8)) }
    /// The header's length in bytes, options included.
    public var headerLength: Int { Int(buffer.checkedInteger(at: 12, as: UInt8.self) >> 4) * 4 }
    public var flags: TCPFlags { TCPFlags(rawValue: buffer.checkedInteger(at: 13)) }
    /// The window field as carried, before scaling.
    public var window: UInt16 { buffer.checkedInteger(at: 14) }
    public var checksum: UInt16 { buffer.checkedInteger(at: 16) }
    public var urgentPointer: UInt16 { buffer.checkedInteger(at: 18) }
    /// The data after the header.
    public var payload: ByteBuffer {
        buffer.checkedSlice(at: headerLength, length: buffer.readableBytes - headerLength)
    }
    /// How many bytes of data the segment carries.
    public var payloadLength: Int { buffer.readableBytes - headerLength }
    /// The sequence space the segment occupies: its data, plus one each for SYN and FIN (RFC 9293 §3.4).
    public var sequenceLength: Int {
        let flags = self.flags
        return payloadLength + (flags.contains(.syn) ? 1 : 0) + (flags.contains(.fin) ? 1 : 0)
    }

    /// True if the checksum is correct for a segment sent with `pseudoHeader`.
    public func isChecksumValid(_ pseudoHeader: IPPseudoHeader) -> Bool {
        var sum = InternetChecksum()
        pseudoHeader.add(to: &sum, protocol: .tcp, length: buffer.readableBytes)
        sum.add(buffer)
        return sum.isValid
    }

    /// The header as a value.
    public var header: TCPHeader {
        TCPHeader(
            sourcePort: sourcePort, destinationPort: destinationPort, sequenceNumber: sequenceNumber,
            acknowledgementNumber: acknowledgementNumber, flags: flags, window: window, urgentPointer: urgentPointer,
            options: options)
    }
}

/// A TCP header as a value, ready to emit.
public struct TCPHeader: Hashable, Sendable {
    public var sourcePort: PortNumber
    public var destinationPort: PortNumber
    public var sequenceNumber: TCPSequenceNumber
    public var acknowledgementNumber: TCPSequenceNumber
    public var flags: TCPFlags
    public var window: UInt16
    public var urgentPointer: UInt16
    public var options: TCPOptions

    public init(
        sourcePort: PortNumber, destinationPort: PortNumber, sequenceNumber: TCPSequenceNumber,
        acknowledgementNumber: TCPSequenceNumber = TCPSequenceNumber(0), flags: TCPFlags, window: UInt16,
        urgentPointer: UInt16 = 0, options: TCPOptions = TCPOptions()
    ) {
        self.sourcePort = sourcePort
        self.destinationPort = destinationPort
        self.sequenceNumber = sequenceNumber
        self.acknowledgementNumber = acknowledgementNumber
        self.flags = flags
        self.window = window
        self.urgentPointer = urgentPointer
        self.options = options
    }

    /// The header's length in bytes, options included.
    public var headerLength: Int { TCPSegment.minimumHeaderLength + options.encodedLength }

    /// Writes the header and `payload` (exactly ``headerLength`` + payload bytes) with the checksum computed
    /// for `pseudoHeader`.
    public func emit(into buffer: inout ByteBuffer, payload: ByteBuffer, pseudoHeader: IPPseudoHeader) {
        let start = buffer.writerIndex
        let headerLength = self.headerLength
        buffer.writeInteger(sourcePort.rawValue)
        buffer.writeInteger(destinationPort.rawValue)
        buffer.writeInteger(sequenceNumber.rawValue)
        buffer.writeInteger(acknowledgementNumber.rawValue)
        buffer.writeInteger(UInt8(headerLength / 4) << 4)
        buffer.writeInteger(flags.rawValue)
        buffer.writeInteger(window)
        buffer.writeInteger(UInt16(0))
        buffer.writeInteger(urgentPointer)
        options.emit(into: &buffer)
        var payload = payload
        buffer.writeBuffer(&payload)
        var checksum = InternetChecksum()
        pseudoHeader.add(to: &checksum, protocol: .tcp, length: buffer.writerIndex - start)
        checksum.add(buffer, at: start, length: buffer.writerIndex - start)
        buffer.setInteger(checksum.value, at: start + 16)
    }
}
