import CNetlink
import Glibc
import KtWire
import NIOConcurrencyHelpers
import NIOCore

/// The offloads a TUN with a virtio header can take (`TUNSETOFFLOAD`).
public struct TunOffloads: OptionSet, Hashable, Sendable {
    public var rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }
    /// Packets may carry a partial checksum for the receiver to complete. Required by the others.
    public static let checksum = TunOffloads(rawValue: CNL_TUN_OFFLOAD_CSUM)
    public static let tso4 = TunOffloads(rawValue: CNL_TUN_OFFLOAD_TSO4)
    public static let tso6 = TunOffloads(rawValue: CNL_TUN_OFFLOAD_TSO6)
    /// UDP segmentation (Linux 6.2+); the kernel takes both or neither.
    public static let uso = TunOffloads(rawValue: CNL_TUN_OFFLOAD_USO4 | CNL_TUN_OFFLOAD_USO6)
    /// Everything the kernel offers: 64 KiB TCP and UDP super-packets both ways.
    public static let all: TunOffloads = [.checksum, .tso4, .tso6, .uso]
}

/// How to open a TUN device.
public struct TunOptions: Sendable {
    /// The interface name; `nil` lets the kernel choose (`tun0`, …).
    public var name: String?
    /// Prefix every packet with a virtio-net header, which is what offloads need.
    public var virtioHeader: Bool
    /// Offloads to ask for; only with `virtioHeader`. What the kernel accepted is in ``TunDevice/offloads``.
    public var offloads: TunOffloads
    /// Create a multi-queue device, so that more queues (each its own fd and thread) can be added with
    /// ``TunDevice/openQueue()``.
    public var multiQueue: Bool
    /// Hand TCP super-packets over whole instead of splitting them: one 64 KiB segment for a userspace TCP to take
    /// in one step. Their transport checksums are left partial (the kernel made them; nothing can corrupt them on
    /// the way), so the reader must not verify them.
    public var keepSuperPackets: Bool

    public init(
        name: String? = "kt0", virtioHeader: Bool = true, offloads: TunOffloads = .all, multiQueue: Bool = false,
        keepSuperPackets: Bool = false
    ) {
        self.name = name
        self.virtioHeader = virtioHeader
        self.offloads = virtioHeader ? offloads : []
        self.multiQueue = multiQueue
        self.keepSuperPackets = virtioHeader && keepSuperPackets
    }
}

/// A layer-3 TUN device: IP packets in, IP packets out, in batches, never blocking.
///
/// With a virtio header the kernel hands over 64 KiB TCP/UDP super-packets, which ``read(into:maximum:)`` splits
/// into ordinary packets with complete checksums, and ``write(_:)`` joins consecutive segments of a flow back
/// into super-packets ("GRO"): one syscall moves up to 64 KiB instead of one MTU.
///
/// The device exists while it is open: ``close()`` (idempotent, also run on deinit) deletes it together with its
/// addresses and routes.
public final class TunDevice: PacketDevice, @unchecked Sendable {
    /// The interface name the kernel gave.
    public let name: String
    /// Whether packets carry a virtio-net header on this fd.
    public let virtioHeader: Bool
    /// The offloads in force.
    public let offloads: TunOffloads
    /// What the device was opened with.
    public let options: TunOptions
    private let state: NIOLockedValueBox<CInt>
    /// One buffer per read of a batch, reused: the kernel reads straight into it. A buffer the reader still holds
    /// when the next batch comes (a slice kept in a receive queue) is not overwritten: it is replaced (ByteBuffer's
    /// copy on write), so nothing is copied unless the storage is shared.
    private var readBuffers: [ByteBuffer] = []
    /// One read's worth: the largest IP packet plus the virtio header.
    static let readCapacity = 65535 + VirtioNetHeader.size
    /// Packets the kernel sent that could not be split (malformed offload metadata), dropped and counted.
    public private(set) var malformedReads = 0
    /// Writes the kernel refused with EAGAIN or ENOBUFS (its queue was full); the packets are dropped, as a NIC
    /// drops when its ring is full, and TCP above recovers.
    public private(set) var droppedWrites = 0
    /// Super-packets (GSO) the kernel handed over, and the largest read in bytes: what offloads bought.
    public private(set) var superPacketsRead = 0
    public private(set) var largestRead = 0

    /// The largest batch ``read(into:maximum:)`` returns by default: enough to amortise a wakeup, small enough to
    /// let writes in between. 64 reads of 64 KiB super-packets is 4 MiB.
    public static let defaultBatch = 64

    /// Creates the device. It starts down with MTU 1500; set both through ``Netlink``.
    public static func open(_ options: TunOptions) throws(NetlinkError) -> TunDevice {
        try open(options, attach: false)
    }

