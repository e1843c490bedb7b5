import KtWire

/// The sender's knowledge of losses and its repair of them, apart from the connection's state machine (as smoltcp and
/// gVisor keep it): the SACK scoreboard, duplicate ACKs, fast recovery (RFC 6675, with RFC 6582's recovery point),
/// lost retransmissions (RACK, RFC 8985 §6.2, in its simplest form), the tail-loss probe's bookkeeping, and the head
/// retransmission a timeout owes.
struct LossRecovery {
    /// What the receiver holds beyond SND.UNA, from its SACK blocks.
    var scoreboard = SACKScoreboard()
    var duplicateAcknowledgements = 0
    /// Set while in fast recovery: the SND.MAX at its start (RFC 6582's `recover`).
    var recoveryPoint: TCPSequenceNumber?
    /// HighRxt (RFC 6675): below it, holes were already retransmitted in this recovery.
    var highestRetransmitted = TCPSequenceNumber(0)
    /// A tail-loss probe is out and no ACK has advanced since (one probe per episode), and where it started.
    var probeOutstanding = false
    var probeSequence: TCPSequenceNumber?
    /// SACK information in the ACK being processed showed a loss.
    var pendingRecovery = false
    /// Holes retransmitted in this recovery, by where they start: SND.MAX when the retransmission went, and when. If
    /// the receiver later SACKs bytes beyond that mark while the hole is at SND.UNA, the retransmission itself was
    /// lost, once a reordering window has passed too.
    var retransmittedHoles: [TCPSequenceNumber: (mark: TCPSequenceNumber, time: StackInstant)] = [:]
    /// A retransmission timeout expired: the next flush sends SND.UNA's segment even into a full congestion window or
    /// a closed receive window (its answer carries the window), once.
    var retransmitHead = false

    var inRecovery: Bool { recoveryPoint != nil }

    /// Whether `blocks` open with a D-SACK (RFC 2883): a first block below the ACK, or inside the second block.
    static func startsWithDuplicateReport(_ blocks: [TCPSACKBlock], acknowledgement: TCPSequenceNumber) -> Bool {
        guard let first = blocks.first else { return false }
        return !(acknowledgement < first.right)
            || (blocks.count > 1 && !(first.left < blocks[1].left) && !(blocks[1].right < first.right))
    }

    /// Fast recovery starts at `sendMaximum`; returns whether the sender must go back to SND.UNA for the first
    /// retransmission (no SACK information to find the holes with).
    mutating func enter(sendUnacknowledged: TCPSequenceNumber, sendMaximum: TCPSequenceNumber, sackPermitted: Bool)
        -> Bool
    {
        recoveryPoint = sendMaximum
        highestRetransmitted = sendUnacknowledged
        retransmittedHoles = [:]
        return !sackPermitted || scoreboard.isEmpty
    }

    /// A hole starting at `start` was retransmitted now, with SND.MAX at `sendMaximum`.
    mutating func retransmitted(hole start: TCPSequenceNumber, sendMaximum: TCPSequenceNumber, now: StackInstant) {
        retransmittedHoles[start] = (sendMaximum, now)
    }

    /// SND.UNA moved to `acknowledgement`.
    mutating func acknowledged(upTo acknowledgement: TCPSequenceNumber) {
        scoreboard.acknowledge(upTo: acknowledgement)
        duplicateAcknowledgements = 0
        for (start, _) in retransmittedHoles where start < acknowledgement { retransmittedHoles[start] = nil }
    }

    /// A full ACK: recovery is over.
    mutating func end() {
        recoveryPoint = nil
        retransmittedHoles = [:]
    }

    /// The retransmission timer expired: what SACK said is dropped (the receiver may renege), recovery ends, and the
    /// head is owed.
    mutating func timedOut() {
        probeOutstanding = false
        recoveryPoint = nil
        duplicateAcknowledgements = 0
        scoreboard.clear()
        retransmittedHoles = [:]
        retransmitHead = true
    }

    /// In recovery, whether the retransmission of the hole at SND.UNA was lost: bytes sent after it are SACKed and a
    /// reordering window has passed. Then the hole is due again (`highestRetransmitted` moves back to it) and nil is
    /// returned; if only the window has not passed yet, when to look again.
    mutating func checkLostRetransmission(
        sendUnacknowledged: TCPSequenceNumber, now: StackInstant, reorderWindow: StackDuration
    ) -> StackInstant? {
        guard recoveryPoint != nil, let record = retransmittedHoles[sendUnacknowledged],
            let highest = scoreboard.highestSacked, record.mark < highest
        else { return nil }
        if reorderWindow < now.since(record.time) {
            retransmittedHoles[sendUnacknowledged] = nil
            highestRetransmitted = sendUnacknowledged
            return nil
        }
        return record.time + reorderWindow + .microseconds(1)
    }
}
