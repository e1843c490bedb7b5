#if canImport(Glibc)
    import Glibc
#endif

/// Process-wide malloc settings for moving bytes through SSH.
///
/// swift-nio-ssh builds each packet in a fresh buffer of up to 128 KiB. glibc serves blocks that size with mmap (or
/// from a heap it trims back to the kernel after every burst), so every packet paid page faults and zeroing: a third
/// of the tunnel's throughput on the bench (3.5 against 4.5-4.7 Gbit/s through one flow). Keeping blocks up to
/// 4 MiB on the heap and trimming only above 16 MiB of free memory removes that; the price is at most 16 MiB of
/// freed memory kept for reuse.
public enum AllocatorTuning {
    public static let mmapThreshold: Int32 = 4 << 20
    public static let trimThreshold: Int32 = 16 << 20

    /// Gives freed heap memory back to the kernel (glibc's `malloc_trim(0)`, every arena): after a burst of traffic
    /// the buffers it used stay with the process otherwise (ktctl held 187 MB after a benchmark, 50 MB before it).
    /// Costs a walk of the heaps: call it when idle. Returns false where it cannot.
    @discardableResult
    public static func trim() -> Bool {
        #if canImport(Glibc)
            typealias MallocTrim = @convention(c) (Int) -> CInt
            guard let symbol = dlsym(dlopen(nil, RTLD_NOW), "malloc_trim") else { return false }
            _ = unsafeBitCast(symbol, to: MallocTrim.self)(0)
            return true
        #else
            return false
        #endif
    }

    /// Applies the settings; call once at start, before the event loops run. Returns false where it cannot.
    @discardableResult
    public static func apply() -> Bool {
        #if canImport(Glibc)
            // Glibc's Swift module leaves out <malloc.h>, so mallopt is looked up. M_MMAP_THRESHOLD is -3 and
            // M_TRIM_THRESHOLD is -1 there.
            typealias Mallopt = @convention(c) (CInt, CInt) -> CInt
            guard let symbol = dlsym(dlopen(nil, RTLD_NOW), "mallopt") else { return false }
            let mallopt = unsafeBitCast(symbol, to: Mallopt.self)
            return mallopt(-3, mmapThreshold) == 1 && mallopt(-1, trimThreshold) == 1
        #else
            return false
        #endif
    }
}
