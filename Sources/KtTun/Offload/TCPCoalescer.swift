import KtWire
import NIOCore

/// A packet ready for a TUN opened with `IFF_VNET_HDR`: the virtio header and the IP packet after it.
public struct OffloadedPacket: Hashable, Sendable {
    public var header: VirtioNetHeader
    public var packet: ByteBuffer

    public init(header: VirtioNetHeader, packet: ByteBuffer) {
        self.header = header
        self.packet = packet
    }
}

/// Joins consecutive TCP segments of one flow into super-packets before they are written to the TUN (generic
/// receive offload, as wireguard-go's `tcpGRO` and gVisor do), so the kernel takes 64 KiB in one write instead
/// of forty-odd.
///
/// Segments are joined only when Linux's own GRO would join them (`tcp_gro_receive`): same addresses and ports,
/// contiguous sequence numbers, same ACK, flags, window and options (timestamps included), only ACK and PSH set,
/// every segment but the last exactly as long as the first, PSH only on the last. Anything else passes through
/// unchanged, and no packet moves ahead of an earlier one of its own flow.
public enum TCPCoalescer {
    /// The IP packet a super-packet may grow to.
    public static let maximumPacketLength = 65535

    /// Turns a batch of IP packets with complete checksums into what to write.
    public static func coalesce(_ packets: [ByteBuffer]) -> [OffloadedPacket] {
        var items: [Item] = []
        var open: [FlowKey: Int] = [:]
        for packet in packets {
            guard let segment = Segment(packet) else {
                // Not joinable. If it belongs to a flow with an open item, that item must not take later segments,
                // or they would overtake this packet.
                if let key = FlowKey(anyTCP: packet) { open[key] = nil }
                items.append(Item(single: packet))
                continue
            }
            if let index = open[segment.key], items[index].append(segment) {
                if items[index].isClosed { open[segment.key] = nil }
                continue
            }
            items.append(Item(first: segment))
            open[segment.key] = items[items.count - 1].isClosed ? nil : items.count - 1
        }
        return items.map { $0.finish() }
    }

    // MARK: - Flows

    struct FlowKey: Hashable {
        /// Source and destination addresses as carried (8 or 32 bytes) followed by both ports.
        var bytes: [UInt8]

        init?(anyTCP packet: ByteBuffer) {
            guard let layout = Layout(packet),
                let ports = packet.getBytes(at: packet.readerIndex + layout.ipHeaderLength, length: 4),
                let addresses = packet.getBytes(
                    at: packet.readerIndex + layout.addressOffset, length: layout.addressLength)
            else { return nil }
            bytes = addresses + ports
        }
    }

    /// Where the headers of an IPv4 (no options) or IPv6 (no extension headers) TCP packet are.
    struct Layout {
        var isIPv4: Bool
        var ipHeaderLength: Int
        var addressOffset: Int { isIPv4 ? 12 : 8 }
        var addressLength: Int { isIPv4 ? 8 : 32 }

        init?(_ packet: ByteBuffer) {
            guard let first = packet.getInteger(at: packet.readerIndex, as: UInt8.self) else { return nil }
            switch first {
            case 0x45:
                guard packet.getInteger(at: packet.readerIndex + 9, as: UInt8.self) == IPProtocol.tcp.rawValue else {
                    return nil
                }
                isIPv4 = true
                ipHeaderLength = 20
            case 0x60...0x6F:
                guard packet.getInteger(at: packet.readerIndex + 6, as: UInt8.self) == IPProtocol.tcp.rawValue else {
                    return nil
                }
                isIPv4 = false
                ipHeaderLength = 40
            default:
                return nil
            }
            guard packet.readableBytes >= ipHeaderLength + 20 else { return nil }
        }
    }

    /// A TCP segment that could be joined with others.
    struct Segment {
        var packet: ByteBuffer
        var layout: Layout
        var key: FlowKey
        var tcpHeaderLength: Int
        var sequence: UInt32
        var payloadLength: Int
        var flags: UInt8
        /// Bytes that must be equal for two segments to join: IPv4 TOS, DF and TTL (or IPv6 traffic class and hop
        /// limit), and the TCP header from the ACK number on except flags and checksum.
        var invariant: [UInt8]

