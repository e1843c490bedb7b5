import KtTunnel
import Logging
import NIOConcurrencyHelpers
import NIOCore

/// One `kt-udp` datagram channel kept open on the session's current tunnel: opened for each new tunnel, and opened
/// again when it closes while its tunnel lives (the shadow ends a channel on a malformed frame, an SSH channel can
/// be closed on its own). Without this, DNS, UDP and ping stayed dead until the whole SSH connection dropped.
public final class DatagramPath: Sendable {
    /// The first pause before opening again, doubling to `maximumDelay`: a closed channel is usually reopened at the
    /// first try, within a round trip; a shadow that keeps refusing is not hammered.
    public static let firstDelay = TimeAmount.milliseconds(100)
    public static let maximumDelay = TimeAmount.seconds(2)

    struct State {
        var channel: TunnelDatagramChannel?
        var client: TunnelClient?
        var closed = false
        /// Reopenings so far (for tests and the session's counters).
        var reopened = 0
    }

    private let state = NIOLockedValueBox(State())
    private let link: TunnelLink
    private let logger: Logger
    private let onFrame: @Sendable (DatagramFrame) -> Void
    private let onChannel: @Sendable (TunnelDatagramChannel) -> Void

    /// `onFrame` gets every frame from the shadow; `onChannel` every channel opened (the previous one is closed).
    public init(
        link: TunnelLink, logger: Logger, onFrame: @escaping @Sendable (DatagramFrame) -> Void,
        onChannel: @escaping @Sendable (TunnelDatagramChannel) -> Void = { _ in }
    ) {
        self.link = link
        self.logger = logger
        self.onFrame = onFrame
        self.onChannel = onChannel
        link.observe { [weak self] client in self?.tunnelChanged(client) }
    }

    /// The channel open now, if any.
    public var channel: TunnelDatagramChannel? { state.withLockedValue { $0.channel } }

    /// How many times a closed channel was opened again on the same tunnel.
    public var reopened: Int { state.withLockedValue { $0.reopened } }

    /// Sends `frame` on the channel open now; dropped (as a datagram may be) while there is none.
    public func send(_ frame: DatagramFrame) {
        state.withLockedValue { $0.channel }?.send(frame)
    }

    public func close() {
        let channel = state.withLockedValue { state -> TunnelDatagramChannel? in
            state.closed = true
            defer { state.channel = nil }
            return state.channel
        }
        channel?.close()
    }

    func tunnelChanged(_ client: TunnelClient) {
        guard client.serverIsShadow else { return }
        let previous = state.withLockedValue { state -> TunnelDatagramChannel? in
            state.client = client
            defer { state.channel = nil }
            return state.channel
        }
        previous?.close()
        // A tunnel that ends (lost, or closed at the session's end) takes its channel with it for good.
        client.closeFuture.whenComplete { [weak self] _ in
            self?.state.withLockedValue { state in
                if state.client === client { state.client = nil }
            }
        }
        open(on: client, delay: nil)
    }

    /// Opens a channel on `client` (after `delay`), unless the path is closed or the tunnel changed or ended. All on
    /// the tunnel's event loop, so a reopening takes a round trip whatever else the process is doing.
    func open(on client: TunnelClient, delay: TimeAmount?) {
        let eventLoop = client.eventLoop
        guard let delay else { return attempt(on: client, after: Self.firstDelay) }
        eventLoop.scheduleTask(in: delay) { [weak self] in self?.attempt(on: client, after: delay) }
    }

    private func attempt(on client: TunnelClient, after delay: TimeAmount) {
        guard isCurrent(client) else { return }
        client.openDatagramChannelFuture { [weak self] frame in self?.onFrame(frame) }.whenComplete {
            [weak self] result in
            guard let self else { return }
            switch result {
            case .success(let channel):
                let kept = self.state.withLockedValue { state -> Bool in
                    guard !state.closed, state.client === client else { return false }
                    state.channel = channel
                    return true
                }
                guard kept else {
                    channel.close()
                    return
                }
                self.onChannel(channel)
                channel.channel.closeFuture.whenComplete { [weak self] _ in self?.channelClosed(channel, on: client) }
            case .failure(let error):
                guard self.isCurrent(client) else { return }
                let next = min(delay * 2, Self.maximumDelay)
                self.logger.warning(
                    "no datagram channel (DNS, UDP and ping wait): \(error); trying again in \(next)")
                self.open(on: client, delay: next)
            }
        }
    }

    func channelClosed(_ channel: TunnelDatagramChannel, on client: TunnelClient) {
        let reopen = state.withLockedValue { state -> Bool in
            guard state.channel === channel else { return false }
            state.channel = nil
            guard !state.closed, state.client === client, client.failure == nil else { return false }
            state.reopened += 1
            return true
        }
        guard reopen else { return }
        logger.info("the datagram channel closed; opening it again (DNS, UDP and ping)")
        open(on: client, delay: Self.firstDelay)
    }

    func isCurrent(_ client: TunnelClient) -> Bool {
        state.withLockedValue { !$0.closed && $0.client === client } && client.failure == nil
    }
}
