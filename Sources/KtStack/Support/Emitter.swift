import KtWire
import NIOCore

/// Builds outgoing packets into pooled buffers: IP header, transport header, payload, checksum (or the
/// pseudo-header sum only, with checksum offload).
struct Emitter {
    var pool = PacketBufferPool()
    var packets: [OutputPacket] = []
    var checksumOffload: Bool
    /// IPv4 identification of the next packet (RFC 6864: any value works for DF packets; a counter keeps
    /// fragments of non-DF ones apart).
    private var identification: UInt16 = 0
    /// Packets emitted since the stack was made.
    private(set) var emitted = 0

    init(checksumOffload: Bool) {
        self.checksumOffload = checksumOffload
    }

    private mutating func ipHeader(
        _ key: FlowKey, protocol number: IPProtocol, payloadLength: Int, into buffer: inout ByteBuffer
    ) {
        switch (key.local.address, key.remote.address) {
        case (.v4(let source), .v4(let destination)):
            identification &+= 1
            IPv4Header(identification: identification, protocol: number, source: source, destination: destination)
                .emit(into: &buffer, payloadLength: payloadLength)
        case (.v6(let source), .v6(let destination)):
            IPv6Header(nextHeader: number, source: source, destination: destination)
                .emit(into: &buffer, payloadLength: payloadLength)
        default:
            preconditionFailure("a flow key joins two addresses of one family")
        }
    }

    /// A TCP segment from `key.local` to `key.remote`. The payload is `payloadLength` bytes of `queue` from
    /// `payloadOffset`, copied straight into the packet. `segmentSize` marks a super-segment for the device.
    mutating func tcp(
        _ key: FlowKey, _ header: TCPHeader, queue: SendQueue? = nil, payloadOffset: Int = 0, payloadLength: Int = 0,
        segmentSize: Int? = nil
    ) {
        let ipLength = key.isIPv6 ? 40 : 20
        let tcpLength = header.headerLength + payloadLength
        var packet = pool.take(capacity: ipLength + tcpLength)
        ipHeader(key, protocol: .tcp, payloadLength: tcpLength, into: &packet)
        let tcpStart = packet.writerIndex
        packet.writeInteger(header.sourcePort.rawValue)
        packet.writeInteger(header.destinationPort.rawValue)
        packet.writeInteger(header.sequenceNumber.rawValue)
        packet.writeInteger(header.acknowledgementNumber.rawValue)
        packet.writeInteger(UInt8(header.headerLength / 4) << 4)
        packet.writeInteger(header.flags.rawValue)
        packet.writeInteger(header.window)
        packet.writeInteger(UInt16(0))
        packet.writeInteger(UInt16(0))
        header.options.emit(into: &packet)
        if let queue, payloadLength > 0 { queue.copy(offset: payloadOffset, length: payloadLength, into: &packet) }
        var sum = InternetChecksum()
        key.outboundPseudoHeader.add(to: &sum, protocol: .tcp, length: tcpLength)
        let partial = checksumOffload || segmentSize != nil
        if partial {
            packet.setInteger(sum.foldedSum, at: tcpStart + 16)
        } else {
            sum.add(packet, at: tcpStart, length: tcpLength)
            packet.setInteger(sum.value, at: tcpStart + 16)
        }
        // Wrapped only after the last write: a second reference before it would make that write copy the storage.
        var output = OutputPacket(bytes: packet)
        if partial {
            output.offload.checksumStart = UInt16(ipLength)
            output.offload.checksumOffset = 16
        }
        if let segmentSize, payloadLength > segmentSize { output.offload.segmentSize = UInt16(segmentSize) }
        packets.append(output)
        emitted += 1
    }

    /// A UDP datagram from `key.local` to `key.remote`.
    mutating func udp(_ key: FlowKey, payload: ByteBuffer) {
        let ipLength = key.isIPv6 ? 40 : 20
        var packet = pool.take(capacity: ipLength + 8 + payload.readableBytes)
        ipHeader(key, protocol: .udp, payloadLength: 8 + payload.readableBytes, into: &packet)
        UDPHeader(sourcePort: key.local.port, destinationPort: key.remote.port)
            .emit(into: &packet, payload: payload, pseudoHeader: key.outboundPseudoHeader)
        packets.append(OutputPacket(bytes: packet))
        emitted += 1
    }

    /// An ICMP or ICMPv6 message from `source` to `destination`.
    mutating func icmp(source: IPAddress, destination: IPAddress, v4: ICMPv4Message?, v6: ICMPv6Message?) {
        switch (source, destination) {
        case (.v4(let from), .v4(let to)):
            guard let v4 else { return }
            var packet = pool.take(capacity: 20 + v4.encodedLength)
            identification &+= 1
            IPv4Header(
                identification: identification, dontFragment: false, protocol: .icmp, source: from, destination: to
            )
            .emit(into: &packet, payloadLength: v4.encodedLength)
            v4.emit(into: &packet)
            packets.append(OutputPacket(bytes: packet))
        case (.v6(let from), .v6(let to)):
            guard let v6 else { return }
            var packet = pool.take(capacity: 40 + v6.encodedLength)
            IPv6Header(nextHeader: .icmpv6, source: from, destination: to).emit(
                into: &packet, payloadLength: v6.encodedLength)
            v6.emit(into: &packet, pseudoHeader: .v6(source: from, destination: to))
            packets.append(OutputPacket(bytes: packet))
        default:
            return
        }
        emitted += 1
    }
}
