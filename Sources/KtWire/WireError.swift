/// Why a parser refused its input, and which field it was reading.
///
/// Every KtWire parser is total: any input gives a value or one of these. The `field` names the
/// header field or part of the message (for example `"IPv4.totalLength"` or `"DNS.answer[2].name"`)
/// so that a log line says what was wrong without a packet dump.
public struct WireError: Error, Hashable, Sendable, CustomStringConvertible {
    /// The kind of problem.
    public enum Kind: Hashable, Sendable {
        /// The input ends before the field does.
        case truncated
        /// The field holds a value the format does not allow (bad version, length smaller than the header, …).
        case invalidValue
        /// A length field says the thing is larger than the format allows.
        case tooLong
        /// A checksum does not match the data.
        case badChecksum
        /// A chain of pointers or headers does not end (DNS compression loop, IPv6 header chain too long).
        case loop
        /// Well-formed, but not something this library handles (for example an ESP-encrypted IPv6 payload).
        case unsupported
    }

    /// The kind of problem.
    public var kind: Kind
    /// The field being read, as `"Format.field"`.
    public var field: String
    /// Extra detail for people, such as the offending value.
    public var detail: String

    /// Makes an error for `field`.
    public init(_ kind: Kind, _ field: String, _ detail: String = "") {
        self.kind = kind
        self.field = field
        self.detail = detail
    }

    public var description: String {
        let what: String
        switch kind {
        case .truncated: what = "input ends inside"
        case .invalidValue: what = "invalid value in"
        case .tooLong: what = "length too large in"
        case .badChecksum: what = "checksum mismatch in"
        case .loop: what = "unending chain in"
        case .unsupported: what = "unsupported"
        }
        return detail.isEmpty ? "\(what) \(field)" : "\(what) \(field): \(detail)"
    }
}