        init?(_ packet: ByteBuffer) {
            guard let layout = Layout(packet), let key = FlowKey(anyTCP: packet) else { return nil }
            let base = packet.readerIndex
            let tcp = base + layout.ipHeaderLength
            guard let offsetByte = packet.getInteger(at: tcp + 12, as: UInt8.self),
                let flags = packet.getInteger(at: tcp + 13, as: UInt8.self),
                let sequence = packet.getInteger(at: tcp + 4, as: UInt32.self)
            else { return nil }
            let tcpHeaderLength = Int(offsetByte >> 4) * 4
            let allowed = TCPFlags.ack.rawValue | TCPFlags.psh.rawValue
            guard tcpHeaderLength >= 20, flags & ~allowed == 0, flags & TCPFlags.ack.rawValue != 0 else { return nil }
            let payloadLength: Int
            var invariant: [UInt8]
            if layout.isIPv4 {
                guard let totalLength = packet.getInteger(at: base + 2, as: UInt16.self),
                    let fragment = packet.getInteger(at: base + 6, as: UInt16.self), fragment & 0x3FFF == 0,
                    Int(totalLength) == packet.readableBytes,
                    let tos = packet.getInteger(at: base + 1, as: UInt8.self),
                    let ttl = packet.getInteger(at: base + 8, as: UInt8.self)
                else { return nil }
                payloadLength = Int(totalLength) - 20 - tcpHeaderLength
                invariant = [tos, UInt8(fragment >> 8), ttl]
            } else {
                guard let payload = packet.getInteger(at: base + 4, as: UInt16.self),
                    Int(payload) + 40 == packet.readableBytes,
                    let word = packet.getInteger(at: base, as: UInt32.self),
                    let hopLimit = packet.getInteger(at: base + 7, as: UInt8.self)
                else { return nil }
                payloadLength = Int(payload) - tcpHeaderLength
                invariant = [UInt8(truncatingIfNeeded: word >> 20), hopLimit]
            }
            guard payloadLength > 0, let ack = packet.getBytes(at: tcp + 8, length: 4),
                let window = packet.getBytes(at: tcp + 14, length: 2),
                let options = packet.getBytes(at: tcp + 20, length: tcpHeaderLength - 20)
            else { return nil }
            invariant += ack + [offsetByte] + window + options
            self.packet = packet
            self.layout = layout
            self.key = key
            self.tcpHeaderLength = tcpHeaderLength
            self.sequence = sequence
            self.payloadLength = payloadLength
            self.flags = flags
            self.invariant = invariant
        }

        var headersLength: Int { layout.ipHeaderLength + tcpHeaderLength }
    }

    // MARK: - Items

    /// One output packet: a single packet passed through, or segments being joined.
    struct Item {
        var first: Segment?
        var single: ByteBuffer?
        var payloads: [ByteBuffer] = []
        var nextSequence: UInt32 = 0
        var totalPayload = 0
        var lastFlags: UInt8 = 0
        /// No more segments may join: the last one was short, or carried PSH.
        var isClosed = false

        init(single: ByteBuffer) {
            self.single = single
            isClosed = true
        }

        init(first segment: Segment) {
            first = segment
            payloads = [
                segment.packet.getSlice(
                    at: segment.packet.readerIndex + segment.headersLength, length: segment.payloadLength)
                    ?? ByteBuffer()
            ]
            nextSequence = segment.sequence &+ UInt32(segment.payloadLength)
            totalPayload = segment.payloadLength
            lastFlags = segment.flags
            isClosed = segment.flags & TCPFlags.psh.rawValue != 0
        }

        /// Joins `segment` if Linux's GRO would; says whether it did.
        mutating func append(_ segment: Segment) -> Bool {
            guard let first, !isClosed, segment.sequence == nextSequence, segment.invariant == first.invariant,
                segment.payloadLength <= first.payloadLength,
                first.headersLength + totalPayload + segment.payloadLength <= TCPCoalescer.maximumPacketLength
            else { return false }
            payloads.append(
                segment.packet.getSlice(
                    at: segment.packet.readerIndex + segment.headersLength, length: segment.payloadLength)
                    ?? ByteBuffer())
            nextSequence = segment.sequence &+ UInt32(segment.payloadLength)
            totalPayload += segment.payloadLength
            lastFlags = segment.flags
            isClosed = segment.payloadLength < first.payloadLength || segment.flags & TCPFlags.psh.rawValue != 0
            return true
        }

        func finish() -> OffloadedPacket {
            if let single { return OffloadedPacket(header: .plain, packet: single) }
            guard let first else { preconditionFailure("an item is either a single packet or a joined flow") }
            if payloads.count == 1 { return OffloadedPacket(header: .plain, packet: first.packet) }
            let layout = first.layout
            let headersLength = first.headersLength
            var packet = ByteBuffer()
            packet.reserveCapacity(headersLength + totalPayload)
            var headers = first.packet.getSlice(at: first.packet.readerIndex, length: headersLength) ?? ByteBuffer()
            packet.writeBuffer(&headers)
            for var payload in payloads { packet.writeBuffer(&payload) }
            let tcp = layout.ipHeaderLength
            let tcpLength = first.tcpHeaderLength + totalPayload
            if layout.isIPv4 {
                packet.setInteger(UInt16(headersLength + totalPayload), at: 2)
                packet.setInteger(UInt16(0), at: 10)
                var sum = InternetChecksum()
                sum.add(packet, at: 0, length: 20)
                packet.setInteger(sum.value, at: 10)
            } else {
                packet.setInteger(UInt16(tcpLength), at: 4)
            }
            packet.setInteger(lastFlags, at: tcp + 13)
            // CHECKSUM_PARTIAL: the field holds the pseudo-header sum; the kernel adds the segment's bytes.
            var pseudo = InternetChecksum()
            pseudo.add(packet, at: layout.addressOffset, length: layout.addressLength)
            if layout.isIPv4 {
                pseudo.add(word: UInt16(IPProtocol.tcp.rawValue))
                pseudo.add(word: UInt16(tcpLength))
            } else {
                pseudo.add(doubleWord: UInt32(tcpLength))
                pseudo.add(word: UInt16(IPProtocol.tcp.rawValue))
            }
            packet.setInteger(pseudo.foldedSum, at: tcp + 16)
            let header = VirtioNetHeader(
                flags: .needsChecksum, gsoType: layout.isIPv4 ? .tcpv4 : .tcpv6, headerLength: UInt16(headersLength),
                gsoSize: UInt16(first.payloadLength), checksumStart: UInt16(tcp), checksumOffset: 16)
            return OffloadedPacket(header: header, packet: packet)
        }
    }
}
