import NIOCore

/// The Internet checksum (RFC 1071): the one's complement of the one's-complement sum of 16-bit words.
///
/// Written for speed: bytes are summed as native-order 32-bit loads into four 64-bit accumulators, which
/// cannot overflow for any packet, and byte order is fixed once at the end (RFC 1071 §2(B): the sum is
/// independent of byte order). Data may be added in pieces of any length; a piece that starts at an odd
/// offset is accounted for by swapping its partial sum (RFC 1071 §2(A)).
public struct InternetChecksum: Sendable {
    /// The running sum of native-order words, not yet folded to 16 bits.
    private var sum: UInt64 = 0
    /// True when an odd number of bytes has been added so far.
    private var odd = false

    /// An empty sum.
    public init() {}

    // MARK: - Adding data

    /// Adds raw bytes.
    public mutating func add(_ bytes: UnsafeRawBufferPointer) {
        var partial = Self.fold(Self.nativeSum(bytes))
        if odd { partial = partial.byteSwapped }
        sum &+= UInt64(partial)
        if bytes.count & 1 == 1 { odd.toggle() }
    }

    /// Adds the readable bytes of `buffer`.
    public mutating func add(_ buffer: ByteBuffer) {
        buffer.withUnsafeReadableBytes { add($0) }
    }

    /// Adds `length` bytes of `buffer` starting at absolute index `index`.
    public mutating func add(_ buffer: ByteBuffer, at index: Int, length: Int) {
        buffer.withVeryUnsafeBytes { all in
            add(UnsafeRawBufferPointer(rebasing: all[index..<(index + length)]))
        }
    }

    /// Adds bytes from an array.
    public mutating func add(_ bytes: [UInt8]) {
        bytes.withUnsafeBytes { add($0) }
    }

    /// Adds one 16-bit word given as its value (the field's value, not its bytes). Must be at an even offset.
    public mutating func add(word: UInt16) {
        precondition(!odd, "a 16-bit word can only be added at an even offset")
        sum &+= UInt64(word.bigEndian)
    }

    /// Adds a 32-bit value as two words. Must be at an even offset.
    public mutating func add(doubleWord: UInt32) {
        add(word: UInt16(truncatingIfNeeded: doubleWord >> 16))
        add(word: UInt16(truncatingIfNeeded: doubleWord))
    }

    // MARK: - Pseudo-headers

    /// Adds the IPv4 pseudo-header of a TCP or UDP checksum (RFC 9293 §3.1, RFC 768).
    public mutating func addPseudoHeader(
        source: IPv4Address, destination: IPv4Address, protocol number: IPProtocol, length: Int
    ) {
        add(doubleWord: source.bits)
        add(doubleWord: destination.bits)
        add(word: UInt16(number.rawValue))
        add(word: UInt16(truncatingIfNeeded: length))
    }

    /// Adds the IPv6 pseudo-header of an upper-layer checksum (RFC 8200 §8.1).
    public mutating func addPseudoHeader(
        source: IPv6Address, destination: IPv6Address, protocol number: IPProtocol, length: Int
    ) {
        for address in [source.bits, destination.bits] {
            for shift in stride(from: 96, through: 0, by: -32) {
                add(doubleWord: UInt32(truncatingIfNeeded: address >> UInt128(shift)))
            }
        }
        add(doubleWord: UInt32(truncatingIfNeeded: length))
        add(word: UInt16(number.rawValue))
    }

    // MARK: - Results

    /// The checksum to store in a header: the complement of the folded sum, as a field value.
    public var value: UInt16 {
        ~UInt16(bigEndian: Self.fold(sum))
    }

    /// The folded sum itself, not complemented: what a device that completes checksums (virtio-net
    /// `NEEDS_CSUM`, the kernel's CHECKSUM_PARTIAL) expects to find in the checksum field, covering the
    /// pseudo-header only.
    public var foldedSum: UInt16 { ~value }

    /// True if the data added, checksum field included, sums to all ones: the checksum is correct.
    public var isValid: Bool { value == 0 }

    /// The checksum of a single piece of data.
    public static func of(_ bytes: UnsafeRawBufferPointer) -> UInt16 {
        var checksum = InternetChecksum()
        checksum.add(bytes)
        return checksum.value
    }

    // MARK: - Incremental update (RFC 1624)

