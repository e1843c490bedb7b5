import ArgumentParser
import Foundation
import KtWire
import KtctlKit
import Logging

/// The flags every command that touches the cluster shares, spelled as kubectl users expect; kt-connect's
/// camelCase spellings are accepted too (hidden) so that existing scripts work.
struct ClusterFlags: ParsableArguments {
    @Option(name: [.customLong("kubeconfig"), .customShort("c")], help: "Path to the kubeconfig file.")
    var kubeconfig: String?

    @Option(help: "The kubeconfig context to use.")
    var context: String?

    @Option(name: .shortAndLong, help: "Namespace for the shadow pod (default: the context's namespace).")
    var namespace: String?

    @Option(name: .shortAndLong, help: "The shadow image.")
    var image: String = ClusterOptions.defaultImage

    @Option(
        name: [.customLong("image-pull-secret"), .customLong("imagePullSecret", withSingleDash: false)],
        help: "A pull secret for the shadow image.")
    var imagePullSecret: String?

    @Option(
        name: [.customLong("service-account"), .customLong("serviceAccount")], help: "The shadow pod's service account."
    )
    var serviceAccount: String?

    @Option(name: [.customLong("node-selector"), .customLong("nodeSelector")], help: "k=v,k2=v2 for the shadow pod.")
    var nodeSelector: String = ""

    @Option(
        name: [.customLong("with-label"), .customLong("withLabel"), .customShort("l")],
        help: "Extra labels k=v,k2=v2 on the shadow pod.")
    var withLabel: String = ""

    @Option(
        name: [.customLong("with-annotation"), .customLong("withAnnotation")],
        help: "Extra annotations k=v on the shadow pod.")
    var withAnnotation: String = ""

    @Option(
        name: [.customLong("pod-quota"), .customLong("podQuota")],
        help: "Requests and limits: cpu=100m,memory=64Mi (or kt-connect's 0.5c,512m).")
    var podQuota: String = ""

    @Option(help: "Seconds to wait for the shadow pod to be ready.")
    var timeout: Int = 120

    @Flag(name: .shortAndLong, help: "Debug logs.")
    var debug = false

    @Flag(
        name: [.customLong("force-update")],
        help: "Pull the shadow's (and router's) image every time (imagePullPolicy Always; kt-connect's -f).")
    var forceUpdate = false

    func options() throws -> ClusterOptions {
        var options = ClusterOptions(image: image)
        options.kubeconfig = kubeconfig
        options.context = context
        options.namespace = namespace
        options.imagePullSecret = imagePullSecret
        options.serviceAccount = serviceAccount
        options.nodeSelector = try parsePairs(nodeSelector, flag: "--node-selector")
        options.labels = try parsePairs(withLabel, flag: "--with-label")
        options.annotations = try parsePairs(withAnnotation, flag: "--with-annotation")
        options.quota = try PodQuota.parse(podQuota)
        guard timeout > 0 else { throw ValidationError("--timeout must be a positive number of seconds") }
        options.timeout = .seconds(timeout)
        options.debug = debug
        options.forceUpdate = forceUpdate
        return options
    }
}

extension ConnectOptions.Mode: ExpressibleByArgument {}

