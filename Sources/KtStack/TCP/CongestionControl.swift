/// Which congestion controller a connection uses.
public enum CongestionControlAlgorithm: Sendable, Hashable {
    /// RFC 9438, Linux's default.
    case cubic
    /// RFC 5681 with RFC 6582's recovery.
    case newReno
}

/// The congestion window and what moves it: slow start, congestion avoidance (CUBIC or NewReno), and the
/// reactions to loss (fast recovery, RTO).
struct CongestionControl {
    let algorithm: CongestionControlAlgorithm
    /// The sender's maximum segment size in bytes.
    private(set) var mss: Int
    /// cwnd, in bytes.
    private(set) var window: Int
    /// ssthresh, in bytes.
    private(set) var slowStartThreshold = Int.max

    // CUBIC (RFC 9438 §4): state of the current congestion-avoidance epoch.
    private var cubicWindowMax: Double = 0
    private var cubicEpochStart: StackInstant?
    private var cubicK: Double = 0
    private var cubicRenoEstimate: Double = 0
    /// RFC 9438 §4.6: C = 0.4, beta = 0.7.
    private static let cubicC = 0.4
    private static let cubicBeta = 0.7

    init(algorithm: CongestionControlAlgorithm, mss: Int) {
        self.algorithm = algorithm
        self.mss = mss
        window = Self.initialWindow(mss)
    }

    /// RFC 6928: min(10 * MSS, max(2 * MSS, 14600)).
    static func initialWindow(_ mss: Int) -> Int { min(10 * mss, max(2 * mss, 14600)) }

    var inSlowStart: Bool { window < slowStartThreshold }

    mutating func updateMSS(_ mss: Int) {
        self.mss = mss
        window = max(window, 2 * mss)
    }

    /// New data was acknowledged outside recovery.
    mutating func onAcknowledged(bytes: Int, now: StackInstant, smoothedRTT: StackDuration?) {
        if inSlowStart {
            // RFC 5681 §3.1 with RFC 3465's L = 2: grow by what was acknowledged, at most 2 MSS per ACK.
            window += min(bytes, 2 * mss)
            return
        }
        switch algorithm {
        case .newReno:
            // About one MSS per RTT: MSS * MSS / cwnd per acknowledged MSS.
            window += max(1, mss * bytes / max(window, 1))
        case .cubic:
            cubicAvoidance(bytes: bytes, now: now, rtt: smoothedRTT)
        }
    }

    private mutating func cubicAvoidance(bytes: Int, now: StackInstant, rtt: StackDuration?) {
        let segment = Double(mss)
        let current = Double(window) / segment
        if cubicEpochStart == nil {
            cubicEpochStart = now
            if cubicWindowMax < current {
                cubicK = 0
                cubicWindowMax = current
            } else {
                // K = cubic_root(W_max * (1 - beta) / C)  (RFC 9438 eqn 2)
                cubicK = cubeRoot(cubicWindowMax * (1 - Self.cubicBeta) / Self.cubicC)
            }
            cubicRenoEstimate = current
        }
        let elapsed = now.since(cubicEpochStart ?? now).seconds + (rtt?.seconds ?? 0)
        // W_cubic(t) = C * (t - K)^3 + W_max  (eqn 1), evaluated one RTT ahead.
        let target = Self.cubicC * pow3(elapsed - cubicK) + cubicWindowMax
        // The Reno-friendly estimate (eqn 4): alpha = 3 * (1 - beta) / (1 + beta).
        let alpha = 3 * (1 - Self.cubicBeta) / (1 + Self.cubicBeta)
        cubicRenoEstimate += alpha * (Double(bytes) / segment) / max(current, 1)
        let goal = max(target, cubicRenoEstimate)
        if goal > current {
            // Grow by (goal - cwnd) / cwnd per acknowledged segment, at most 1.5x per RTT (§4.2).
            let growth = min((goal - current) / current, 0.5) * Double(bytes)
            window += max(1, Int(growth))
        } else {
            window += max(1, mss * bytes / max(window, 1) / 100)
        }
    }

    /// Loss detected by duplicate ACKs or SACK: enter fast recovery (RFC 5681 §3.2, RFC 9438 §4.6).
    mutating func onFastRetransmit(flightSize: Int) {
        let beta = algorithm == .cubic ? Self.cubicBeta : 0.5
        if algorithm == .cubic {
            let current = Double(window) / Double(mss)
            // Fast convergence (§4.7): release bandwidth when the window shrinks before reaching W_max.
            cubicWindowMax = current < cubicWindowMax ? current * (1 + Self.cubicBeta) / 2 : current
            cubicEpochStart = nil
        }
        slowStartThreshold = max(Int(Double(max(flightSize, window)) * beta), 2 * mss)
        window = slowStartThreshold
    }

    /// Recovery ended (the ACK covered the recovery point): deflate to ssthresh (RFC 6582 §3.2 step 3).
    mutating func onRecoveryEnd() {
        window = max(slowStartThreshold, 2 * mss)
    }

    /// The retransmission timer expired: one segment, slow start again (RFC 5681 §3.1 eqn 4).
    mutating func onTimeout(flightSize: Int) {
        if algorithm == .cubic {
            cubicWindowMax = Double(window) / Double(mss)
            cubicEpochStart = nil
        }
        slowStartThreshold = max(flightSize / 2, 2 * mss)
        window = mss
    }

    /// After an idle period longer than an RTO, restart from the initial window (RFC 5681 §4.1).
    mutating func onIdleRestart() {
        window = min(window, Self.initialWindow(mss))
        cubicEpochStart = nil
    }
}

private func pow3(_ value: Double) -> Double { value * value * value }

/// The real cube root by Newton's method, so the stack needs no math library (it imports only KtWire and NIOCore).
func cubeRoot(_ value: Double) -> Double {
    guard value != 0, value.isFinite else { return value }
    let magnitude = abs(value)
    var x = magnitude > 1 ? magnitude / 3 : 1
    for _ in 0..<100 {
        let next = (2 * x + magnitude / (x * x)) / 3
        if abs(next - x) <= 1e-12 * x { break }
        x = next
    }
    return value < 0 ? -x : x
}
