import Foundation
import Glibc
import KtTun
import KtWire
import NIOConcurrencyHelpers
import NIOCore
import NamespaceTestSupport
import Testing

/// Loss, duplication and reordering of packets both ways, as a bad path does them: each packet may be dropped,
/// sent twice, or held back until the next batch in its direction (about a millisecond).
struct PathImpairer {
    let impairment: KernelHarness.Impairment
    var random = SystemRandomNumberGenerator()
    var held: [(ByteBuffer, forward: Bool)] = []

    init(impairment: KernelHarness.Impairment) {
        self.impairment = impairment
    }

    var isHolding: Bool { !held.isEmpty }

    mutating func chance(_ p: Double) -> Bool { p > 0 && Double.random(in: 0..<1, using: &random) < p }

    mutating func impair(_ packets: [ByteBuffer], forward: Bool) -> [ByteBuffer] {
        guard impairment.loss > 0 || impairment.duplication > 0 || impairment.reordering > 0 else { return packets }
        var out: [ByteBuffer] = []
        let release = held.filter { $0.forward == forward }.map(\.0)
        held.removeAll { $0.forward == forward }
        for packet in packets {
            if chance(impairment.loss) { continue }
            if chance(impairment.reordering) {
                held.append((packet, forward))
                continue
            }
            out.append(packet)
            if chance(impairment.duplication) { out.append(packet) }
        }
        return out + release
    }
}

/// Kernel to kernel over the impairments the harness applies: two namespaces, each with a TUN, and a relay between
/// the TUNs that impairs what it carries (netem is not in this kernel). The reference a lossy-path test compares
/// KtStack with, in the same run.
final class ImpairedRelay: @unchecked Sendable {
    let left: TestNamespace
    let right: TestNamespace
    private let devices: (left: TunDevice, right: TunDevice)
    private let stopping = NIOLockedValueBox(false)
    private let finished = DispatchSemaphore(value: 0)
    static let leftAddress = IPv4Address(10, 98, 0, 1)
    static let rightAddress = IPv4Address(10, 98, 0, 2)

    init(impairment: KernelHarness.Impairment) throws {
        left = try TestNamespace(prefix: "ktrelay-l")
        do {
            right = try TestNamespace(prefix: "ktrelay-r")
        } catch {
            left.delete()
            throw error
        }
        do {
            func open(_ namespace: TestNamespace, _ address: IPv4Address) throws -> TunDevice {
                let (netlink, device) = try namespace.inside { () throws -> (Netlink, TunDevice) in
                    (try Netlink(), try TunDevice.open(TunOptions(name: "kr0", virtioHeader: false)))
                }
                let link = try netlink.link(named: "kr0")
                try netlink.setUp(true, link.index)
                try netlink.addAddress(InterfaceAddress(interface: link.index, address: .v4(address), prefixLength: 24))
                return device
            }
            devices = (try open(left, Self.leftAddress), try open(right, Self.rightAddress))
        } catch {
            left.delete()
            right.delete()
            throw error
        }
        let devices = self.devices
        let stopping = self.stopping
        let done = finished
        Thread {
            Self.relay(devices, impairer: PathImpairer(impairment: impairment), stopping: stopping)
            done.signal()
        }.start()
    }

    private static func relay(
        _ devices: (left: TunDevice, right: TunDevice), impairer: PathImpairer, stopping: NIOLockedValueBox<Bool>
    ) {
        var impairer = impairer
        var packets: [ByteBuffer] = []
        var descriptors = [
            pollfd(fd: devices.left.descriptor, events: Int16(POLLIN), revents: 0),
            pollfd(fd: devices.right.descriptor, events: Int16(POLLIN), revents: 0),
        ]
        while !stopping.withLockedValue({ $0 }) {
            descriptors[0].revents = 0
            descriptors[1].revents = 0
            _ = poll(&descriptors, 2, impairer.isHolding ? 1 : 20)
            for (index, forward) in [(0, true), (1, false)] {
                let from = forward ? devices.left : devices.right
                let to = forward ? devices.right : devices.left
                packets.removeAll(keepingCapacity: true)
                if descriptors[index].revents & Int16(POLLIN) != 0 {
                    _ = try? from.read(into: &packets, maximum: 64)
                }
                let out = impairer.impair(packets, forward: forward)
                if !out.isEmpty { _ = try? to.write(out) }
            }
        }
    }

    /// Stops the relay, closes the TUNs and removes both namespaces.
    func stop() {
        stopping.withLockedValue { $0 = true }
        finished.wait()
        devices.left.close()
        devices.right.close()
        left.delete()
        right.delete()
    }

    /// iperf3 from the left namespace to the right one and back: bytes per second each way (download: right to
    /// left, as from a server to the laptop).
    func iperf(seconds: Int = 4) throws -> (download: Double, upload: Double) {
        let server = try BackgroundProcess(right, ["iperf3", "-s", "--forceflush", "-B", "\(Self.rightAddress)"])
        defer { _ = server.stop() }
        #expect(server.waitForOutput("Server listening", timeout: 10))
        func rate(_ reverse: Bool) throws -> Double {
            let run = try left.run(
                ["iperf3", "-c", "\(Self.rightAddress)", "-t", "\(seconds)", "-J"] + (reverse ? ["-R"] : []),
                timeout: Double(seconds + 20))
            try #require(run.status == 0, "iperf3: \(run.output) \(run.error)")
            let json = try JSONSerialization.jsonObject(with: Data(run.output.utf8)) as? [String: Any]
            let received = (json?["end"] as? [String: Any])?["sum_received"] as? [String: Any]
            return try #require(received?["bits_per_second"] as? Double) / 8
        }
        return (download: try rate(true), upload: try rate(false))
    }
}
