/// Smoothed round-trip time and retransmission timeout (RFC 6298).
struct RTTEstimator {
    private(set) var smoothed: StackDuration?
    private(set) var variance = StackDuration.zero
    /// The current RTO, backoff included.
    private(set) var timeout: StackDuration
    private let initial: StackDuration
    private let minimum: StackDuration
    private let maximum: StackDuration
    /// How many times the timer expired in a row (the backoff exponent).
    private(set) var backoffs = 0

    init(initial: StackDuration, minimum: StackDuration, maximum: StackDuration) {
        timeout = initial
        self.initial = initial
        self.minimum = minimum
        self.maximum = maximum
    }

    /// Takes one RTT measurement (RFC 6298 §2.2, §2.3) and clears the backoff (§5.7 lets a new sample do so).
    mutating func sample(_ rtt: StackDuration) {
        let r = Double(rtt.nanoseconds)
        if let srtt = smoothed {
            // RTTVAR <- (1 - 1/4) * RTTVAR + 1/4 * |SRTT - R'|; SRTT <- (1 - 1/8) * SRTT + 1/8 * R'
            let s = Double(srtt.nanoseconds)
            let v = 0.75 * Double(variance.nanoseconds) + 0.25 * abs(s - r)
            variance = StackDuration(nanoseconds: UInt64(v))
            smoothed = StackDuration(nanoseconds: UInt64(0.875 * s + 0.125 * r))
        } else {
            smoothed = rtt
            variance = StackDuration(nanoseconds: rtt.nanoseconds / 2)
        }
        backoffs = 0
        recompute()
    }

    /// The timer expired: double the RTO (RFC 6298 §5.5), up to the maximum.
    mutating func backOff() {
        backoffs += 1
        timeout = min(timeout * 2, maximum)
    }

    /// Forgets the backoff without a new sample (the peer answered, e.g. by opening its window after probes).
    mutating func clearBackoff() {
        guard backoffs > 0 else { return }
        backoffs = 0
        if smoothed == nil { timeout = initial } else { recompute() }
    }

    private mutating func recompute() {
        guard let srtt = smoothed else { return }
        // RTO <- SRTT + max(G, K*RTTVAR), K = 4; the clock granularity G is ours: 1 µs.
        let value = srtt + max(StackDuration.microseconds(1), variance * 4)
        timeout = min(max(value, minimum), maximum)
    }
}
