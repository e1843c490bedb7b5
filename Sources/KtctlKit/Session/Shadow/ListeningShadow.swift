import KtEngine
import KtTunnel
import Logging
import NIOCore
import NIOPosix

/// A shadow that brings cluster ports here (exchange, preview; mesh next): what those commands share, once. The
/// local ports are checked before anything changes; then, each step through the session: the shadow pod and its
/// tunnel, its listeners on the target ports (reverse forwards to `127.0.0.1:<local>`), Ready. On the way out the
/// forwards drain (no connection open and none new for `quiet`, at most `drainTimeout`) before the tunnel and the pod
/// go, so whatever moved traffic to the shadow can move it back first.
public enum ListeningShadow {
    /// Fails, naming the port and the flag, when nothing accepts TCP on one of the local ports (UDP cannot be asked).
    public static func checkLocalPorts(
        _ ports: [PortMapping], what: (PortMapping) -> String, on eventLoop: any EventLoop
    )
        async throws
    {
        for port in ports where port.protocol == "TCP" {
            guard await localPortAnswers(port.local, on: eventLoop) else {
                throw ConnectError.other(
                    "nothing listens on 127.0.0.1:\(port.local)\(what(port)); start it first, or pass "
                        + "--skip-port-checking; nothing was changed")
            }
        }
    }

    /// Starts the shadow of `spec` with listeners for `ports` and waits until it is Ready. `beforeDrain` runs on the
    /// way out after what was recorded later and before the drain (scale mode takes the shadow out of its Service
    /// there).
    /// `use` is what `ktctl status` says of the Service (its ports and the connections through them are added).
    public static func start(
        _ spec: ShadowSpec, ports: [PortMapping], use: SessionStatus.ServiceUse, session: Session,
        options: ClusterOptions, group: EventLoopGroup, quiet: Duration, drainTimeout: Duration, logger: Logger,
        print: @escaping @Sendable (String) -> Void, beforeDrain: (@Sendable () async -> Void)? = nil
    ) async throws -> ShadowSession {
        let link = TunnelLink()
        let forwards = ReverseForwards(
            ports: ports.map {
                ReverseForwards.Port(remote: $0.targetPort, local: $0.local, udp: $0.protocol == "UDP")
            },
            link: link, logger: logger)
        var use = use
        use.ports = forwards.ports.map(\.description)
        session.status.update { $0.services.append(use) }
        session.status.sample { [use] status in
            guard let index = status.services.firstIndex(where: { $0.name == use.name && $0.state == use.state })
            else { return }
            status.services[index].incoming = SessionStatus.Incoming(forwards)
        }
        let shadow = ShadowSession(
            session: session, spec: spec, options: options, link: link, group: group, logger: logger,
            progress: { print("ktctl: \($0)") })
        try await shadow.start()
        try await forwards.waitUntilListening(on: group.next())
        session.onStop("let the forwarded connections finish") {
            await forwards.drain(quiet: quiet, timeout: drainTimeout)
            forwards.close()
        }
        if let beforeDrain { session.onStop("before the drain", beforeDrain) }
        try await shadow.waitUntilReady()
        return shadow
    }
}
