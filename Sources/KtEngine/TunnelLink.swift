import KtTunnel
import NIOConcurrencyHelpers
import NIOCore

/// The tunnel the engine dials through, which can change under it: the session replaces the client when the
/// port-forward or the SSH connection drops and comes back. While there is none, new dials wait (up to
/// `dialWait`) for the next one; flows of a lost client end with it.
public final class TunnelLink: Sendable {
    struct State {
        var client: TunnelClient?
        var generation = 0
        /// Clients put in place so far.
        var clients = 0
        var waiters: [EventLoopPromise<TunnelClient>] = []
        var observers: [@Sendable (TunnelClient) -> Void] = []
    }

    private let state = NIOLockedValueBox(State())
    /// How long a dial waits for a tunnel before it fails as timed out.
    public let dialWait: TimeAmount

    public init(dialWait: TimeAmount = .seconds(10)) {
        self.dialWait = dialWait
    }

    /// How often a tunnel was put in place after the first one: the session's reconnections.
    public var reconnects: Int { state.withLockedValue { max(0, $0.clients - 1) } }

    /// The tunnel's state for a reader: `connecting` before the first client, `connected`, `reconnecting`.
    public var condition: String {
        state.withLockedValue { $0.client != nil ? "connected" : ($0.clients > 0 ? "reconnecting" : "connecting") }
    }

    /// The client in use, if any.
    public var client: TunnelClient? { state.withLockedValue { $0.client } }

    /// Puts a new client in place (nil: the tunnel is down); waiting dials go on with it, observers hear of it.
    public func set(_ client: TunnelClient?) {
        let (waiters, observers) = state.withLockedValue {
            state -> ([EventLoopPromise<TunnelClient>], [@Sendable (TunnelClient) -> Void]) in
            state.client = client
            state.generation += 1
            guard client != nil else { return ([], []) }
            state.clients += 1
            defer { state.waiters = [] }
            return (state.waiters, state.observers)
        }
        guard let client else { return }
        for waiter in waiters { waiter.succeed(client) }
        for observer in observers { observer(client) }
    }

    /// Calls `observer` with every client put in place from now on (and the current one, if any).
    public func observe(_ observer: @escaping @Sendable (TunnelClient) -> Void) {
        let current = state.withLockedValue { state -> TunnelClient? in
            state.observers.append(observer)
            return state.client
        }
        if let current { observer(current) }
    }

    /// A client, now or once one is set; fails with `TunnelError.connectionLost` after `dialWait`.
    public func waitForClient(on eventLoop: any EventLoop) -> EventLoopFuture<TunnelClient> {
        let promise = eventLoop.makePromise(of: TunnelClient.self)
        let current = state.withLockedValue { state -> TunnelClient? in
            if let client = state.client, client.failure == nil { return client }
            state.waiters.append(promise)
            return nil
        }
        if let current { return eventLoop.makeSucceededFuture(current) }
        eventLoop.scheduleTask(in: dialWait) { [state] in
            // Still waiting (set() takes the waiters it completes): time is up. A promise completes only once.
            let waiting = state.withLockedValue { state -> Bool in
                let before = state.waiters.count
                state.waiters.removeAll { $0.futureResult === promise.futureResult }
                return state.waiters.count < before
            }
            if waiting { promise.fail(TunnelError.connectionLost) }
        }
        return promise.futureResult
    }

    /// Dials `host:port` from the cluster side. With a tunnel in place the dial goes straight to its connection's
    /// event loop (one hop from the caller's thread); otherwise it waits on `eventLoop` for the next tunnel.
    public func openTCP(host: String, port: Int, on eventLoop: any EventLoop) -> EventLoopFuture<TunnelFlow> {
        if let client = state.withLockedValue({ $0.client }), client.failure == nil {
            return client.openTCPFuture(host: host, port: port)
        }
        return waitForClient(on: eventLoop).flatMap { client in
            client.openTCPFuture(host: host, port: port)
        }
    }
}
