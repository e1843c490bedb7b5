import Foundation
import Testing

@testable import KtctlKit

/// The decisions of the systemd-resolved wiring (the wiring itself runs against a real resolved in ConnectTests).
@Suite struct ResolvedWiringTests {
    @Test func domainsPutTheSearchListFirstThenRoutingDomains() {
        #expect(
            ResolvedWiring.domains(
                clusterDomain: "cluster.local", namespace: "default",
                searchList: ["default.svc.cluster.local.", "svc.cluster.local.", "cluster.local."])
                == ["default.svc.cluster.local", "svc.cluster.local", "cluster.local", "~svc", "~default"])
        // A namespace called svc, and a cluster domain written with its dot: no domain twice.
        #expect(
            ResolvedWiring.domains(
                clusterDomain: "corp.example.", namespace: "svc",
                searchList: ["svc.svc.corp.example", "svc.corp.example", "corp.example"])
                == ["svc.svc.corp.example", "svc.corp.example", "corp.example", "~svc"])
    }

    /// In charge only when resolv.conf names the stub and resolved's socket takes connections (a socket file left
    /// by a resolved that died does not count).
    @Test func inChargeNeedsTheStubAndALiveSocket() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("resolved-\(UUID())").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let path = "\(directory)/io.systemd.Resolve"
        #expect(!ResolvedWiring.isInCharge(resolvConfNameservers: ["127.0.0.53"], socketPath: path))

        let listener = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        #expect(listener >= 0)
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            for (index, byte) in path.utf8.enumerated() { raw[index] = byte }
        }
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(listener, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        #expect(bound == 0 && listen(listener, 4) == 0)
        #expect(ResolvedWiring.isInCharge(resolvConfNameservers: ["127.0.0.53"], socketPath: path))
        #expect(ResolvedWiring.isInCharge(resolvConfNameservers: ["10.0.0.2", "127.0.0.54"], socketPath: path))
        #expect(!ResolvedWiring.isInCharge(resolvConfNameservers: ["10.0.0.2"], socketPath: path))
        close(listener)
        // The file stays, nobody listens: a stale socket.
        #expect(FileManager.default.fileExists(atPath: path))
        #expect(!ResolvedWiring.isInCharge(resolvConfNameservers: ["127.0.0.53"], socketPath: path))
    }
}