    /// Adds a queue to a multi-queue device: another fd on the same interface, for another I/O thread. The
    /// kernel spreads flows over the queues by hash. The device lives until every queue is closed.
    public func openQueue() throws(NetlinkError) -> TunDevice {
        guard options.multiQueue else {
            throw NetlinkError(
                operation: "add a queue to \(name)", code: EINVAL, kernelMessage: "not a multi-queue device")
        }
        var options = self.options
        options.name = name
        return try Self.open(options, attach: true)
    }

    private static func open(_ options: TunOptions, attach: Bool) throws(NetlinkError) -> TunDevice {
        var name = [CChar](repeating: 0, count: Int(CNL_IFNAMSIZ))
        var descriptor: Int32 = -1
        let wanted = options.name ?? ""
        var flags = options.virtioHeader ? CNL_TUN_VNET_HDR : 0
        if options.multiQueue { flags |= CNL_TUN_MULTI_QUEUE }
        if attach { flags |= CNL_TUN_ATTACH }
        let result = cnl_tun_open(wanted, flags, &name, &descriptor)
        let operation = "open TUN device \(wanted.isEmpty ? "(any name)" : wanted)"
        guard result == 0 else { throw NetlinkError(operation: operation, code: -result) }
        var accepted: UInt32 = 0
        if options.virtioHeader, !options.offloads.isEmpty {
            let offloadResult = cnl_tun_set_offload(descriptor, options.offloads.rawValue, &accepted)
            guard offloadResult == 0 else {
                Glibc.close(descriptor)
                throw NetlinkError(operation: "enable TUN offloads on \(wanted)", code: -offloadResult)
            }
        }
        return TunDevice(
            name: String(decoding: name.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self),
            descriptor: descriptor, options: options, offloads: TunOffloads(rawValue: accepted))
    }

    private init(name: String, descriptor: CInt, options: TunOptions, offloads: TunOffloads) {
        self.name = name
        self.state = NIOLockedValueBox(descriptor)
        self.options = options
        self.virtioHeader = options.virtioHeader
        self.offloads = offloads
    }

    deinit { close() }

    /// The file descriptor, or -1 once closed. For `poll` and event loops; reading and writing go through this
    /// object.
    public var descriptor: CInt { state.withLockedValue { $0 } }

    /// Closes the fd, which deletes the device. Safe to call more than once.
    public func close() {
        let descriptor = state.withLockedValue { value -> CInt in
            defer { value = -1 }
            return value
        }
        if descriptor >= 0 { Glibc.close(descriptor) }
    }

    // MARK: - Reading

    /// Reads the packets that are ready, up to `maximum` reads, without blocking, and appends them to `packets`
    /// (a super-packet becomes several). Returns the number of packets appended; 0 means nothing was ready.
    public func read(into packets: inout [ByteBuffer], maximum: Int = TunDevice.defaultBatch) throws(NetlinkError)
        -> Int
    {
        var read: [DevicePacket] = []
        let count = try readDevicePackets(into: &read, maximum: maximum)
        packets += read.map(\.bytes)
        return count
    }

    public var readinessDescriptor: CInt { descriptor }

    public var takesOffloads: Bool { virtioHeader && offloads.contains(.checksum) }

    public var drops: PacketDeviceDrops {
        var drops = PacketDeviceDrops()
        drops.malformedReads = malformedReads
        drops.fullWrites = droppedWrites
        return drops
    }

    public func readPackets(into packets: inout [DevicePacket], maximum: Int) throws -> Int {
        try readDevicePackets(into: &packets, maximum: maximum)
    }

