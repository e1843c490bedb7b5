/// Every timer of one connection, as one value: a deadline per purpose (nil: not running) and the earliest of them,
/// which is all the stack's timer heap needs to know. Which one fired is the connection's business
/// (`TCPConnection.fireTimers`); this value only keeps time. (smoltcp keeps its timers the same way, as data in the
/// socket.)
struct TCPTimers {
    /// Retransmission, SYN/SYN-ACK retransmission, or (with `persisting`) the persist timer's probe.
    var retransmit: StackInstant?
    /// The retransmit deadline is the persist timer: nothing is in flight and the peer's window cannot take data.
    var persisting = false
    /// How long an owed ACK may wait for a second segment to share it.
    var delayedAcknowledgement: StackInstant?
    /// Tail-loss probe (RFC 8985 §7): fires before the RTO when the last segments of a flight may be lost, so that
    /// the receiver's SACK reveals the loss and fast recovery repairs it instead of a timeout.
    var probe: StackInstant?
    /// RACK's reordering window (RFC 8985 §6.2): a hole still there when it ends is a loss.
    var lossDetection: StackInstant?
    /// The next keep-alive probe on an idle flow, and how many went unanswered.
    var keepAlive: StackInstant?
    var keepAliveProbesSent = 0
    /// TIME-WAIT's end.
    var timeWait: StackInstant?

    /// The earliest deadline. By hand, not with an array and compactMap: this runs after every segment and must not
    /// allocate.
    var next: StackInstant? {
        func earlier(_ a: StackInstant?, _ b: StackInstant?) -> StackInstant? {
            guard let a else { return b }
            guard let b else { return a }
            return a < b ? a : b
        }
        return earlier(
            earlier(earlier(retransmit, probe), earlier(lossDetection, delayedAcknowledgement)),
            earlier(keepAlive, timeWait))
    }

    /// Whether `deadline` is set and has come.
    static func expired(_ deadline: StackInstant?, at now: StackInstant) -> Bool {
        deadline.map { !(now < $0) } ?? false
    }
}
