import Foundation
import Glibc
import KtStack
import KtTun
import KtWire
import NIOCore
import NamespaceTestSupport

/// KtStack with the Linux kernel as its peer through a TUN: single-stream throughput each way into and out of an
/// in-process sink/source, CPU seconds per GB, and memory per idle and per active flow. Needs root.
enum StackBenchmarks {
    static let seconds = 5.0

    static func run(vethTCP: Double?) -> String {
        if let reason = TestNamespace.unavailableReason { return "KtStack benchmarks skipped: \(reason)" }
        var table = Table(headers: ["KtStack path", "Gbit/s", "vs veth", "CPU s/GB", "note"])
        do {
            let base = vethTCP ?? 0
            func add(_ name: String, _ result: (bits: Double, cpuPerGB: Double), _ note: String) {
                table.add([
                    name, formatted(result.bits / 1e9, 2), base > 0 ? formatted(result.bits / 1e9 / base, 2) : "",
                    formatted(result.cpuPerGB, 2), note,
                ])
            }
            add(
                "kernel → TUN → KtStack → sink", try measure(direction: .upload),
                "socat /dev/zero sender, TSO super-packets taken whole")
            add(
                "source → KtStack → TUN → kernel", try measure(direction: .download),
                "socat to /dev/null receiver, GSO super-segments")
            let idle = try idleFlowMemory(count: 10000)
            table.add(["memory per idle flow", "", "", "", "\(idle) bytes (10000 flows held; goal ≤ 4096)"])
            for line in activeFlowBuffers { table.add(["active flow at full speed", "", "", "", line]) }
        } catch {
            return table.render() + "\nKtStack benchmark failed: \(error)"
        }
        return table.render()
    }

    enum Direction { case upload, download }

    /// The TUN, the stack and a loop that reads, feeds, acts and writes until `until` returns true.
    final class Rig {
        let namespace: TestNamespace
        let device: TunDevice
        var stack: NetworkStack
        let clock = ContinuousClock()
        let start: ContinuousClock.Instant

        init() throws {
            namespace = try TestNamespace(prefix: "ktbench-stack")
            do {
                let (netlink, device) = try namespace.inside { () throws -> (Netlink, TunDevice) in
                    (
                        try Netlink(),
                        try TunDevice.open(TunOptions(name: "kt0", virtioHeader: true, keepSuperPackets: true))
                    )
                }
                self.device = device
                let link = try netlink.link(named: "kt0")
                try netlink.setUp(true, link.index)
                try netlink.addAddress(
                    InterfaceAddress(interface: link.index, address: .v4(IPv4Address(10, 210, 0, 1)), prefixLength: 24))
                try netlink.addRoute(
                    Route(
                        destination: .v4(try IPv4Prefix.parse("10.96.0.0/12")), outputInterface: link.index,
                        scope: .link))
                try TestNamespace.check(namespace.run(["ip", "link", "set", "kt0", "txqueuelen", "20000"]))
            } catch {
                namespace.delete()
                throw error
            }
            var configuration = StackConfiguration()
            configuration.checksumOffload = true
            configuration.segmentationOffload = true
            configuration.verifyChecksums = false
            stack = NetworkStack(configuration: configuration, random: SystemRandomNumberGenerator())
            start = clock.now
        }

        deinit {
            device.close()
            namespace.delete()
        }

        var now: StackInstant {
            let elapsed = start.duration(to: clock.now)
            return StackInstant(
                nanoseconds: 1_000_000_000 + UInt64(elapsed.components.seconds) * 1_000_000_000
                    + UInt64(elapsed.components.attoseconds / 1_000_000_000))
        }

        /// One turn of the loop; `act` handles each event.
        func turn(_ packets: inout [ByteBuffer], _ act: (inout NetworkStack, StackEvent, StackInstant) -> Void) throws {
            var timeout: Int32 = 5
            if let deadline = stack.nextDeadline {
                timeout = deadline <= now ? 0 : Int32(min(5, deadline.since(now).nanoseconds / 1_000_000))
            }
            if device.waitUntilReadable(timeout: timeout) {
                packets.removeAll(keepingCapacity: true)
                _ = try device.read(into: &packets, maximum: 64)
                stack.receive(packets, now: now)
            }
            stack.advance(to: now)
            for event in stack.takeEvents() { act(&stack, event, now) }
            let output = stack.takeOutput()
            try device.writeDevicePackets(output)
            stack.recycle(output)
        }
    }

