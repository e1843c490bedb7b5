import Foundation
import KtStack
import KtWire
import NIOCore
import Testing

/// Two KtStack ends over a lossy, reordering, duplicating simulated link: transfers complete byte-exact.
@Suite struct SimulationTests {
    static let clientAddress = Endpoint(.v4(IPv4Address(10, 0, 0, 1)), 0)
    static let serverAddress = Endpoint(.v4(IPv4Address(10, 96, 0, 15)), 80)

    /// Client sends `upload` bytes and the server `download` bytes at the same time; both then close.
    static func transfer(
        link: Simulation.Link, seed: UInt64, upload: Int, download: Int, v6: Bool = false,
        configuration: StackConfiguration = StackConfiguration()
    ) -> (
        Simulation, received: [UInt8], sent: [UInt8], receivedByClient: [UInt8], sentByServer: [UInt8], finished: Bool
    ) {
        var simulation = Simulation(link: link, seed: seed, configuration: configuration)
        simulation.tracing = ProcessInfo.processInfo.environment["KT_TRACE"] != nil
        var data = SeededGenerator(seed: seed ^ 0xABCDEF)
        let sent = (0..<upload).map { _ in UInt8(truncatingIfNeeded: data.next()) }
        let sentByServer = (0..<download).map { _ in UInt8(truncatingIfNeeded: data.next()) }
        let local = v6 ? Endpoint(.v6(IPv6Address(bits: 0xFD00 << 112 | 1)), 0) : clientAddress
        let remote = v6 ? Endpoint(.v6(IPv6Address(bits: 0xFD00_0096 << 96 | 0x15)), 80) : serverAddress
        let clientFlow = simulation.client.connect(from: local, to: remote, now: simulation.now)
        var serverFlow: FlowID?
        var clientOffset = 0
        var serverOffset = 0
        var clientShut = false
        var serverShut = false
        var received: [UInt8] = []
        var receivedByClient: [UInt8] = []
        var clientClosed = false
        var serverClosed = false
        let limit = simulation.now + .seconds(600)
        var progressed = true
        // Each round: the applications act, then the network moves one step. It ends when neither can move.
        while simulation.step(until: limit) || progressed {
            progressed = false
            for event in simulation.serverEvents {
                if case .dial(let flow, _) = event {
                    serverFlow = flow
                    simulation.server.acceptDial(flow, now: simulation.now)
                }
                if case .closed = event { serverClosed = true }
            }
            for event in simulation.clientEvents { if case .closed = event { clientClosed = true } }
            simulation.serverEvents.removeAll()
            simulation.clientEvents.removeAll()
            // Applications: write as much as is accepted, read everything readable.
            if clientOffset < sent.count {
                let before = clientOffset
                clientOffset += simulation.client.write(
                    clientFlow, ByteBuffer(bytes: sent[clientOffset..<min(sent.count, clientOffset + 65536)]),
                    now: simulation.now)
                progressed = progressed || clientOffset != before
            } else if !clientShut {
                simulation.client.shutdownWrite(clientFlow, now: simulation.now)
                clientShut = true
                progressed = true
            }
            while let bytes = simulation.client.read(clientFlow, maximum: 1 << 20, now: simulation.now) {
                receivedByClient += Array(buffer: bytes)
                progressed = true
            }
            if let flow = serverFlow {
                while let bytes = simulation.server.read(flow, maximum: 1 << 20, now: simulation.now) {
                    received += Array(buffer: bytes)
                    progressed = true
                }
                if ProcessInfo.processInfo.environment["KT_TRACE"] != nil, let info = simulation.server.info(flow),
                    serverOffset < 70000
                {
                    print(
                        "DBG \(simulation.now) server \(info.state) unacked \(info.unacknowledgedBytes) offset \(serverOffset)"
                    )
                }
                if serverOffset < sentByServer.count {
                    let before = serverOffset
                    serverOffset += simulation.server.write(
                        flow,
                        ByteBuffer(bytes: sentByServer[serverOffset..<min(sentByServer.count, serverOffset + 65536)]),
                        now: simulation.now)
                    progressed = progressed || serverOffset != before
                } else if !serverShut {
                    simulation.server.shutdownWrite(flow, now: simulation.now)
                    serverShut = true
                    progressed = true
                }
            }
            if clientClosed && serverClosed && received.count == sent.count
                && receivedByClient.count == sentByServer.count
            {
                break
            }
        }
        if ProcessInfo.processInfo.environment["KT_TRACE"] != nil {
            try? simulation.recent.joined(separator: "\n").write(
                toFile: "/tmp/kt-sim-trace-\(seed).txt", atomically: true, encoding: .utf8)
            print(
                "client offset \(clientOffset) shut \(clientShut) info \(String(describing: simulation.client.info(clientFlow)))"
            )
            if let flow = serverFlow { print("server info \(String(describing: simulation.server.info(flow)))") }
            print("client counters \(simulation.client.counters)")
        }
        return (simulation, received, sent, receivedByClient, sentByServer, clientClosed && serverClosed)
    }

