import Foundation
import KubeKit
import Logging

/// The lab's kube-proxy: every Service's ClusterIP:port is DNATed, in the node namespace, to one of its ready
/// endpoints chosen at random (`numgen random`), with masquerade for pod-to-pod traffic that was DNATed so that
/// hairpin (a pod reaching itself through its Service) returns the way it came. One nftables table, `ip ktlab`,
/// replaced whole on every change (one `nft -f` transaction).
public final class ServiceProxy: Sendable {
    let layout: LabLayout
    let store: ObjectStore
    let logger: Logger

    public init(layout: LabLayout, store: ObjectStore, logger: Logger) {
        self.layout = layout
        self.store = store
        self.logger = logger
    }

    public func run() async throws {
        let (signals, signal) = AsyncStream<Void>.makeStream(bufferingPolicy: .bufferingNewest(1))
        var watchers: [Task<Void, Never>] = []
        for kind in [Service.resource, Endpoints.resource] {
            let events = try store.watch(Selection(resource: kind, namespace: nil), after: Int64(store.revision))
            watchers.append(Task { for await _ in events { signal.yield() } })
        }
        defer { for watcher in watchers { watcher.cancel() } }
        signal.yield()
        var applied = ""
        for await _ in signals {
            if Task.isCancelled { break }
            try? await Task.sleep(for: .milliseconds(20))
            let rules = ruleset()
            guard rules != applied else { continue }
            do {
                let node = layout.nodeNamespace
                try await Host.offPool {
                    try Host.run(["ip", "netns", "exec", node, "nft", "-f", "-"], input: rules)
                }
                applied = rules
            } catch {
                logger.error("service rules not applied: \(error)")
            }
        }
    }

    /// The whole table for the current Services and Endpoints.
    func ruleset() -> String {
        let services = store.list(Selection(resource: Service.resource, namespace: nil)).items
        let endpoints = store.list(Selection(resource: Endpoints.resource, namespace: nil)).items
        var serviceRules: [String] = []
        var chains: [String] = []
        for service in services {
            guard let clusterIP = service["spec"]?["clusterIP"]?.stringValue, clusterIP != "None",
                Admission.parse(clusterIP) != nil
            else { continue }
            let namespace = service["metadata"]?["namespace"]?.stringValue ?? ""
            let name = service["metadata"]?["name"]?.stringValue ?? ""
            let subsets =
                endpoints.first {
                    $0["metadata"]?["namespace"]?.stringValue == namespace
                        && $0["metadata"]?["name"]?.stringValue == name
                }?["subsets"]?.arrayValue ?? []
            for port in service["spec"]?["ports"]?.arrayValue ?? [] {
                guard let number = port["port"]?.intValue else { continue }
                let proto = (port["protocol"]?.stringValue ?? "TCP").lowercased()
                guard proto == "tcp" || proto == "udp" else { continue }
                let portName = port["name"]?.stringValue
                // Ready addresses with the endpoint port of the same name (or the only one).
                var targets: [String] = []
                for subset in subsets {
                    let ports = subset["ports"]?.arrayValue ?? []
                    let match =
                        ports.first { $0["name"]?.stringValue == portName } ?? (ports.count == 1 ? ports.first : nil)
                    guard let targetPort = match?["port"]?.intValue else { continue }
                    for address in subset["addresses"]?.arrayValue ?? [] {
                        if let ip = address["ip"]?.stringValue, Admission.parse(ip) != nil {
                            targets.append("\(ip):\(targetPort)")
                        }
                    }
                }
                let match = "ip daddr \(clusterIP) \(proto) dport \(number)"
                if targets.isEmpty {
                    serviceRules.append("\(match) reject")
                    continue
                }
                let base = "svc_\(chains.count)"
                var branches: [String] = []
                for (index, target) in targets.enumerated() {
                    chains.append("chain \(base)_\(index) { meta l4proto \(proto) dnat to \(target); }")
                    branches.append("\(index) : jump \(base)_\(index)")
                }
                serviceRules.append(
                    "\(match) numgen random mod \(targets.count) vmap { \(branches.joined(separator: ", ")) }")
            }
        }
        let pods = layout.nodePodCIDR
        return """
            table ip ktlab
            delete table ip ktlab
            table ip ktlab {
              chain services {
            \(serviceRules.map { "    " + $0 }.joined(separator: "\n"))
              }
            \(chains.map { "  " + $0 }.joined(separator: "\n"))
              chain prerouting { type nat hook prerouting priority -100; policy accept; jump services; }
              chain output { type nat hook output priority -100; policy accept; jump services; }
              chain postrouting {
                type nat hook postrouting priority 100; policy accept;
                ct status dnat ip saddr \(pods) ip daddr \(pods) masquerade
              }
            }

            """
    }
}
