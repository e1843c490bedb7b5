import NIOCore

/// A resource record type (RFC 1035 §3.2.2 and later RFCs).
public struct DNSType: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public var rawValue: UInt16

    public init(rawValue: UInt16) {
        self.rawValue = rawValue
    }

    public static let a = DNSType(rawValue: 1)
    public static let ns = DNSType(rawValue: 2)
    public static let cname = DNSType(rawValue: 5)
    public static let soa = DNSType(rawValue: 6)
    public static let ptr = DNSType(rawValue: 12)
    public static let mx = DNSType(rawValue: 15)
    public static let txt = DNSType(rawValue: 16)
    public static let aaaa = DNSType(rawValue: 28)
    public static let srv = DNSType(rawValue: 33)
    public static let opt = DNSType(rawValue: 41)
    public static let any = DNSType(rawValue: 255)

    private static let names: [UInt16: String] = [
        1: "A", 2: "NS", 5: "CNAME", 6: "SOA", 12: "PTR", 15: "MX", 16: "TXT", 28: "AAAA", 33: "SRV", 41: "OPT",
        255: "ANY",
    ]

    /// The mnemonic, or `TYPE<n>` for types without one here (RFC 3597 §5).
    public var description: String { Self.names[rawValue] ?? "TYPE\(rawValue)" }
}

/// A record class. Only `IN` matters to us; others are kept as numbers.
public struct DNSClass: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public var rawValue: UInt16

    public init(rawValue: UInt16) {
        self.rawValue = rawValue
    }

    public static let internet = DNSClass(rawValue: 1)
    public static let chaos = DNSClass(rawValue: 3)
    public static let any = DNSClass(rawValue: 255)

    public var description: String {
        switch rawValue {
        case 1: return "IN"
        case 3: return "CH"
        case 255: return "ANY"
        default: return "CLASS\(rawValue)"
        }
    }
}

/// SRV record data (RFC 2782).
public struct DNSServiceData: Hashable, Sendable {
    public var priority: UInt16
    public var weight: UInt16
    public var port: UInt16
    public var target: DNSName

    public init(priority: UInt16, weight: UInt16, port: UInt16, target: DNSName) {
        self.priority = priority
        self.weight = weight
        self.port = port
        self.target = target
    }
}

/// SOA record data (RFC 1035 §3.3.13).
public struct DNSStartOfAuthority: Hashable, Sendable {
    public var primaryServer: DNSName
    public var responsibleMailbox: DNSName
    public var serial: UInt32
    public var refresh: UInt32
    public var retry: UInt32
    public var expire: UInt32
    /// The TTL of negative answers (RFC 2308 §4).
    public var minimum: UInt32

    public init(
        primaryServer: DNSName, responsibleMailbox: DNSName, serial: UInt32, refresh: UInt32, retry: UInt32,
        expire: UInt32, minimum: UInt32
    ) {
        self.primaryServer = primaryServer
        self.responsibleMailbox = responsibleMailbox
        self.serial = serial
        self.refresh = refresh
        self.retry = retry
        self.expire = expire
        self.minimum = minimum
    }
}

/// The data of a resource record, decoded for the types the engine uses and kept raw for the rest.
public enum DNSRecordData: Hashable, Sendable {
    case a(IPv4Address)
    case aaaa(IPv6Address)
    case cname(DNSName)
    case ns(DNSName)
    case ptr(DNSName)
    /// One or more character strings of at most 255 bytes each.
    case txt([[UInt8]])
    case srv(DNSServiceData)
    case soa(DNSStartOfAuthority)
    /// A type this library does not decode, kept byte for byte (RFC 3597).
    case unknown(DNSType, [UInt8])

    /// The record type this data belongs to.
    public var type: DNSType {
        switch self {
        case .a: return .a
        case .aaaa: return .aaaa
        case .cname: return .cname
        case .ns: return .ns
        case .ptr: return .ptr
        case .txt: return .txt
        case .srv: return .srv
        case .soa: return .soa
        case .unknown(let type, _): return type
        }
    }
}

/// A resource record: owner, class, TTL and data (RFC 1035 §4.1.3).
public struct DNSRecord: Hashable, Sendable, CustomStringConvertible {
    public var name: DNSName
    public var recordClass: DNSClass
    /// Seconds the record may be cached.
    public var ttl: UInt32
    public var data: DNSRecordData

    public init(name: DNSName, recordClass: DNSClass = .internet, ttl: UInt32, data: DNSRecordData) {
        self.name = name
        self.recordClass = recordClass
        self.ttl = ttl
        self.data = data
    }

    /// The record type.
    public var type: DNSType { data.type }

    /// A zone-file line like `dig` prints.
    public var description: String {
        let value: String
        switch data {
        case .a(let address): value = address.description
        case .aaaa(let address): value = address.description
        case .cname(let name), .ns(let name), .ptr(let name): value = name.description
        case .txt(let strings):
            value = strings.map { "\"" + String(decoding: $0, as: UTF8.self) + "\"" }.joined(separator: " ")
        case .srv(let srv): value = "\(srv.priority) \(srv.weight) \(srv.port) \(srv.target)"
        case .soa(let soa):
            value =
                "\(soa.primaryServer) \(soa.responsibleMailbox) \(soa.serial) \(soa.refresh) \(soa.retry) "
                + "\(soa.expire) \(soa.minimum)"
        case .unknown(_, let bytes):
            value = "\\# \(bytes.count) " + bytes.map { String($0, radix: 16).leftPadded(to: 2) }.joined()
        }
        return "\(name) \(ttl) \(recordClass) \(type) \(value)"
    }
}

/// An EDNS(0) option (RFC 6891 §6.1.2), such as a cookie (code 10).
public struct EDNSOption: Hashable, Sendable {
    public var code: UInt16
    public var data: [UInt8]

    public init(code: UInt16, data: [UInt8]) {
        self.code = code
        self.data = data
    }

    public static let cookieCode: UInt16 = 10
}

/// What an OPT pseudo-record says (RFC 6891 §6.1): a message carries at most one.
public struct EDNS: Hashable, Sendable {
    /// The largest UDP payload the sender can reassemble.
    public var udpPayloadSize: UInt16
    /// The upper eight bits of the 12-bit response code.
    public var extendedResponseCode: UInt8
    public var version: UInt8
    /// DNSSEC answers wanted (the DO bit).
    public var dnssecOK: Bool
    public var options: [EDNSOption]

    public init(
        udpPayloadSize: UInt16 = 1232, extendedResponseCode: UInt8 = 0, version: UInt8 = 0, dnssecOK: Bool = false,
        options: [EDNSOption] = []
    ) {
        self.udpPayloadSize = udpPayloadSize
        self.extendedResponseCode = extendedResponseCode
        self.version = version
        self.dnssecOK = dnssecOK
        self.options = options
    }
}

extension String {
    func leftPadded(to width: Int) -> String {
        count >= width ? self : String(repeating: "0", count: width - count) + self
    }
}
