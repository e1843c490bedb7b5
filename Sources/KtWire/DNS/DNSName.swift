/// A domain name as a list of labels (RFC 1035 §3.1), compared without regard to ASCII case (RFC 4343).
///
/// Labels are bytes, not text: a label may hold any octet, and ``description`` escapes the ones that are not
/// printable the way `dig` does (`\.`, `\032`).
public struct DNSName: Hashable, Sendable, CustomStringConvertible, ExpressibleByStringLiteral {
    /// The labels, leftmost first, without the empty root label.
    public private(set) var labels: [[UInt8]]

    /// A label holds at most 63 octets (RFC 1035 §2.3.4).
    public static let maximumLabelLength = 63
    /// A name takes at most 255 octets in wire form, length bytes and the root's zero included (RFC 1035 §2.3.4).
    public static let maximumWireLength = 255

    /// The root name, `.`.
    public static let root = DNSName(validatedLabels: [])

    init(validatedLabels: [[UInt8]]) {
        self.labels = validatedLabels
    }

    /// Makes a name from labels, checking the lengths.
    public init(labels: [[UInt8]]) throws(WireError) {
        for label in labels {
            guard !label.isEmpty else { throw WireError(.invalidValue, "DNS.name", "empty label") }
            guard label.count <= Self.maximumLabelLength else {
                throw WireError(.tooLong, "DNS.name.label", "\(label.count) octets; at most 63")
            }
        }
        let wire = labels.reduce(1) { $0 + 1 + $1.count }
        guard wire <= Self.maximumWireLength else {
            throw WireError(.tooLong, "DNS.name", "\(wire) octets; at most 255")
        }
        self.labels = labels
    }

    /// Parses presentation text (`tomcat.default.svc.cluster.local`, a trailing dot optional, `\.` and `\DDD`
    /// escapes as in RFC 1035 §5.1). `.` and the empty string are the root.
    public init(parsing text: String) throws(WireError) {
        var labels: [[UInt8]] = []
        var label: [UInt8] = []
        let bytes = Array(text.utf8)
        if bytes == [UInt8(ascii: ".")] || bytes.isEmpty {
            self = .root
            return
        }
        var index = 0
        while index < bytes.count {
            let byte = bytes[index]
            if byte == UInt8(ascii: ".") {
                guard !label.isEmpty else { throw WireError(.invalidValue, "DNS.name", "empty label in '\(text)'") }
                labels.append(label)
                label = []
                index += 1
                continue
            }
            if byte == UInt8(ascii: "\\") {
                index += 1
                guard index < bytes.count else { throw WireError(.truncated, "DNS.name.escape", "'\(text)'") }
                if bytes[index].isASCIIDigit {
                    guard index + 2 < bytes.count, bytes[index + 1].isASCIIDigit, bytes[index + 2].isASCIIDigit else {
                        throw WireError(.invalidValue, "DNS.name.escape", "\\DDD needs three digits in '\(text)'")
                    }
                    let value = bytes[index..<(index + 3)].reduce(0) { $0 * 10 + Int($1 - UInt8(ascii: "0")) }
                    guard value <= 255 else { throw WireError(.invalidValue, "DNS.name.escape", "\\\(value)") }
                    label.append(UInt8(value))
                    index += 3
                } else {
                    label.append(bytes[index])
                    index += 1
                }
                continue
            }
            label.append(byte)
            index += 1
        }
        if !label.isEmpty { labels.append(label) }
        try self.init(labels: labels)
    }

    public init(stringLiteral value: String) {
        do {
            try self.init(parsing: value)
        } catch {
            preconditionFailure("invalid DNS name literal '\(value)': \(error)")
        }
    }

    /// The size of the name in uncompressed wire form.
    public var wireLength: Int { labels.reduce(1) { $0 + 1 + $1.count } }

    /// True for the root name.
    public var isRoot: Bool { labels.isEmpty }

    /// The labels in lower case, for comparing and hashing.
    public var canonicalLabels: [[UInt8]] { labels.map { $0.map(\.asciiLowercased) } }

    /// True if this name equals `suffix` or lies below it (`a.b.c` is a subdomain of `b.c` and of `.`).
    public func isSubdomain(of suffix: DNSName) -> Bool {
        guard suffix.labels.count <= labels.count else { return false }
        let offset = labels.count - suffix.labels.count
        for (index, label) in suffix.labels.enumerated() where !Self.labelsEqual(labels[offset + index], label) {
            return false
        }
        return true
    }

    /// This name with `suffix` appended (`tomcat` + `default.svc.cluster.local`).
    public func appending(_ suffix: DNSName) throws(WireError) -> DNSName {
        try DNSName(labels: labels + suffix.labels)
    }

    /// The name without its leftmost label; the root stays the root.
    public var parent: DNSName { DNSName(validatedLabels: Array(labels.dropFirst())) }

    static func labelsEqual(_ a: [UInt8], _ b: [UInt8]) -> Bool {
        a.count == b.count && zip(a, b).allSatisfy { $0.asciiLowercased == $1.asciiLowercased }
    }

    public static func == (lhs: DNSName, rhs: DNSName) -> Bool {
        lhs.labels.count == rhs.labels.count && zip(lhs.labels, rhs.labels).allSatisfy { labelsEqual($0, $1) }
    }

    public func hash(into hasher: inout Hasher) {
        hasher.combine(labels.count)
        for label in labels {
            hasher.combine(label.count)
            for byte in label { hasher.combine(byte.asciiLowercased) }
        }
    }

    /// Presentation form with a trailing dot, escaping as `dig` does.
    public var description: String {
        if labels.isEmpty { return "." }
        var text = ""
        for label in labels {
            for byte in label {
                switch byte {
                case UInt8(ascii: "."), UInt8(ascii: "\\"), UInt8(ascii: "\""), UInt8(ascii: ";"), UInt8(ascii: "("),
                    UInt8(ascii: ")"), UInt8(ascii: "@"), UInt8(ascii: "$"):
                    text += "\\" + String(UnicodeScalar(byte))
                case 0x21...0x7E:
                    text.unicodeScalars.append(UnicodeScalar(byte))
                default:
                    let digits = String(byte)
                    text += "\\" + String(repeating: "0", count: 3 - digits.count) + digits
                }
            }
            text += "."
        }
        return text
    }
}

extension UInt8 {
    var isASCIIDigit: Bool { self >= UInt8(ascii: "0") && self <= UInt8(ascii: "9") }

    var asciiLowercased: UInt8 {
        self >= UInt8(ascii: "A") && self <= UInt8(ascii: "Z") ? self | 0x20 : self
    }
}
