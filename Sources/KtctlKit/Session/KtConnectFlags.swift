/// kt-connect 0.3.7's command lines, made ktctl's: each of its flags and values is either translated to ours (the same
/// effect) or refused with what to use instead. Runs on the raw arguments before anything parses them, so scripts
/// written for kt-connect keep working or fail at once with a reason; nothing is half-done.
public enum KtConnectFlags {
    /// Why a kt-connect flag cannot be honoured, and what to do instead.
    public struct Refusal: Error, CustomStringConvertible, Sendable {
        public var description: String
    }

    /// Flags of kt-connect that ktctl refuses, with what to use instead. Keyed by every spelling.
    static let refused: [String: String] = [
        "--useShadowDeployment": "ktctl runs the shadow as a Pod tied to the session's Lease; drop the flag",
        "--useLocalTime": "not needed: ktctl judges ages by the API server's clock (its Date header); drop the flag",
        "--portForwardTimeout": "ktctl re-opens a dropped port-forward at once, by itself; drop the flag",
        "--asWorker": "not used by kt-connect either; drop the flag",
        "--shareShadow": "every ktctl connect has its own shadow pod (its key is the session's); drop the flag",
        "--disablePodIp": "route only Services with --exclude-ips <the pod ranges> (ktctl route --check shows them)",
        "--ingressIp": "not supported: reach an Ingress through its Service or controller's ClusterIP",
        "--disableTunRoute": "not supported: tun mode without routes reaches nothing; use --mode socks",
        "--dnsCacheTtl": "ktctl's resolver keeps each answer for its own TTL (negative answers 1 s); drop the flag",
        "--dnsPort": "macOS only in kt-connect; ktctl's resolver listens on the TUN's address, port 53",
        "--includeDomains": "macOS only in kt-connect; ktctl answers the cluster's names and sends the rest upstream",
    ]

    /// Flags that take a value in kt-connect (so the value is consumed with a refused flag).
    static let takesValue: Set<String> = [
        "--portForwardTimeout", "--podCreationTimeout", "--ipVersion", "--ingressIp", "--dnsCacheTtl", "--dnsPort",
        "--includeDomains", "--dnsMode",
    ]

    /// kt-connect's arguments as ktctl's.
    public static func translate(_ arguments: [String]) throws -> [String] {
        var result: [String] = []
        var index = 0
        while index < arguments.count {
            let argument = arguments[index]
            if argument == "--" {
                result += arguments[index...]
                break
            }
            let parts = argument.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false).map(String.init)
            let name = parts[0]
            var value: String? = parts.count == 2 ? parts[1] : nil
            func takeValue() throws -> String {
                if let value { return value }
                guard index + 1 < arguments.count else { throw Refusal(description: "\(name) needs a value") }
                index += 1
                return arguments[index]
            }
            switch name {
            case _ where refused[name] != nil:
                if takesValue.contains(name) { _ = try takeValue() }
                throw Refusal(description: "\(name) (kt-connect): \(refused[name]!)")
            case "-f", "--forceUpdate":
                result.append("--force-update")
            case "--podCreationTimeout":
                result += ["--timeout", try takeValue()]
            case "--ipVersion":
                let version = try takeValue()
                guard version == "4" else {
                    throw Refusal(
                        description: "--ipVersion \(version) (kt-connect): ktctl routes the cluster's IPv4 ranges; "
                            + "IPv6 clusters are not supported yet")
                }
            case "--skipCleanup":
                // kt-connect cleaned expired resources at every start unless told not to; ktctl never does (that is
                // `ktctl clean`), so the flag's effect is already there.
                break
            case "--dnsMode", "--dns-mode":
                // kt-connect's values also under ktctl's spelling (a kt-connect config's `connect.dns-mode`).
                value = try takeValue()
                result += ["--dns-mode", try dnsMode(value!)]
            case "--mode":
                let mode = try takeValue()
                result += ["--mode", try self.mode(mode)]
            default:
                result.append(argument)
            }
            index += 1
        }
        return result
    }

    /// `--mode`: kt-connect's connect modes become ktctl's; other commands' modes pass.
    static func mode(_ value: String) throws -> String {
        switch value {
        case "tun2socks": return "tun"
        case "sshuttle", "vpn":
            throw Refusal(
                description: "--mode \(value) (kt-connect): ktctl has no sshuttle mode; --mode tun does what it did "
                    + "(every program reaches the cluster) without sshuttle or Python in the pod")
        case "ephemeral":
            throw Refusal(
                description: "--mode ephemeral (kt-connect, experimental and unfinished there): use --mode selector "
                    + "or --mode scale")
        default: return value
        }
    }

    /// `--dnsMode`: kt-connect's DNS modes become ktctl's `--dns-mode`.
    static func dnsMode(_ value: String) throws -> String {
        let base = value.split(separator: ":", maxSplits: 1).first.map(String.init) ?? value
        switch base {
        case "localDNS":
            guard !value.contains(":") else {
                throw Refusal(
                    description: "--dnsMode \(value) (kt-connect): ktctl asks the cluster for cluster names and the "
                        + "machine's upstream for the rest, in that order only; use --dnsMode localDNS")
            }
            return "auto"
        case "podDNS":
            throw Refusal(
                description: "--dnsMode podDNS (kt-connect, sshuttle only): use --dnsMode localDNS (--dns-mode auto)")
        case "hosts":
            throw Refusal(
                description: "--dnsMode hosts (kt-connect): ktctl does not write the hosts file; use --dnsMode "
                    + "localDNS (--dns-mode auto), which resolves every Service name and short name")
        default:
            return value
        }
    }
}
