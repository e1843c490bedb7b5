import Dispatch
import Foundation
import Glibc
import NIOConcurrencyHelpers

/// SIGINT, SIGTERM and SIGHUP, handled from a session's first step: the first one stops the session (its work is
/// cancelled and what it did is undone), a second one while that is under way stops waiting for the undoing.
/// SIGHUP is the terminal going away: the session ends as on Ctrl-C, so a closed terminal never leaves resolv.conf
/// pointing at a resolver that is gone. SIGPIPE is ignored (a closed terminal must not kill the clean-up).
public final class SignalTrap: @unchecked Sendable {
    public static let signals: [Int32] = [SIGINT, SIGTERM, SIGHUP]

    struct State {
        var received: [Int32] = []
        var onFirst: (@Sendable (Int32) -> Void)?
        var onSecond: (@Sendable (Int32) -> Void)?
        var sources: [any DispatchSourceSignal] = []
    }

    /// Everything mutable, behind its lock (dispatch sources are thread-safe but not marked Sendable).
    private let state = NIOLockedValueBox(State())
    private let queue = DispatchQueue(label: "ktctl.signals")

    public init() {}

    /// Starts catching; from here on the default actions (which would end the process with nothing undone) are off.
    public func install() {
        signal(SIGPIPE, SIG_IGN)
        var sources: [any DispatchSourceSignal] = []
        for number in Self.signals {
            signal(number, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: number, queue: queue)
            source.setEventHandler { [weak self] in self?.received(number) }
            source.resume()
            sources.append(source)
        }
        state.withLockedValue { $0.sources = sources }
    }

    /// The first signal calls `first`; any later one calls `second`. A signal that came before these were set is
    /// delivered now.
    public func handle(first: @escaping @Sendable (Int32) -> Void, second: @escaping @Sendable (Int32) -> Void) {
        let pending = state.withLockedValue { state -> [Int32] in
            state.onFirst = first
            state.onSecond = second
            return state.received
        }
        if let signal = pending.first { first(signal) }
        if pending.count > 1 { second(pending[1]) }
    }

    /// Signals received so far.
    public var received: [Int32] { state.withLockedValue { $0.received } }

    private func received(_ number: Int32) {
        let (count, first, second) = state.withLockedValue { state in
            state.received.append(number)
            return (state.received.count, state.onFirst, state.onSecond)
        }
        if count == 1 { first?(number) } else { second?(number) }
    }

    /// `SIGINT` → `interrupt`, for messages.
    public static func name(_ number: Int32) -> String {
        switch number {
        case SIGINT: return "interrupt (Ctrl-C)"
        case SIGTERM: return "SIGTERM"
        case SIGHUP: return "SIGHUP (the terminal closed)"
        default: return "signal \(number)"
        }
    }
}
