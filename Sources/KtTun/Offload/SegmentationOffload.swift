import KtWire
import NIOCore

/// Turns what the kernel writes into a TUN with `IFF_VNET_HDR` into ordinary IP packets: super-packets (GSO) are
/// split into MSS-sized segments and partial checksums are completed, as a NIC doing TSO/USO in hardware would.
///
/// Each output packet is a valid IP packet with complete checksums, so the stack above never sees offload state.
public enum SegmentationOffload {
    /// The most segments one super-packet may produce. A 64 KiB super-packet with the smallest MSS the kernel
    /// allows on IPv4 (536 after header room, RFC 9293 §3.7.1) gives 123; anything above this bound means a
    /// header we misread, not a packet.
    public static let maximumSegments = 256

    /// Appends to `output` the packets that `packet` (everything after the virtio header) stands for.
    public static func split(
        _ header: VirtioNetHeader, packet: ByteBuffer, into output: inout [ByteBuffer]
    ) throws(WireError) {
        switch header.gsoType.base {
        case .none:
            var packet = packet
            if header.flags.contains(.needsChecksum) { try completeChecksum(header, &packet) }
            output.append(packet)
        case .tcpv4, .tcpv6:
            try splitTCP(header, packet, &output)
        case .udpL4, .udp:
            try splitUDP(header, packet, &output)
        default:
            throw WireError(.unsupported, "virtio_net_hdr.gso_type", "\(header.gsoType.rawValue)")
        }
    }

    // MARK: - Checksums

    /// Completes a CHECKSUM_PARTIAL packet: the field holds the pseudo-header sum, so the checksum over
    /// `checksumStart..<end`, field included, is the final one.
    static func completeChecksum(_ header: VirtioNetHeader, _ packet: inout ByteBuffer) throws(WireError) {
        let start = Int(header.checksumStart)
        let field = start + Int(header.checksumOffset)
        guard field + 2 <= packet.readableBytes, start < packet.readableBytes else {
            throw WireError(
                .invalidValue, "virtio_net_hdr.csum_start", "checksum field at \(field) past \(packet.readableBytes)")
        }
        var sum = InternetChecksum()
        sum.add(packet, at: packet.readerIndex + start, length: packet.readableBytes - start)
        packet.setInteger(sum.value, at: packet.readerIndex + field)
    }

    // MARK: - TCP segmentation

    /// Where the IP and TCP headers of a super-packet are.
    private struct Layout {
        var isIPv4: Bool
        var ipHeaderLength: Int
        var tcpHeaderLength: Int
        var headersLength: Int { ipHeaderLength + tcpHeaderLength }
    }

    private static func layout(_ packet: ByteBuffer, transport: IPProtocol) throws(WireError) -> Layout {
        let base = packet.readerIndex
        guard let first = packet.getInteger(at: base, as: UInt8.self) else {
            throw WireError(.truncated, "GSO.ip")
        }
        let isIPv4 = first >> 4 == 4
        let ipHeaderLength: Int
        let protocolNumber: UInt8?
        if isIPv4 {
            ipHeaderLength = Int(first & 0x0F) * 4
            protocolNumber = packet.getInteger(at: base + 9)
        } else if first >> 4 == 6 {
            ipHeaderLength = 40
            protocolNumber = packet.getInteger(at: base + 6)
        } else {
            throw WireError(.invalidValue, "GSO.ip.version", "\(first >> 4)")
        }
        guard ipHeaderLength >= 20, protocolNumber == transport.rawValue else {
            throw WireError(.unsupported, "GSO.ip", "super-packet is not plain IP + \(transport)")
        }
        var tcpHeaderLength = 8
        if transport == .tcp {
            guard let offsetByte = packet.getInteger(at: base + ipHeaderLength + 12, as: UInt8.self) else {
                throw WireError(.truncated, "GSO.tcp")
            }
            tcpHeaderLength = Int(offsetByte >> 4) * 4
            guard tcpHeaderLength >= 20 else { throw WireError(.invalidValue, "GSO.tcp.dataOffset") }
        }
        guard ipHeaderLength + tcpHeaderLength <= packet.readableBytes else {
            throw WireError(.truncated, "GSO.headers")
        }
        return Layout(isIPv4: isIPv4, ipHeaderLength: ipHeaderLength, tcpHeaderLength: tcpHeaderLength)
    }