    /// Reads up to `maximum` times, straight into reused buffers. With a virtio header, a TCP super-packet is kept
    /// whole when ``TunOptions/keepSuperPackets`` says so (its offload metadata says what the kernel left undone),
    /// and split into complete segments otherwise.
    public func readDevicePackets(into packets: inout [DevicePacket], maximum: Int) throws(NetlinkError) -> Int {
        let descriptor = self.descriptor
        guard descriptor >= 0 else { throw NetlinkError(operation: "read from \(name)", code: EBADF) }
        let before = packets.count
        var index = 0
        while index < maximum {
            if index == readBuffers.count { readBuffers.append(ByteBuffer()) }
            var buffer = ByteBuffer()
            swap(&buffer, &readBuffers[index])
            buffer.clear(minimumCapacity: Self.readCapacity)
            var result = 0
            buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: Self.readCapacity) { space in
                result = Glibc.read(descriptor, space.baseAddress, space.count)
                return max(result, 0)
            }
            readBuffers[index] = buffer
            if result < 0 {
                let code = errno
                if code == EAGAIN || code == EWOULDBLOCK { break }
                if code == EINTR { continue }
                throw NetlinkError(operation: "read from \(name)", code: code)
            }
            if result == 0 { break }
            index += 1
            largestRead = max(largestRead, result)
            guard virtioHeader else {
                packets.append(DevicePacket(bytes: buffer))
                continue
            }
            do {
                let header = try VirtioNetHeader(reading: &buffer)
                if header.gsoType != .none { superPacketsRead += 1 }
                let tcp = header.gsoType.base == .tcpv4 || header.gsoType.base == .tcpv6
                if options.keepSuperPackets, tcp || header.gsoType == .none {
                    packets.append(DevicePacket(bytes: buffer, offload: header.offload))
                } else {
                    var split: [ByteBuffer] = []
                    try SegmentationOffload.split(header, packet: buffer, into: &split)
                    packets += split.map { DevicePacket(bytes: $0) }
                }
            } catch {
                malformedReads += 1
            }
        }
        return packets.count - before
    }

    /// Waits until a read would find a packet, or `timeout` milliseconds pass (-1: forever). Returns whether
    /// one is ready.
    public func waitUntilReadable(timeout: Int32) -> Bool {
        var descriptor = pollfd(fd: self.descriptor, events: Int16(POLLIN), revents: 0)
        guard descriptor.fd >= 0 else { return false }
        let result = poll(&descriptor, 1, timeout)
        return result > 0 && descriptor.revents & Int16(POLLIN) != 0
    }

    // MARK: - Writing

    /// Writes IP packets with complete checksums. With a virtio header, consecutive segments of a TCP flow are
    /// joined first. Returns how many syscalls it took.
    @discardableResult
    public func write(_ packets: [ByteBuffer]) throws(NetlinkError) -> Int {
        let descriptor = self.descriptor
        guard descriptor >= 0 else { throw NetlinkError(operation: "write to \(name)", code: EBADF) }
        var writes = 0
        if virtioHeader {
            let items =
                offloads.contains(.tso4)
                ? TCPCoalescer.coalesce(packets) : packets.map { OffloadedPacket(header: .plain, packet: $0) }
            for item in items {
                var header = ByteBuffer()
                item.header.write(into: &header)
                try writeVector(descriptor, header, item.packet)
                writes += 1
            }
        } else {
            for packet in packets {
                try writeVector(descriptor, nil, packet)
                writes += 1
            }
        }
        return writes
    }

    /// Writes packets that already carry their offload metadata (a stack that builds super-segments or leaves
    /// checksums to the kernel). Without a virtio header, metadata must be absent. Returns the syscalls made.
    @discardableResult
    public func write(offloaded packets: [OffloadedPacket]) throws(NetlinkError) -> Int {
        try writeEach(packets) { ($0.header, $0.packet) }
        return packets.count
    }

    public func writePackets(_ packets: [DevicePacket]) throws {
        try writeDevicePackets(packets)
    }

    /// Writes packets with their offload metadata, turned into the virtio header here. Without a virtio header,
    /// metadata must be absent.
    public func writeDevicePackets(_ packets: [DevicePacket]) throws(NetlinkError) {
        try writeEach(packets) { (VirtioNetHeader(offload: $0.offload, packet: $0.bytes), $0.bytes) }
    }

    /// One write per packet: its virtio header (which must be plain on a TUN without one) in front of its bytes.
    private func writeEach<Item>(
        _ items: [Item], _ parts: (Item) -> (header: VirtioNetHeader, bytes: ByteBuffer)
    ) throws(NetlinkError) {
        let descriptor = self.descriptor
        guard descriptor >= 0 else { throw NetlinkError(operation: "write to \(name)", code: EBADF) }
        var scratch = ByteBuffer()
        for item in items {
            let (header, bytes) = parts(item)
            if virtioHeader {
                scratch.clear()
                header.write(into: &scratch)
                try writeVector(descriptor, scratch, bytes)
            } else {
                precondition(header == .plain, "offload metadata on a TUN without a virtio header")
                try writeVector(descriptor, nil, bytes)
            }
        }
    }

    private func writeVector(_ descriptor: CInt, _ header: ByteBuffer?, _ packet: ByteBuffer) throws(NetlinkError) {
        let result: Int = packet.withUnsafeReadableBytes { body in
            guard let header else { return Glibc.write(descriptor, body.baseAddress, body.count) }
            return header.withUnsafeReadableBytes { head in
                var vectors = [
                    iovec(iov_base: UnsafeMutableRawPointer(mutating: head.baseAddress), iov_len: head.count),
                    iovec(iov_base: UnsafeMutableRawPointer(mutating: body.baseAddress), iov_len: body.count),
                ]
                return writev(descriptor, &vectors, 2)
            }
        }
        if result < 0 {
            let code = errno
            if code == EAGAIN || code == EWOULDBLOCK || code == ENOBUFS {
                droppedWrites += 1
                return
            }
            throw NetlinkError(operation: "write to \(name)", code: code)
        }
    }
}
