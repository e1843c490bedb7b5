import Foundation
import KtTunnel
import NIOCore
import NIOPosix
import ShadowKit
import Testing

/// kt-shadow does not let connections that never log in pile up: each has `loginTimeout` to log in, and at most
/// `maximumUnauthenticated` may be logging in at once (more are closed at accept). A logged-in connection is
/// unaffected by either.
@Suite(.serialized, .enabled(if: tunnelLabUnavailable == nil, "needs root, iproute2, ssh, curl and python3"))
struct ShadowLoginTests {
    /// A TCP connection that says nothing; returns it, and how long until the shadow closed it (nil: still open
    /// after `wait`).
    static func idle(_ lab: TunnelLab, port: Int) async throws -> any Channel {
        let eventLoop = lab.group.next()
        return try await eventLoop.flatSubmit {
            ClientBootstrap(group: eventLoop).connect(host: "127.0.0.1", port: port)
        }.get()
    }

    static func closed(_ channel: any Channel, within wait: Duration) async -> Bool {
        let deadline = ContinuousClock.now + wait
        while ContinuousClock.now < deadline {
            if !channel.isActive { return true }
            try? await Task.sleep(for: .milliseconds(20))
        }
        return !channel.isActive
    }

    @Test func aConnectionThatDoesNotLogInIsClosedAfterTheTimeout() async throws {
        try await TunnelLab.with("ktlogin-t") { lab in
            let key = SessionKey()
            let (_, port) = try await lab.startShadow(keys: [key.sshPublicKey]) { configuration in
                configuration.loginTimeout = .milliseconds(500)
            }
            let silent = try await Self.idle(lab, port: port)
            let started = ContinuousClock.now
            #expect(await Self.closed(silent, within: .seconds(3)))
            let took = ContinuousClock.now - started
            #expect(took >= .milliseconds(400) && took < .seconds(2), "\(took)")
            // A client that logs in stays past the timeout and works.
            let client = try await lab.connect(port: port, key: key, hostKey: nil)
            defer { client.close() }
            try await Task.sleep(for: .seconds(1))
            #expect(client.failure == nil)
            #expect(try await client.probeCommand("kt-control"))
        }
    }

    @Test func connectionsPastTheUnauthenticatedCapAreClosedAtAccept() async throws {
        try await TunnelLab.with("ktlogin-c") { lab in
            let key = SessionKey()
            let (_, port) = try await lab.startShadow(keys: [key.sshPublicKey]) { configuration in
                configuration.maximumUnauthenticated = 2
                configuration.loginTimeout = .seconds(30)
            }
            let first = try await Self.idle(lab, port: port)
            let second = try await Self.idle(lab, port: port)
            // Let the shadow accept both before the third arrives.
            try await Task.sleep(for: .milliseconds(200))
            let third = try await Self.idle(lab, port: port)
            #expect(await Self.closed(third, within: .seconds(2)))
            #expect(first.isActive && second.isActive)
            // Once those go, logging in works again.
            try await first.close()
            try await second.close()
            try await Task.sleep(for: .milliseconds(200))
            let client = try await lab.connect(port: port, key: key, hostKey: nil)
            #expect(client.failure == nil)
            client.close()
        }
    }
}