    private static func splitTCP(
        _ header: VirtioNetHeader, _ packet: ByteBuffer, _ output: inout [ByteBuffer]
    ) throws(WireError) {
        let layout = try layout(packet, transport: .tcp)
        let mss = Int(header.gsoSize)
        let payloadLength = packet.readableBytes - layout.headersLength
        guard mss > 0 else { throw WireError(.invalidValue, "virtio_net_hdr.gso_size", "0") }
        let count = (payloadLength + mss - 1) / mss
        guard count <= maximumSegments else {
            throw WireError(.tooLong, "virtio_net_hdr.gso_size", "\(count) segments of \(mss)")
        }
        let base = packet.readerIndex
        let ipIdentification: UInt16 = layout.isIPv4 ? packet.getInteger(at: base + 4) ?? 0 : 0
        let sequence: UInt32 = packet.getInteger(at: base + layout.ipHeaderLength + 4) ?? 0
        let flags: UInt8 = packet.getInteger(at: base + layout.ipHeaderLength + 13) ?? 0
        let source = packet.getSlice(at: base + (layout.isIPv4 ? 12 : 8), length: layout.isIPv4 ? 8 : 32)
        guard let source else { throw WireError(.truncated, "GSO.ip.addresses") }
        for index in 0..<max(count, 1) {
            let offset = index * mss
            let length = min(mss, payloadLength - offset)
            var segment = ByteBuffer()
            segment.reserveCapacity(layout.headersLength + length)
            var headers = packet.getSlice(at: base, length: layout.headersLength) ?? ByteBuffer()
            segment.writeBuffer(&headers)
            var payload = packet.getSlice(at: base + layout.headersLength + offset, length: length) ?? ByteBuffer()
            segment.writeBuffer(&payload)
            let ip = 0
            let tcp = layout.ipHeaderLength
            if layout.isIPv4 {
                segment.setInteger(UInt16(layout.headersLength + length), at: ip + 2)
                segment.setInteger(ipIdentification &+ UInt16(truncatingIfNeeded: index), at: ip + 4)
                segment.setInteger(UInt16(0), at: ip + 10)
                var sum = InternetChecksum()
                sum.add(segment, at: 0, length: layout.ipHeaderLength)
                segment.setInteger(sum.value, at: ip + 10)
            } else {
                segment.setInteger(UInt16(layout.tcpHeaderLength + length), at: ip + 4)
            }
            segment.setInteger(sequence &+ UInt32(offset), at: tcp + 4)
            // FIN and PSH belong to the last segment only; CWR to the first (RFC 3168 §6.1.2 via GSO rules).
            var segmentFlags = flags
            if index != count - 1 { segmentFlags &= ~(TCPFlags.fin.rawValue | TCPFlags.psh.rawValue) }
            if index != 0 { segmentFlags &= ~TCPFlags.cwr.rawValue }
            segment.setInteger(segmentFlags, at: tcp + 13)
            segment.setInteger(UInt16(0), at: tcp + 16)
            var sum = InternetChecksum()
            sum.add(source)
            let tcpLength = layout.tcpHeaderLength + length
            if layout.isIPv4 {
                sum.add(word: UInt16(IPProtocol.tcp.rawValue))
                sum.add(word: UInt16(tcpLength))
            } else {
                sum.add(doubleWord: UInt32(tcpLength))
                sum.add(word: UInt16(IPProtocol.tcp.rawValue))
            }
            sum.add(segment, at: tcp, length: tcpLength)
            segment.setInteger(sum.value, at: tcp + 16)
            output.append(segment)
        }
    }

    // MARK: - UDP segmentation (USO)

    private static func splitUDP(
        _ header: VirtioNetHeader, _ packet: ByteBuffer, _ output: inout [ByteBuffer]
    ) throws(WireError) {
        let layout = try layout(packet, transport: .udp)
        let size = Int(header.gsoSize)
        let payloadLength = packet.readableBytes - layout.headersLength
        guard size > 0 else { throw WireError(.invalidValue, "virtio_net_hdr.gso_size", "0") }
        let count = (payloadLength + size - 1) / size
        guard count <= maximumSegments else {
            throw WireError(.tooLong, "virtio_net_hdr.gso_size", "\(count) datagrams of \(size)")
        }
        let base = packet.readerIndex
        let ipIdentification: UInt16 = layout.isIPv4 ? packet.getInteger(at: base + 4) ?? 0 : 0
        guard let addresses = packet.getSlice(at: base + (layout.isIPv4 ? 12 : 8), length: layout.isIPv4 ? 8 : 32)
        else { throw WireError(.truncated, "USO.ip.addresses") }
        for index in 0..<max(count, 1) {
            let offset = index * size
            let length = min(size, payloadLength - offset)
            var datagram = ByteBuffer()
            var headers = packet.getSlice(at: base, length: layout.headersLength) ?? ByteBuffer()
            datagram.writeBuffer(&headers)
            var payload = packet.getSlice(at: base + layout.headersLength + offset, length: length) ?? ByteBuffer()
            datagram.writeBuffer(&payload)
            let udp = layout.ipHeaderLength
            let udpLength = 8 + length
            if layout.isIPv4 {
                datagram.setInteger(UInt16(layout.ipHeaderLength + udpLength), at: 2)
                datagram.setInteger(ipIdentification &+ UInt16(truncatingIfNeeded: index), at: 4)
                datagram.setInteger(UInt16(0), at: 10)
                var sum = InternetChecksum()
                sum.add(datagram, at: 0, length: layout.ipHeaderLength)
                datagram.setInteger(sum.value, at: 10)
            } else {
                datagram.setInteger(UInt16(udpLength), at: 4)
            }
            datagram.setInteger(UInt16(udpLength), at: udp + 4)
            datagram.setInteger(UInt16(0), at: udp + 6)
            var sum = InternetChecksum()
            sum.add(addresses)
            if layout.isIPv4 {
                sum.add(word: UInt16(IPProtocol.udp.rawValue))
                sum.add(word: UInt16(udpLength))
            } else {
                sum.add(doubleWord: UInt32(udpLength))
                sum.add(word: UInt16(IPProtocol.udp.rawValue))
            }
            sum.add(datagram, at: udp, length: udpLength)
            let value = sum.value
            datagram.setInteger(value == 0 ? 0xFFFF : value, at: udp + 6)
            output.append(datagram)
        }
    }
}
