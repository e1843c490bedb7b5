import Glibc
import KtWire
import NIOConcurrencyHelpers
import NIOCore

/// Where IP packets come from and go to: the TUN (``TunDevice``) or, in tests, ``MemoryPacketDevice``. Reads and
/// writes move batches; each packet carries its offload metadata (``PacketOffload``) beside its bytes, and only the
/// device knows how that metadata looks on its wire (the TUN's virtio header).
public protocol PacketDevice: AnyObject, Sendable {
    /// The interface name.
    var name: String { get }
    /// A descriptor that polls readable when a read would find a packet.
    var readinessDescriptor: CInt { get }
    /// Whether written packets may carry partial checksums and TCP super-segments (``PacketOffload``); without it
    /// every packet written must be complete.
    var takesOffloads: Bool { get }
    /// Appends the packets that are ready, after at most `maximum` reads, without blocking; returns how many.
    func readPackets(into packets: inout [DevicePacket], maximum: Int) throws -> Int
    /// Writes `packets` in order without blocking; a packet the device has no room for is dropped and counted.
    func writePackets(_ packets: [DevicePacket]) throws
    /// What the device dropped.
    var drops: PacketDeviceDrops { get }
}

/// Packets a device dropped.
public struct PacketDeviceDrops: Hashable, Sendable {
    /// Reads whose offload metadata could not be followed.
    public var malformedReads = 0
    /// Writes refused because the device's queue was full (as a NIC drops when its ring is full).
    public var fullWrites = 0
    public init() {}
}

extension VirtioNetHeader {
    /// The virtio header that asks the kernel for what `offload` says is left to do to `packet`.
    public init(offload: PacketOffload, packet: ByteBuffer) {
        guard let start = offload.checksumStart, let offset = offload.checksumOffset else {
            self = .plain
            return
        }
        self.init(
            flags: .needsChecksum, gsoType: .none, headerLength: 0, gsoSize: 0, checksumStart: start,
            checksumOffset: offset)
        if let size = offload.segmentSize {
            // TCP only: the data offset (in words) is the high nibble of the TCP header's byte 12.
            let dataOffset = packet.getInteger(at: packet.readerIndex + Int(start) + 12, as: UInt8.self) ?? 0x50
            gsoType = start == 40 ? .tcpv6 : .tcpv4
            gsoSize = size
            headerLength = start + UInt16(dataOffset >> 4) * 4
        }
    }

    /// The offload metadata this header carries, for a reader.
    public var offload: PacketOffload {
        var offload = PacketOffload(checksumVerified: flags.contains(.dataValid))
        if flags.contains(.needsChecksum) {
            offload.checksumStart = checksumStart
            offload.checksumOffset = checksumOffset
        }
        if gsoType != .none { offload.segmentSize = gsoSize }
        return offload
    }
}

/// An in-memory packet device: what the engine writes is collected, and packets are handed to it with
/// ``inject(_:)``. It polls readable (a pipe with a byte in it) while injected packets wait. Tests drive the engine with it
/// without root or a TUN. With `takesOffloads` the engine may write partial checksums and super-segments; the test
/// reads them back as a kernel would with ``takeWritten(completing:)``.
public final class MemoryPacketDevice: PacketDevice, @unchecked Sendable {
    public let name: String
    public let takesOffloads: Bool
    /// Packets the device keeps for the reader at most; more are dropped (a full queue).
    public let capacity: Int
    /// A pipe: a byte in it while packets wait.
    private let readEnd: CInt
    private let writeEnd: CInt
    private struct State {
        var toRead: [DevicePacket] = []
        var written: [DevicePacket] = []
        var drops = PacketDeviceDrops()
        var closed = false
    }
    private let state = NIOLockedValueBox(State())

    public init(name: String = "mem0", takesOffloads: Bool = false, capacity: Int = 4096) {
        self.name = name
        self.takesOffloads = takesOffloads
        self.capacity = capacity
        var ends: [CInt] = [-1, -1]
        if pipe(&ends) == 0 {
            for end in ends {
                _ = fcntl(end, F_SETFL, fcntl(end, F_GETFL) | O_NONBLOCK)
                _ = fcntl(end, F_SETFD, FD_CLOEXEC)
            }
        }
        readEnd = ends[0]
        writeEnd = ends[1]
    }

    deinit {
        Glibc.close(readEnd)
        Glibc.close(writeEnd)
    }

    public var readinessDescriptor: CInt { readEnd }

    private func signal() {
        var one: UInt8 = 1
        _ = Glibc.write(writeEnd, &one, 1)  // a full pipe already polls readable
    }

    public var drops: PacketDeviceDrops { state.withLockedValue { $0.drops } }

    /// Hands packets to the reader (the engine), as the kernel would route them into a TUN.
    public func inject(_ packets: [DevicePacket]) {
        state.withLockedValue { state in
            for packet in packets {
                if state.toRead.count < capacity { state.toRead.append(packet) } else { state.drops.fullWrites += 1 }
            }
        }
        signal()
    }

    public func readPackets(into packets: inout [DevicePacket], maximum: Int) throws -> Int {
        let taken = state.withLockedValue { state -> [DevicePacket] in
            let count = min(maximum, state.toRead.count)
            defer { state.toRead.removeFirst(count) }
            return Array(state.toRead.prefix(count))
        }
        if taken.isEmpty {
            // Empty now: drain the pipe (a later inject fills it again), then look once more for a racing inject.
            var drain = [UInt8](repeating: 0, count: 64)
            while Glibc.read(readEnd, &drain, drain.count) > 0 {}
            if state.withLockedValue({ !$0.toRead.isEmpty }) { signal() }
        }
        packets += taken
        return taken.count
    }

    public func writePackets(_ packets: [DevicePacket]) throws {
        if !takesOffloads {
            precondition(packets.allSatisfy { $0.offload == .none }, "offload metadata on a device that takes none")
        }
        state.withLockedValue { state in
            guard !state.closed else { return }
            // Copies: the writer may reuse its buffers once the write returns, as it may with a TUN.
            state.written += packets.map { DevicePacket(bytes: ByteBuffer(buffer: $0.bytes), offload: $0.offload) }
        }
    }

    /// What the engine wrote since the last call. With `completing`, each packet comes back as the kernel would
    /// take it: super-segments cut into segments and partial checksums completed.
    public func takeWritten(completing: Bool = true) -> [ByteBuffer] {
        let written = state.withLockedValue { state -> [DevicePacket] in
            defer { state.written.removeAll() }
            return state.written
        }
        var packets: [ByteBuffer] = []
        for packet in written {
            guard completing, packet.offload != .none else {
                packets.append(packet.bytes)
                continue
            }
            let header = VirtioNetHeader(offload: packet.offload, packet: packet.bytes)
            if (try? SegmentationOffload.split(header, packet: packet.bytes, into: &packets)) == nil {
                packets.append(packet.bytes)
            }
        }
        return packets
    }

    /// Stops taking writes (a device that went away).
    public func close() { state.withLockedValue { $0.closed = true } }
}

extension ByteBuffer {
    /// A copy with storage of its own.
    fileprivate init(buffer: ByteBuffer) {
        self.init(bytes: buffer.readableBytesView)
    }
}