    /// The new checksum after one 16-bit field changed from `old` to `new`: HC' = ~(~HC + ~m + m') (RFC 1624
    /// eqn. 3), which never produces the 0xFFFF that eqn. 2 can.
    public static func updated(_ checksum: UInt16, replacing old: UInt16, with new: UInt16) -> UInt16 {
        var sum = UInt32(~checksum) + UInt32(~old) + UInt32(new)
        sum = (sum & 0xFFFF) + (sum >> 16)
        sum = (sum & 0xFFFF) + (sum >> 16)
        return ~UInt16(truncatingIfNeeded: sum)
    }

    /// The new checksum after a 32-bit field (an IPv4 address, a sequence number) changed.
    public static func updated(_ checksum: UInt16, replacing old: UInt32, with new: UInt32) -> UInt16 {
        let high = updated(
            checksum, replacing: UInt16(truncatingIfNeeded: old >> 16), with: UInt16(truncatingIfNeeded: new >> 16))
        return updated(high, replacing: UInt16(truncatingIfNeeded: old), with: UInt16(truncatingIfNeeded: new))
    }

    /// The new checksum after an IPv6 address in the pseudo-header changed.
    public static func updated(_ checksum: UInt16, replacing old: IPv6Address, with new: IPv6Address) -> UInt16 {
        var result = checksum
        for shift in stride(from: 96, through: 0, by: -32) {
            result = updated(
                result, replacing: UInt32(truncatingIfNeeded: old.bits >> UInt128(shift)),
                with: UInt32(truncatingIfNeeded: new.bits >> UInt128(shift)))
        }
        return result
    }

    // MARK: - The summing loop

    /// Folds a 64-bit one's-complement sum to 16 bits with end-around carries.
    @inline(__always)
    static func fold(_ value: UInt64) -> UInt16 {
        var sum = (value & 0xFFFF_FFFF) + (value >> 32)
        sum = (sum & 0xFFFF_FFFF) + (sum >> 32)
        sum = (sum & 0xFFFF) + (sum >> 16)
        sum = (sum & 0xFFFF) + (sum >> 16)
        return UInt16(truncatingIfNeeded: sum)
    }

    /// The sum of `bytes` as native-order 16-bit words (a lone last byte is padded with zero), unfolded.
    ///
    /// 32-bit words are added into 64-bit accumulators, so no carry is lost for up to 2^32 words per
    /// accumulator; four independent accumulators let the CPU add in parallel and the compiler vectorise.
    @inline(__always)
    static func nativeSum(_ bytes: UnsafeRawBufferPointer) -> UInt64 {
        let count = bytes.count
        guard let base = bytes.baseAddress, count > 0 else { return 0 }
        var a: UInt64 = 0
        var b: UInt64 = 0
        var c: UInt64 = 0
        var d: UInt64 = 0
        var offset = 0
        while offset + 32 <= count {
            let p = base + offset
            a &+=
                UInt64(p.loadUnaligned(as: UInt32.self)) &+ UInt64(p.loadUnaligned(fromByteOffset: 16, as: UInt32.self))
            b &+=
                UInt64(p.loadUnaligned(fromByteOffset: 4, as: UInt32.self))
                &+ UInt64(p.loadUnaligned(fromByteOffset: 20, as: UInt32.self))
            c &+=
                UInt64(p.loadUnaligned(fromByteOffset: 8, as: UInt32.self))
                &+ UInt64(p.loadUnaligned(fromByteOffset: 24, as: UInt32.self))
            d &+=
                UInt64(p.loadUnaligned(fromByteOffset: 12, as: UInt32.self))
                &+ UInt64(p.loadUnaligned(fromByteOffset: 28, as: UInt32.self))
            offset += 32
        }
        while offset + 4 <= count {
            a &+= UInt64((base + offset).loadUnaligned(as: UInt32.self))
            offset += 4
        }
        if offset + 2 <= count {
            b &+= UInt64((base + offset).loadUnaligned(as: UInt16.self))
            offset += 2
        }
        if offset < count {
            // A lone byte is the first byte of a word whose second byte is zero.
            var word: UInt16 = 0
            withUnsafeMutableBytes(of: &word) { $0[0] = base.load(fromByteOffset: offset, as: UInt8.self) }
            c &+= UInt64(word)
        }
        return a &+ b &+ c &+ d
    }
}
