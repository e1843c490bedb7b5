import Foundation
import KtWire
import KubeKit
import Logging
import NIOCore
import NIOPosix

/// The lab's cluster DNS (kube-dns's job), on the DNS ClusterIP in the node namespace and on the node's link
/// address (the workstation's nameserver): A records of Services (`svc.ns.svc.cluster.local`; headless: one per
/// ready pod), pods (`1-2-3-4.ns.pod.cluster.local` and `name.ns.pod.cluster.local`), SRV for named ports, PTR for
/// ClusterIPs and pod IPs. Names outside the cluster domain: `*.lab.test` answer with the node's link address (a
/// stand-in for the world outside, which the lab never contacts); anything else is NXDOMAIN.
public final class ClusterDNS: Sendable {
    let layout: LabLayout
    let store: ObjectStore
    let logger: Logger
    let domain: DNSName
    /// Answers may be cached this long; short, so that changes show quickly.
    static let ttl: UInt32 = 5

    public init(layout: LabLayout, store: ObjectStore, logger: Logger, clusterDomain: String = "cluster.local") {
        self.layout = layout
        self.store = store
        self.logger = logger
        self.domain = (try? DNSName(parsing: clusterDomain)) ?? "cluster.local"
    }

    /// Listens on UDP port 53 of `addresses` (inside the node namespace: `eventLoop` is one of its loops).
    /// `cluster` false: the workstation's upstream, which knows no cluster names (resolving them is ktctl's job).
    public func start(on eventLoop: any EventLoop, addresses: [String], cluster: Bool = true) async throws
        -> [any Channel]
    {
        var channels: [any Channel] = []
        for address in addresses {
            let dns = self
            let channel = try await eventLoop.flatSubmit {
                DatagramBootstrap(group: eventLoop)
                    .channelInitializer { channel in
                        channel.eventLoop.makeCompletedFuture {
                            try channel.pipeline.syncOperations.addHandler(DNSResponder(dns: dns, cluster: cluster))
                        }
                    }
                    .bind(host: address, port: 53)
            }.get()
            channels.append(channel)
        }
        return channels
    }

    /// The answer to one query.
    func answer(_ query: DNSMessage, cluster: Bool = true) -> DNSMessage {
        var response = query.makeResponse(responseCode: .noError, authoritative: true)
        response.header.recursionAvailable = true
        guard let question = query.questions.first, query.questions.count == 1 else {
            return query.makeResponse(responseCode: DNSResponseCode(rawValue: 1))
        }
        let name = question.name
        if cluster, name.isSubdomain(of: "in-addr.arpa") {
            if let target = reverse(name) {
                if question.type == .ptr || question.type == .any {
                    response.answers = [DNSRecord(name: name, ttl: Self.ttl, data: .ptr(target))]
                }
            } else {
                response.header.responseCode = DNSResponseCode(rawValue: 3)
            }
            return response
        }
        if name.isSubdomain(of: "lab.test") {
            if question.type == .a || question.type == .any, let address = IPv4Address(layout.nodeLinkAddress) {
                response.answers = [DNSRecord(name: name, ttl: Self.ttl, data: .a(address))]
            }
            return response
        }
        guard cluster, name.isSubdomain(of: domain) else {
            response.header.responseCode = DNSResponseCode(rawValue: 3)
            response.header.authoritative = false
            return response
        }
        guard let (addresses, service) = lookup(name, type: question.type) else {
            response.header.responseCode = DNSResponseCode(rawValue: 3)
            return response
        }
        switch question.type {
        case .a:
            response.answers = addresses.compactMap { IPv4Address($0) }.map {
                DNSRecord(name: name, ttl: Self.ttl, data: .a($0))
            }
        case .aaaa:
            // The lab's pods and ClusterIPs are IPv4: AAAA is NODATA unless a Service was given IPv6 clusterIPs.
            response.answers = addresses.compactMap { IPv6Address($0) }.map {
                DNSRecord(name: name, ttl: Self.ttl, data: .aaaa($0))
            }
        case .any:
            response.answers =
                addresses.compactMap { IPv4Address($0) }.map { DNSRecord(name: name, ttl: Self.ttl, data: .a($0)) }
                + addresses.compactMap { IPv6Address($0) }.map {
                    DNSRecord(name: name, ttl: Self.ttl, data: .aaaa($0))
                }
        case .srv:
            response.answers = service.map { [$0] } ?? []
        default:
            break  // the name exists; no records of that type (NODATA)
        }
        return response
    }