struct ConnectCLI: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "connect",
        abstract: "Reach pod IPs, ClusterIPs and service names from this machine until Ctrl-C.",
        discussion: """
            tun mode (the default, needs root) makes a TUN device with routes for the cluster's ranges and a DNS \
            resolver for cluster names; every program on this machine reaches the cluster. Ctrl-C removes the \
            device, routes, DNS change and the shadow pod.

            socks mode (no root) changes nothing on this machine: a SOCKS5 and HTTP proxy on --proxy-addr:--proxy-port \
            reaches the cluster for the programs told to use it (ALL_PROXY=socks5h://..., http_proxy, https_proxy).
            """)

    @OptionGroup var cluster: ClusterFlags

    @Option(help: "tun (default) or socks.")
    var mode: ConnectOptions.Mode = .tun

    @Option(name: .customLong("tun-name"), help: "The TUN device's name.")
    var tunName = "kt0"

    @Option(name: .customLong("tun-address"), help: "The TUN device's own address (the DNS resolver listens there).")
    var tunAddress = "198.18.20.1"

    @Option(
        help: """
            The TUN device's MTU (576-65535). 1500 is as fast as larger ones: with segmentation offloads the kernel \
            hands the TUN 64 KiB segments whatever the MTU.
            """)
    var mtu = 1500

    @Option(
        name: [.customLong("include-ips"), .customLong("includeIps")], help: "More prefixes to route, comma-separated.")
    var includeIPs: String = ""

    @Option(
        name: [.customLong("exclude-ips"), .customLong("excludeIps")],
        help: "Prefixes to keep out of the tunnel, comma-separated.")
    var excludeIPs: String = ""

    @Flag(
        name: .customLong("force-routes"),
        help: "Route the cluster's ranges even where they overlap this machine's routes.")
    var forceRoutes = false

    @Option(name: [.customLong("cluster-domain"), .customLong("clusterDomain")], help: "The cluster's DNS domain.")
    var clusterDomain = "cluster.local"

    @Option(
        name: .customLong("dns-mode"),
        help: """
            auto, resolved, resolv.conf or none (no DNS change). resolved: per-link DNS and routing domains on the \
            TUN through systemd-resolved; resolv.conf: /etc/resolv.conf rewritten and restored on exit. auto is \
            resolved where systemd-resolved answers lookups (resolv.conf names its stub), else resolv.conf.
            """,
        completion: .list(["auto", "resolved", "resolv.conf", "none"]))
    var dnsMode = "auto"

    @Option(
        name: [.customLong("proxy-addr"), .customLong("proxyAddr")],
        help: "socks mode: the address the SOCKS5 / HTTP proxy listens on.")
    var proxyAddress = "127.0.0.1"

    @Option(
        name: [.customLong("proxy-port"), .customLong("proxyPort")],
        help: "socks mode: the proxy's port.")
    var proxyPort = 2223

    @Option(
        name: .customLong("proxy-allow-users"),
        help: ArgumentHelp(
            "socks mode: more local users (names or uids, comma-separated) who may use the proxy, or 'all' for "
                + "anyone who can reach it (needed for clients on other machines). By default only you may.",
            valueName: "users"))
    var proxyAllowUsers: String?

    @Option(
        name: .customLong("proxy-auth"),
        help: ArgumentHelp(
            "socks mode: require this username and password (SOCKS5 RFC 1929, HTTP Proxy-Authorization Basic).",
            valueName: "user:password"))
    var proxyAuth: String?

    @Flag(name: .customLong("disableTunDevice"), help: .hidden)
    var disableTunDevice = false

    @OptionGroup var session: SessionFlags

    func run() async throws {
        var options = ConnectOptions(
            cluster: try cluster.options(), stateDirectory: session.root)
        options.leaseDuration = try session.validatedLeaseDuration()
        try options.setProxyAccess(allow: proxyAllowUsers, auth: proxyAuth)
        // kt-connect's way to ask for the proxy alone.
        options.mode = disableTunDevice ? .socks : mode
        guard (1...65535).contains(proxyPort) else { throw ValidationError("--proxy-port must be 1-65535") }
        options.proxyAddress = proxyAddress
        options.proxyPort = proxyPort
        options.tunName = tunName
        options.tunAddress = tunAddress
        guard (576...65535).contains(mtu) else {
            throw ValidationError("--mtu \(mtu) is outside 576-65535; nothing was changed")
        }
        options.mtu = mtu
        options.includeIPs = try prefixes(includeIPs, flag: "--include-ips")
        options.excludeIPs = try prefixes(excludeIPs, flag: "--exclude-ips")
        options.forceRoutes = forceRoutes
        options.clusterDomain = clusterDomain
        guard ["auto", "resolved", "resolv.conf", "none"].contains(dnsMode) else {
            throw ValidationError("--dns-mode \(dnsMode) is not one of auto, resolved, resolv.conf, none")
        }
        options.dnsMode = dnsMode
        do {
            try await ConnectCommand.run(options, logger: Output.logger(debug: cluster.debug), print: Output.line)
        } catch {
            Output.error("ktctl connect: \(error)")
            throw ExitCode.failure
        }
    }

    func prefixes(_ text: String, flag: String) throws -> [AnyIPPrefix] {
        try text.split(separator: ",").map { part in
            let trimmed = part.trimmingCharacters(in: .whitespaces)
            if let prefix = try? AnyIPPrefix.parse(trimmed) { return prefix }
            if let address = IPAddress(trimmed) {
                switch address {
                case .v4(let v4): return .v4(IPv4Prefix(host: v4))
                case .v6(let v6): return .v6(IPv6Prefix(host: v6))
                }
            }
            throw ValidationError("\(flag): '\(part)' is neither a prefix nor an address")
        }
    }
}

/// What every session command takes beside the cluster's flags: where its state lives and its Lease's duration
/// (both hidden: tests and CI set them).
struct SessionFlags: ParsableArguments {
    @Option(name: .customLong("state-dir"), help: .hidden)
    var stateDirectory: String?

    @Option(name: .customLong("lease-duration"), help: .hidden)
    var leaseDuration: Int = SessionLease.defaultDuration

    var root: String { stateDirectory ?? StateDirectory.defaultRoot }

    /// The Lease duration, refused below the minimum.
    func validatedLeaseDuration() throws -> Int {
        guard leaseDuration >= SessionLease.minimumDuration else {
            throw ValidationError("--lease-duration must be at least \(SessionLease.minimumDuration) seconds")
        }
        return leaseDuration
    }
}