    @Test func cleanLinkMovesBytesBothWays() {
        let result = Self.transfer(link: Simulation.Link(), seed: 1, upload: 300_000, download: 200_000)
        if result.received != result.sent {
            let firstDifference = zip(result.received, result.sent).enumerated().first { $0.element.0 != $0.element.1 }?
                .offset
            print(result.0.recent.joined(separator: "\n"))
            print(
                "received \(result.received.count) of \(result.sent.count), first difference at \(String(describing: firstDifference)); client got \(result.receivedByClient.count) of \(result.sentByServer.count)"
            )
        }
        let uploadExact = result.received == result.sent
        let downloadExact = result.receivedByClient == result.sentByServer
        #expect(uploadExact, "upload byte-exact")
        #expect(downloadExact, "download byte-exact")
        let finished = result.finished
        #expect(finished)
    }

    @Test(arguments: [UInt64(11), 12, 13, 14, 15, 16])
    func lossyLinkStillByteExact(seed: UInt64) {
        let link = Simulation.Link(loss: 0.02, duplication: 0.01, reordering: 0.05)
        let result = Self.transfer(link: link, seed: seed, upload: 400_000, download: 150_000)
        print(
            "seed \(seed): simulated \(result.0.now.since(StackInstant(nanoseconds: 1_000_000_000))) for 400 kB + 150 kB, delivered \(result.0.delivered) dropped \(result.0.dropped)"
        )
        #expect(
            result.received.count == result.sent.count,
            "seed \(seed): got \(result.received.count) of \(result.sent.count)")
        let uploadExact = result.received == result.sent
        let downloadExact = result.receivedByClient == result.sentByServer
        #expect(uploadExact, "seed \(seed) upload")
        #expect(downloadExact, "seed \(seed) download \(result.receivedByClient.count) of \(result.sentByServer.count)")
        let finished = result.finished
        #expect(finished, "seed \(seed): both ends closed")
    }

    @Test func heavyLossWithNewRenoAndNoSACKOverIPv6() {
        var configuration = StackConfiguration()
        configuration.congestionControl = .newReno
        let link = Simulation.Link(loss: 0.08, duplication: 0.02, reordering: 0.1)
        let result = Self.transfer(
            link: link, seed: 99, upload: 120_000, download: 60_000, v6: true, configuration: configuration)
        let uploadExact = result.received == result.sent
        let downloadExact = result.receivedByClient == result.sentByServer
        #expect(uploadExact, "upload \(result.received.count) of \(result.sent.count)")
        if !downloadExact {
            let got = result.receivedByClient
            let want = result.sentByServer
            let skipped = (0..<64).first { k in Array(want.dropFirst(k).prefix(32)) == Array(got.prefix(32)) }
            var lastGood = 0
            if let k = skipped {
                while lastGood < got.count, lastGood + k < want.count, got[lastGood] == want[lastGood + k] {
                    lastGood += 1
                }
            }
            print(
                "download starts at sent[\(String(describing: skipped))], matches for \(lastGood) bytes; first bytes got \(got.prefix(8)) want \(want.prefix(8))"
            )
        }
        let firstWrong = zip(result.receivedByClient, result.sentByServer).enumerated().first {
            $0.element.0 != $0.element.1
        }?.offset
        #expect(
            downloadExact,
            "download \(result.receivedByClient.count) of \(result.sentByServer.count), first wrong byte \(String(describing: firstWrong))"
        )
        let finished = result.finished
        #expect(finished)
    }
}
