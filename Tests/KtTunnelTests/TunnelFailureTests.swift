import Foundation
import KtTunnel
import NIOConcurrencyHelpers
import NIOCore
import NamespaceTestSupport
import Testing

/// What happens when the SSH connection's TCP stream dies or goes silent, and when a reader is slow.
@Suite(
    .serialized,
    .enabled(if: tunnelLabUnavailable == nil && TestNamespace.findExecutable("socat") != nil, "needs root and socat"))
struct TunnelFailureTests {
    /// A `socat` relay between the client and the shadow, so the test can kill or freeze the TCP connection the
    /// SSH session runs on.
    static func relay(_ lab: TunnelLab, to port: Int) throws -> (BackgroundProcess, Int) {
        let relayPort = Int.random(in: 20_000..<30_000)
        let process = try lab.spawn([
            "socat", "TCP-LISTEN:\(relayPort),bind=127.0.0.1,reuseaddr", "TCP:127.0.0.1:\(port)",
        ])
        let deadline = Date().addingTimeInterval(5)
        while Date() < deadline {
            if let listening = try? lab.shell("ss -Hltn sport = :\(relayPort)"), !listening.output.isEmpty { break }
            usleep(20_000)
        }
        return (process, relayPort)
    }

    @Test func killingTheTCPConnectionEndsEveryFlowWithAnError() async throws {
        try await TunnelLab.with("kttun-kill") { lab in
            let key = SessionKey()
            let (_, port) = try await lab.startShadow(keys: [key.sshPublicKey])
            let (relay, relayPort) = try Self.relay(lab, to: port)
            let client = try await lab.connect(port: relayPort, key: key, hostKey: nil)
            defer { client.close() }
            let echo = try await lab.echoServer()

            let flows = 10
            let outcomes = try await withThrowingTaskGroup(of: String.self) { group in
                let started = NIOLockedValueBox(0)
                for _ in 0..<flows {
                    let flow = try await client.openTCP(host: "127.0.0.1", port: echo)
                    group.addTask {
                        // A hang fails; slowness does not: with the other suites moving gigabytes beside it, the
                        // ten echoes and the close took up to 20 s of this test here.
                        try await withDeadline(seconds: 30) {
                            let async = try await flow.asyncChannel()
                            return try await async.executeThenClose { inbound, outbound in
                                var iterator = inbound.makeAsyncIterator()
                                try await outbound.write(ByteBuffer(string: "x"))
                                guard try await iterator.next() != nil else { return "no echo" }
                                started.withLockedValue { $0 += 1 }
                                do {
                                    while try await iterator.next() != nil {}
                                    return "ended without an error"
                                } catch let error as TunnelError {
                                    return "\(error)"
                                }
                            }
                        }
                    }
                }
                // Every flow has echoed once; now the TCP connection under the session dies.
                let deadline = Date().addingTimeInterval(15)
                while started.withLockedValue({ $0 }) < flows, Date() < deadline {
                    try await Task.sleep(for: .milliseconds(10))
                }
                #expect(started.withLockedValue { $0 } == flows)
                relay.signalProgram(SIGKILL)
                var outcomes: [String] = []
                for try await outcome in group { outcomes.append(outcome) }
                return outcomes
            }
            #expect(outcomes == Array(repeating: "\(TunnelError.connectionLost)", count: flows))
            try await withDeadline(seconds: 5) { try await client.closeFuture.get() }
            #expect(client.failure != nil)
            await #expect(throws: TunnelError.self) { _ = try await client.openTCP(host: "127.0.0.1", port: echo) }
        }
    }

    @Test func aSilentConnectionIsClosedByTheKeepAlive() async throws {
        try await TunnelLab.with("kttun-silent") { lab in
            let key = SessionKey()
            let (_, port) = try await lab.startShadow(keys: [key.sshPublicKey])
            let (relay, relayPort) = try Self.relay(lab, to: port)
            defer { relay.signalProgram(SIGKILL) }
            let client = try await lab.connect(
                port: relayPort, key: key, hostKey: nil, keepAlive: (.milliseconds(200), .seconds(1)))
            defer { client.close() }
            let echo = try await lab.echoServer()
            let flow = try await client.openTCP(host: "127.0.0.1", port: echo)
            // Wrapped before the freeze: on a loaded machine the keep-alive may close the flow before a later
            // wrap (seen once in a clean run: "I/O on closed channel").
            let channel = try await flow.asyncChannel()
            let started = ContinuousClock.now
            relay.signalProgram(SIGSTOP)
            let outcome = try await withDeadline(seconds: 10) {
                try await channel.executeThenClose { inbound, _ in
                    do {
                        for try await _ in inbound {}
                        return "ended without an error"
                    } catch {
                        return "\(error)"
                    }
                }
            }
            let waited = milliseconds(since: started)
            #expect(outcome == "\(TunnelError.connectionLost)")
            // 1 s without a pong, checked every 0.2 s: about 1.2 s on a quiet machine (measured 1.1 s); the bound
            // leaves room for a machine busy with the other suites (measured up to 6 s there).
            print("keep-alive: a frozen connection was closed after \(Int(waited)) ms")
            #expect(waited >= 900 && waited < 9000, "detected after \(waited) ms")
            #expect(client.failure != nil)
        }
    }

    @Test func aSlowReaderSlowsItsSender() async throws {
        try await TunnelLab.with("kttun-slow") { lab in
            let client = try await lab.shadowClient()
            defer { client.close() }
            let size = 256 << 20
            let progress = NIOLockedValueBox(0)
            let source = try await lab.patternSource(size: size, progress: progress)
            let flow = try await client.openTCP(host: "127.0.0.1", port: source)
            let async = try await flow.asyncChannel()
            // Nobody reads for a second: the sender gets as far as the channel window and the socket buffers.
            try await Task.sleep(for: .seconds(1))
            let sentWhileStalled = progress.withLockedValue { $0 }
            print("slow reader: the source sent \(sentWhileStalled >> 20) MiB while nobody read")
            #expect(sentWhileStalled < 48 << 20, "\(sentWhileStalled) bytes sent to a reader that does not read")
            let received = try await async.executeThenClose { inbound, outbound in
                outbound.finish()
                var received = 0
                for try await chunk in inbound { received += chunk.readableBytes }
                return received
            }
            #expect(received == size)
        }
    }
}

/// Runs `body`, failing with a timeout if it takes longer than `seconds`: a hang becomes a failure. The body runs
/// in its own task, which is left behind (cancelled) on timeout, since a hung await may not heed cancellation.
func withDeadline<T: Sendable>(seconds: Double, _ body: @escaping @Sendable () async throws -> T) async throws -> T {
    let outcome = NIOLockedValueBox<CheckedContinuation<T, Error>?>(nil)
    let finish: @Sendable (Result<T, Error>) -> Void = { result in
        outcome.withLockedValue { continuation in
            continuation?.resume(with: result)
            continuation = nil
        }
    }
    var work: Task<Void, Never>?
    var timer: Task<Void, Never>?
    defer {
        work?.cancel()
        timer?.cancel()
    }
    return try await withCheckedThrowingContinuation { continuation in
        outcome.withLockedValue { $0 = continuation }
        work = Task {
            do { finish(.success(try await body())) } catch { finish(.failure(error)) }
        }
        timer = Task {
            try? await Task.sleep(for: .seconds(seconds))
            finish(.failure(TestNamespaceError("timed out after \(seconds) s")))
        }
    }
}
