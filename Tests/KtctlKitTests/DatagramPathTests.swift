import Foundation
import KtEngine
import KtTunnel
import KtWire
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import NamespaceTestSupport
import ShadowKit
import Testing

/// The datagram channel is opened again when the shadow closes it (here: it ends a channel on a malformed frame, as
/// it must), so DNS, UDP and ping come back within 5 s instead of staying dead until the SSH connection drops. A
/// real kt-shadow server in this process; a UDP echo on loopback behind it.
@Suite(.serialized) struct DatagramPathTests {
    /// Sends every datagram back to where it came from.
    final class Echo: ChannelInboundHandler, Sendable {
        typealias InboundIn = AddressedEnvelope<ByteBuffer>
        typealias OutboundOut = AddressedEnvelope<ByteBuffer>
        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            let envelope = unwrapInboundIn(data)
            context.writeAndFlush(
                wrapOutboundOut(AddressedEnvelope(remoteAddress: envelope.remoteAddress, data: envelope.data)),
                promise: nil)
        }
    }

    /// On ``DedicatedExecutor``: its waits are timed, and the concurrency pool is shared with the other suites.
    @Test func aClosedDatagramChannelIsOpenedAgainWithinFiveSeconds() async throws {
        try await onDedicatedThreads { try await reopen() }
    }

    func reopen() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let echo = try await DatagramBootstrap(group: group)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(Echo()) }
            }
            .bind(host: "127.0.0.1", port: 0).get()
        let echoPort = UInt16(try #require(echo.localAddress?.port))
        let key = SessionKey()
        let host = SessionKey()
        var configuration = ShadowConfiguration(
            listen: try SocketAddress(ipAddress: "127.0.0.1", port: 0), authorizedKeys: [key.sshPublicKey],
            hostKey: host.sshPrivateKey)
        configuration.resolver = ResolvConf(nameservers: [])
        configuration.hosts = HostsFile()
        var logger = Logger(label: "test")
        logger.logLevel = .warning
        let server = ShadowServer(configuration: configuration, group: group, logger: logger)
        let port = try #require(try await server.start().port)
        let client = try await TunnelClient.connect(
            group: group, configuration: TunnelConfiguration(key: key, hostKey: host.sshPublicKey), logger: logger,
            transport: TunnelClient.tcp(host: "127.0.0.1", port: port))
        let answers = NIOLockedValueBox<[String]>([])
        let link = TunnelLink()
        let path = DatagramPath(link: link, logger: logger) { frame in
            answers.withLockedValue { $0.append(String(buffer: frame.payload)) }
        }
        link.set(client)

        func waitForChannel(after previous: TunnelDatagramChannel?) async -> TunnelDatagramChannel? {
            let deadline = ContinuousClock.now + .seconds(5)
            while ContinuousClock.now < deadline {
                if let channel = path.channel, channel !== previous { return channel }
                try? await Task.sleep(for: .milliseconds(20))
            }
            // Once more after the deadline: a task the loaded machine did not run for the whole wait has not looked.
            if let channel = path.channel, channel !== previous { return channel }
            return nil
        }
        /// The echo of `text`, or nil when none came within 3 s.
        func echoed(_ text: String) async -> String? {
            let before = answers.withLockedValue { $0.count }
            path.send(
                DatagramFrame(
                    kind: .udp, flow: 7, address: .v4(IPv4Address(127, 0, 0, 1)), port: echoPort,
                    payload: ByteBuffer(string: text)))
            let deadline = ContinuousClock.now + .seconds(3)
            while ContinuousClock.now < deadline {
                if let answer = answers.withLockedValue({ $0.count > before ? $0[before] : nil }) { return answer }
                try? await Task.sleep(for: .milliseconds(20))
            }
            return answers.withLockedValue { $0.count > before ? $0[before] : nil }
        }

        let first = try #require(await waitForChannel(after: nil))
        #expect(await echoed("one") == "one")
        // A malformed frame (length 1, below the minimum of 8): the shadow ends the channel.
        let broken = ContinuousClock.now
        first.channel.writeAndFlush(ByteBuffer(bytes: [0, 1, 0]), promise: nil)
        try? await first.channel.closeFuture.get()
        let second = try #require(await waitForChannel(after: first))
        #expect(await echoed("two") == "two")
        let back = ContinuousClock.now - broken
        print("datagram channel: closed by the shadow, echoes again after \(back)")
        #expect(back < .seconds(5))
        #expect(path.reopened == 1)
        #expect(second !== first)

        path.close()
        client.close()
        await server.stop()
        try await echo.close()
        try await group.shutdownGracefully()
    }
}