    static func cpuSeconds() -> Double {
        var usage = rusage()
        getrusage(RUSAGE_SELF.rawValue, &usage)
        return Double(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) + Double(
            usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e6
    }

    /// Buffers of the last measured flow: what one active flow holds at full speed.
    nonisolated(unsafe) static var activeFlowBuffers: [String] = []

    static func measure(direction: Direction) throws -> (bits: Double, cpuPerGB: Double) {
        let rig = try Rig()
        let command =
            direction == .upload
            ? ["socat", "-u", "-b", "1048576", "/dev/zero", "TCP:10.96.0.15:9"]
            : ["socat", "-u", "-b", "1048576", "TCP:10.96.0.15:19", "/dev/null"]
        let tool = try TunBenchmarks.Background(rig.namespace, command)
        defer { tool.stop() }
        let zeros = ByteBuffer(repeating: 0, count: 256 * 1024)
        var flow: FlowID?
        var bytes = 0
        var measuring: (start: Date, cpu: Double, bytes: Int)?
        var packets: [ByteBuffer] = []
        packets.reserveCapacity(128)
        let deadline = Date().addingTimeInterval(seconds + 5)
        while Date() < deadline {
            try rig.turn(&packets) { stack, event, now in
                switch event {
                case .dial(let id, _):
                    stack.acceptDial(id, now: now)
                    flow = id
                case .readable(let id):
                    while let chunk = stack.read(id, maximum: 1 << 22, now: now) { bytes += chunk.readableBytes }
                default:
                    break
                }
            }
            if direction == .download, let flow {
                while true {
                    let taken = rig.stack.write(flow, zeros, now: rig.now)
                    bytes += taken
                    if taken < zeros.readableBytes { break }
                }
            }
            if measuring == nil, bytes > 16 << 20 { measuring = (Date(), cpuSeconds(), bytes) }
            if let start = measuring, Date().timeIntervalSince(start.start) >= seconds {
                let elapsed = Date().timeIntervalSince(start.start)
                let moved = Double(bytes - start.bytes)
                if let flow, let info = rig.stack.info(flow) {
                    activeFlowBuffers.append(
                        "\(direction): receive buffer \(info.receiveBuffer >> 10) KiB (\(info.readableBytes >> 10) KiB unread), "
                            + "send queue \(info.unacknowledgedBytes >> 10) KiB, cwnd \(info.congestionWindow >> 10) KiB"
                    )
                }
                return (moved * 8 / elapsed, (cpuSeconds() - start.cpu) / (moved / 1e9))
            }
        }
        throw TestNamespaceError("the \(direction) never reached 16 MiB (moved \(bytes) bytes)")
    }

    /// Resident memory added by holding `count` idle flows, per flow.
    static func idleFlowMemory(count: Int) throws -> Int {
        let rig = try Rig()
        let script =
            "import socket,time\nsocks=[]\nfor i in range(\(count)):\n  s=socket.socket(); s.setblocking(False)\n  "
            + "try: s.connect(('10.96.0.15', 6000))\n  except BlockingIOError: pass\n  socks.append(s)\ntime.sleep(30)"
        let before = residentBytes()
        let tool = try TunBenchmarks.Background(
            rig.namespace, ["bash", "-c", "ulimit -n \(count + 1000); python3 -c \"\(script)\""])
        defer { tool.stop() }
        var packets: [ByteBuffer] = []
        let deadline = Date().addingTimeInterval(25)
        while Date() < deadline, rig.stack.flowCount < count {
            try rig.turn(&packets) { stack, event, now in
                if case .dial(let id, _) = event { stack.acceptDial(id, now: now) }
            }
        }
        for _ in 0..<100 { try rig.turn(&packets) { _, _, _ in } }
        let flows = rig.stack.flowCount
        guard flows >= count else { throw TestNamespaceError("only \(flows) of \(count) idle flows") }
        return (residentBytes() - before) / flows
    }

    static func residentBytes() -> Int {
        guard let status = try? String(contentsOfFile: "/proc/self/statm", encoding: .utf8) else { return 0 }
        let pages = status.split(separator: " ").dropFirst().first.flatMap { Int($0) } ?? 0
        return pages * Int(sysconf(Int32(_SC_PAGESIZE)))
    }
}