    /// Addresses for a name under the cluster domain (nil: no such name), and for `_port._proto.svc...` an SRV.
    func lookup(_ name: DNSName, type: DNSType) -> ([String], DNSRecord?)? {
        let labels = name.description.split(separator: ".").map { String($0).lowercased() }
        let domainCount = domain.description.split(separator: ".").count
        let local = Array(labels.dropLast(domainCount))
        // svc.ns.svc, _port._proto.svc.ns.svc
        if local.count >= 3, local[local.count - 1] == "svc" {
            let namespace = local[local.count - 2]
            let serviceName = local[local.count - 3]
            guard let service = try? store.get(Service.resource, namespace: namespace, name: serviceName) else {
                return nil
            }
            if local.count == 5, local[0].hasPrefix("_"), local[1].hasPrefix("_") {
                let portName = String(local[0].dropFirst())
                let proto = String(local[1].dropFirst()).uppercased()
                guard
                    let port = (service["spec"]?["ports"]?.arrayValue ?? []).first(where: {
                        $0["name"]?.stringValue?.lowercased() == portName
                            && ($0["protocol"]?.stringValue ?? "TCP") == proto
                    }), let number = port["port"]?.intValue, case let target = name.parent.parent
                else { return nil }
                return (
                    [],
                    DNSRecord(
                        name: name, ttl: Self.ttl,
                        data: .srv(DNSServiceData(priority: 0, weight: 100, port: UInt16(number), target: target)))
                )
            }
            let endpoints = try? store.get(Endpoints.resource, namespace: namespace, name: serviceName)
            let ready = (endpoints?["subsets"]?.arrayValue ?? []).flatMap { $0["addresses"]?.arrayValue ?? [] }
            if local.count == 4 {
                // hostname.svc.ns.svc: the pod of a headless service whose spec.hostname is that (and subdomain the
                // service).
                let ips = ready.filter { $0["hostname"]?.stringValue == local[0] }.compactMap { $0["ip"]?.stringValue }
                return ips.isEmpty ? nil : (ips, nil)
            }
            guard local.count == 3 else { return nil }
            if let clusterIP = service["spec"]?["clusterIP"]?.stringValue, clusterIP != "None" {
                let all = (service["spec"]?["clusterIPs"]?.arrayValue ?? []).compactMap(\.stringValue)
                return (all.isEmpty ? [clusterIP] : all, nil)
            }
            return (ready.compactMap { $0["ip"]?.stringValue }, nil)
        }
        // 10-244-0-2.ns.pod or name.ns.pod
        if local.count == 3, local[2] == "pod" {
            let namespace = local[1]
            let dashed = local[0].replacingOccurrences(of: "-", with: ".")
            if IPv4Address(dashed) != nil { return ([dashed], nil) }
            if let pod = try? store.get(Pod.resource, namespace: namespace, name: local[0]),
                let ip = pod["status"]?["podIP"]?.stringValue
            {
                let all = (pod["status"]?["podIPs"]?.arrayValue ?? []).compactMap { $0["ip"]?.stringValue }
                return (all.isEmpty ? [ip] : all, nil)
            }
            return nil
        }
        return nil
    }

    /// PTR: a ClusterIP names its Service; a pod IP its pod.
    func reverse(_ name: DNSName) -> DNSName? {
        let labels = name.description.split(separator: ".")
        guard labels.count >= 6 else { return nil }
        let ip = labels.prefix(4).reversed().joined(separator: ".")
        for service in store.list(Selection(resource: Service.resource, namespace: nil)).items
        where service["spec"]?["clusterIP"]?.stringValue == ip {
            let text =
                "\(service["metadata"]?["name"]?.stringValue ?? "").\(service["metadata"]?["namespace"]?.stringValue ?? "").svc.\(domain)"
            return try? DNSName(parsing: text)
        }
        for pod in store.list(Selection(resource: Pod.resource, namespace: nil)).items
        where pod["status"]?["podIP"]?.stringValue == ip {
            let text =
                "\(ip.replacingOccurrences(of: ".", with: "-")).\(pod["metadata"]?["namespace"]?.stringValue ?? "").pod.\(domain)"
            return try? DNSName(parsing: text)
        }
        return nil
    }
}

/// One UDP socket of the cluster DNS.
final class DNSResponder: ChannelInboundHandler {
    typealias InboundIn = AddressedEnvelope<ByteBuffer>
    typealias OutboundOut = AddressedEnvelope<ByteBuffer>

    let dns: ClusterDNS
    let cluster: Bool

    init(dns: ClusterDNS, cluster: Bool) {
        self.dns = dns
        self.cluster = cluster
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let envelope = unwrapInboundIn(data)
        guard let query = try? DNSMessage(parsing: envelope.data), !query.header.isResponse else { return }
        let response = dns.answer(query, cluster: cluster)
        let limit = query.edns.map { Int($0.udpPayloadSize) } ?? 512
        context.writeAndFlush(
            wrapOutboundOut(
                AddressedEnvelope(remoteAddress: envelope.remoteAddress, data: response.encoded(limit: max(limit, 512)))
            ),
            promise: nil)
    }
}
