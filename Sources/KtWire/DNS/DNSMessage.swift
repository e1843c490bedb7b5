import NIOCore

/// The flags and codes of a DNS header (RFC 1035 §4.1.1, RFC 4035 §3.2 for AD and CD).
public struct DNSHeader: Hashable, Sendable {
    public var id: UInt16
    /// QR: this is a response.
    public var isResponse: Bool
    /// 0 is a standard query.
    public var opcode: UInt8
    /// AA: the answer comes from an authority for the name.
    public var authoritative: Bool
    /// TC: the message was cut to fit; ask again over TCP or with a larger EDNS size.
    public var truncated: Bool
    /// RD: the client wants recursion.
    public var recursionDesired: Bool
    /// RA: the server offers recursion.
    public var recursionAvailable: Bool
    /// AD: the data was authenticated.
    public var authenticData: Bool
    /// CD: the client does not want the server to check signatures.
    public var checkingDisabled: Bool
    /// The low four bits of the response code; EDNS adds eight more.
    public var responseCode: DNSResponseCode

    public init(
        id: UInt16, isResponse: Bool = false, opcode: UInt8 = 0, authoritative: Bool = false, truncated: Bool = false,
        recursionDesired: Bool = true, recursionAvailable: Bool = false, authenticData: Bool = false,
        checkingDisabled: Bool = false, responseCode: DNSResponseCode = .noError
    ) {
        self.id = id
        self.isResponse = isResponse
        self.opcode = opcode
        self.authoritative = authoritative
        self.truncated = truncated
        self.recursionDesired = recursionDesired
        self.recursionAvailable = recursionAvailable
        self.authenticData = authenticData
        self.checkingDisabled = checkingDisabled
        self.responseCode = responseCode
    }

    /// The 16-bit flags word.
    var flagsWord: UInt16 {
        var word = UInt16(opcode & 0x0F) << 11 | UInt16(responseCode.rawValue & 0x0F)
        if isResponse { word |= 0x8000 }
        if authoritative { word |= 0x0400 }
        if truncated { word |= 0x0200 }
        if recursionDesired { word |= 0x0100 }
        if recursionAvailable { word |= 0x0080 }
        if authenticData { word |= 0x0020 }
        if checkingDisabled { word |= 0x0010 }
        return word
    }

    init(id: UInt16, flagsWord word: UInt16) {
        self.init(
            id: id, isResponse: word & 0x8000 != 0, opcode: UInt8(word >> 11 & 0x0F), authoritative: word & 0x0400 != 0,
            truncated: word & 0x0200 != 0, recursionDesired: word & 0x0100 != 0,
            recursionAvailable: word & 0x0080 != 0, authenticData: word & 0x0020 != 0,
            checkingDisabled: word & 0x0010 != 0, responseCode: DNSResponseCode(rawValue: word & 0x0F))
    }
}

/// A response code, 12 bits with EDNS (RFC 6895 §2.3).
public struct DNSResponseCode: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public var rawValue: UInt16

    public init(rawValue: UInt16) {
        self.rawValue = rawValue
    }

    public static let noError = DNSResponseCode(rawValue: 0)
    public static let formatError = DNSResponseCode(rawValue: 1)
    public static let serverFailure = DNSResponseCode(rawValue: 2)
    public static let nameError = DNSResponseCode(rawValue: 3)
    public static let notImplemented = DNSResponseCode(rawValue: 4)
    public static let refused = DNSResponseCode(rawValue: 5)
    public static let badVersion = DNSResponseCode(rawValue: 16)

    public var description: String {
        switch rawValue {
        case 0: return "NOERROR"
        case 1: return "FORMERR"
        case 2: return "SERVFAIL"
        case 3: return "NXDOMAIN"
        case 4: return "NOTIMP"
        case 5: return "REFUSED"
        case 16: return "BADVERS"
        default: return "RCODE\(rawValue)"
        }
    }
}

/// One question (RFC 1035 §4.1.2).
public struct DNSQuestion: Hashable, Sendable, CustomStringConvertible {
    public var name: DNSName
    public var type: DNSType
    public var questionClass: DNSClass

    public init(name: DNSName, type: DNSType, questionClass: DNSClass = .internet) {
        self.name = name
        self.type = type
        self.questionClass = questionClass
    }

    public var description: String { "\(name) \(questionClass) \(type)" }
}

/// A whole DNS message (RFC 1035 §4.1).
///
/// The OPT pseudo-record is not kept among ``additionals``: it is decoded into ``edns`` and written back
/// from it, and the full response code combines the header's four bits with EDNS's eight.
public struct DNSMessage: Hashable, Sendable {
    public var header: DNSHeader
    public var questions: [DNSQuestion]
    public var answers: [DNSRecord]
    public var authorities: [DNSRecord]
    public var additionals: [DNSRecord]
    public var edns: EDNS?

    /// A DNS message over UDP without EDNS is at most 512 bytes (RFC 1035 §2.3.4).
    public static let classicUDPLimit = 512
    /// The header's size.
    public static let headerLength = 12
    /// How many compression pointers one name may follow. Pointers must point backwards, which already ends
    /// every chain; this bound caps the work a hostile message can cause at far less than its length.
    public static let maximumPointerJumps = 64

    public init(
        header: DNSHeader, questions: [DNSQuestion] = [], answers: [DNSRecord] = [], authorities: [DNSRecord] = [],
        additionals: [DNSRecord] = [], edns: EDNS? = nil
    ) {
        self.header = header
        self.questions = questions
        self.answers = answers
        self.authorities = authorities
        self.additionals = additionals
        self.edns = edns
    }

    /// The full response code: the header's four bits and, with EDNS, eight more.
    public var responseCode: DNSResponseCode {
        get {
            DNSResponseCode(
                rawValue: UInt16(edns?.extendedResponseCode ?? 0) << 4 | header.responseCode.rawValue & 0x0F)
        }
        set {
            header.responseCode = DNSResponseCode(rawValue: newValue.rawValue & 0x0F)
            if newValue.rawValue > 0x0F || edns != nil {
                if edns == nil { edns = EDNS() }
                edns?.extendedResponseCode = UInt8(truncatingIfNeeded: newValue.rawValue >> 4)
            }
        }
    }

    // MARK: - Parse

    /// Decodes the readable bytes of `buffer` as one DNS message. Trailing bytes after the last record are
    /// refused, as they mean the counts were wrong.
    public init(parsing buffer: ByteBuffer) throws(WireError) {
        var reader = DNSReader(message: buffer.slice())
        let id = try reader.readInteger(UInt16.self, "DNS.header.id")
        let flags = try reader.readInteger(UInt16.self, "DNS.header.flags")
        let counts = [
            try reader.readInteger(UInt16.self, "DNS.header.qdcount"),
            try reader.readInteger(UInt16.self, "DNS.header.ancount"),
            try reader.readInteger(UInt16.self, "DNS.header.nscount"),
            try reader.readInteger(UInt16.self, "DNS.header.arcount"),
        ]
        self.init(header: DNSHeader(id: id, flagsWord: flags))
        for index in 0..<Int(counts[0]) {
            let field = "DNS.question[\(index)]"
            let name = try reader.readName(field + ".name")
            let type = DNSType(rawValue: try reader.readInteger(UInt16.self, field + ".type"))
            let questionClass = DNSClass(rawValue: try reader.readInteger(UInt16.self, field + ".class"))
            questions.append(DNSQuestion(name: name, type: type, questionClass: questionClass))
        }
        for index in 0..<Int(counts[1]) { answers.append(try reader.readRecord("DNS.answer[\(index)]")) }
        for index in 0..<Int(counts[2]) { authorities.append(try reader.readRecord("DNS.authority[\(index)]")) }
        for index in 0..<Int(counts[3]) {
            let field = "DNS.additional[\(index)]"
            switch try reader.readRecordOrOPT(field) {
            case .record(let record):
                additionals.append(record)
            case .opt(let opt):
                // RFC 6891 §6.1.1: more than one OPT record is a format error.
                guard edns == nil else { throw WireError(.invalidValue, field, "a second OPT record") }
                edns = opt
            }
        }
        guard reader.remaining == 0 else {
            throw WireError(.invalidValue, "DNS.message", "\(reader.remaining) bytes after the last record")
        }
    }

    // MARK: - Emit

    /// Encodes the message with name compression. If it is longer than `limit`, whole records are dropped from
    /// the end (additionals, then authorities, then answers) and the TC bit is set (RFC 2181 §9), keeping the
    /// OPT record so the client learns our EDNS size.
    public func encoded(limit: Int = Int(UInt16.max)) -> ByteBuffer {
        var writer = DNSWriter()
        writer.write(self)
        if writer.buffer.readableBytes <= limit { return writer.buffer }
        var cut = self
        cut.header.truncated = true
        while !cut.additionals.isEmpty || !cut.authorities.isEmpty || !cut.answers.isEmpty {
            if !cut.additionals.isEmpty {
                cut.additionals.removeLast()
            } else if !cut.authorities.isEmpty {
                cut.authorities.removeLast()
            } else {
                cut.answers.removeLast()
            }
            var attempt = DNSWriter()
            attempt.write(cut)
            if attempt.buffer.readableBytes <= limit { return attempt.buffer }
        }
        var bare = DNSWriter()
        bare.write(cut)
        return bare.buffer
    }

    /// A response to this query with the same id, questions and RD bit, no records yet, and EDNS echoed if
    /// the query used it.
    public func makeResponse(responseCode: DNSResponseCode = .noError, authoritative: Bool = false) -> DNSMessage {
        var response = DNSMessage(
            header: DNSHeader(
                id: header.id, isResponse: true, opcode: header.opcode, authoritative: authoritative,
                recursionDesired: header.recursionDesired, recursionAvailable: true,
                checkingDisabled: header.checkingDisabled),
            questions: questions)
        if edns != nil { response.edns = EDNS() }
        response.responseCode = responseCode
        return response
    }
}

// MARK: - Reading

/// A cursor over one whole message, so compression pointers can reach back to its start.
struct DNSReader {
    let message: ByteBuffer
    var offset = 0

    init(message: ByteBuffer) {
        self.message = message
    }

    var remaining: Int { message.readableBytes - offset }

    mutating func readInteger<T: FixedWidthInteger>(_: T.Type, _ field: @autoclosure () -> String) throws(WireError)
        -> T
    {
        guard let value = message.getInteger(at: offset, as: T.self) else {
            throw WireError(.truncated, field())
        }
        offset += MemoryLayout<T>.size
        return value
    }

    mutating func readBytes(_ count: Int, _ field: @autoclosure () -> String) throws(WireError) -> [UInt8] {
        guard let bytes = message.getBytes(at: offset, length: count) else {
            throw WireError(.truncated, field(), "\(count) bytes wanted, \(remaining) left")
        }
        offset += count
        return bytes
    }

    /// Reads a possibly compressed name (RFC 1035 §4.1.4), leaving the cursor after its first pointer or its
    /// terminating zero.
    mutating func readName(_ field: @autoclosure () -> String) throws(WireError) -> DNSName {
        var labels: [[UInt8]] = []
        var wireLength = 1
        var position = offset
        var resumeAt: Int? = nil
        var jumps = 0
        while true {
            guard let length = message.getInteger(at: position, as: UInt8.self) else {
                throw WireError(.truncated, field())
            }
            switch length >> 6 {
            case 0:
                if length == 0 {
                    offset = resumeAt ?? position + 1
                    return DNSName(validatedLabels: labels)
                }
                guard let label = message.getBytes(at: position + 1, length: Int(length)) else {
                    throw WireError(.truncated, field(), "label of \(length) octets")
                }
                wireLength += 1 + Int(length)
                guard wireLength <= DNSName.maximumWireLength else {
                    throw WireError(.tooLong, field(), "more than 255 octets")
                }
                labels.append(label)
                position += 1 + Int(length)
            case 3:
                guard let pointer = message.getInteger(at: position, as: UInt16.self) else {
                    throw WireError(.truncated, field(), "compression pointer")
                }
                let target = Int(pointer & 0x3FFF)
                // Only backward pointers are allowed (a prior occurrence, RFC 1035 §4.1.4); so every chain ends.
                guard target < position else {
                    throw WireError(
                        .loop, field(), "compression pointer at \(position) to \(target) does not point back")
                }
                jumps += 1
                guard jumps <= DNSMessage.maximumPointerJumps else {
                    throw WireError(.loop, field(), "more than \(DNSMessage.maximumPointerJumps) compression pointers")
                }
                if resumeAt == nil { resumeAt = position + 2 }
                position = target
            default:
                // 0b01 and 0b10 were extended label types (RFC 6891 §5), never deployed.
                throw WireError(.unsupported, field(), "label type 0x\(String(length, radix: 16))")
            }
        }
    }

    enum RecordOrOPT {
        case record(DNSRecord)
        case opt(EDNS)
    }

    mutating func readRecord(_ field: String) throws(WireError) -> DNSRecord {
        switch try readRecordOrOPT(field) {
        case .record(let record): return record
        case .opt: throw WireError(.invalidValue, field + ".type", "OPT outside the additional section")
        }
    }

    mutating func readRecordOrOPT(_ field: String) throws(WireError) -> RecordOrOPT {
        let name = try readName(field + ".name")
        let type = DNSType(rawValue: try readInteger(UInt16.self, field + ".type"))
        let classValue = try readInteger(UInt16.self, field + ".class")
        let ttl = try readInteger(UInt32.self, field + ".ttl")
        let length = Int(try readInteger(UInt16.self, field + ".rdlength"))
        guard length <= remaining else {
            throw WireError(.truncated, field + ".rdata", "rdlength \(length), \(remaining) bytes left")
        }
        let end = offset + length
        let data: DNSRecordData
        switch type {
        case .opt:
            guard name.isRoot else { throw WireError(.invalidValue, field + ".name", "OPT owner must be the root") }
            var options: [EDNSOption] = []
            while offset < end {
                let code = try readInteger(UInt16.self, field + ".option.code")
                let optionLength = Int(try readInteger(UInt16.self, field + ".option.length"))
                guard offset + optionLength <= end else {
                    throw WireError(.truncated, field + ".option[\(code)]", "length \(optionLength)")
                }
                options.append(EDNSOption(code: code, data: try readBytes(optionLength, field + ".option.data")))
            }
            try expectEnd(end, field)
            return .opt(
                EDNS(
                    udpPayloadSize: classValue, extendedResponseCode: UInt8(truncatingIfNeeded: ttl >> 24),
                    version: UInt8(truncatingIfNeeded: ttl >> 16), dnssecOK: ttl & 0x8000 != 0, options: options))
        case .a:
            guard length == 4 else { throw WireError(.invalidValue, field + ".rdlength", "A needs 4, got \(length)") }
            data = .a(IPv4Address(bits: try readInteger(UInt32.self, field + ".rdata")))
        case .aaaa:
            guard length == 16 else {
                throw WireError(.invalidValue, field + ".rdlength", "AAAA needs 16, got \(length)")
            }
            let high = try readInteger(UInt64.self, field + ".rdata")
            let low = try readInteger(UInt64.self, field + ".rdata")
            data = .aaaa(IPv6Address(bits: UInt128(high) << 64 | UInt128(low)))
        case .cname:
            data = .cname(try readName(field + ".rdata.cname"))
        case .ns:
            data = .ns(try readName(field + ".rdata.ns"))
        case .ptr:
            data = .ptr(try readName(field + ".rdata.ptr"))
        case .txt:
            var strings: [[UInt8]] = []
            while offset < end {
                let stringLength = Int(try readInteger(UInt8.self, field + ".rdata.txt"))
                guard offset + stringLength <= end else {
                    throw WireError(.truncated, field + ".rdata.txt", "string of \(stringLength) bytes")
                }
                strings.append(try readBytes(stringLength, field + ".rdata.txt"))
            }
            guard !strings.isEmpty else { throw WireError(.invalidValue, field + ".rdata.txt", "no strings") }
            data = .txt(strings)
        case .srv:
            let priority = try readInteger(UInt16.self, field + ".rdata.priority")
            let weight = try readInteger(UInt16.self, field + ".rdata.weight")
            let port = try readInteger(UInt16.self, field + ".rdata.port")
            let target = try readName(field + ".rdata.target")
            data = .srv(DNSServiceData(priority: priority, weight: weight, port: port, target: target))
        case .soa:
            let primary = try readName(field + ".rdata.mname")
            let mailbox = try readName(field + ".rdata.rname")
            data = .soa(
                DNSStartOfAuthority(
                    primaryServer: primary, responsibleMailbox: mailbox,
                    serial: try readInteger(UInt32.self, field + ".rdata.serial"),
                    refresh: try readInteger(UInt32.self, field + ".rdata.refresh"),
                    retry: try readInteger(UInt32.self, field + ".rdata.retry"),
                    expire: try readInteger(UInt32.self, field + ".rdata.expire"),
                    minimum: try readInteger(UInt32.self, field + ".rdata.minimum")))
        default:
            data = .unknown(type, try readBytes(length, field + ".rdata"))
        }
        try expectEnd(end, field)
        return .record(DNSRecord(name: name, recordClass: DNSClass(rawValue: classValue), ttl: ttl, data: data))
    }

    private func expectEnd(_ end: Int, _ field: String) throws(WireError) {
        guard offset == end else {
            throw WireError(.invalidValue, field + ".rdlength", "data ends at \(offset), rdlength says \(end)")
        }
    }
}

// MARK: - Writing

/// Writes messages with name compression: every name suffix written at an offset a pointer can reach is
/// remembered, and a later name ending in it points there.
struct DNSWriter {
    var buffer = ByteBuffer()
    private var suffixes: [[[UInt8]]: Int] = [:]

    /// Compression pointers hold 14 bits of offset.
    private static let maximumPointerTarget = 0x3FFF

    mutating func write(_ message: DNSMessage) {
        buffer.writeInteger(message.header.id)
        buffer.writeInteger(message.header.flagsWord)
        buffer.writeInteger(UInt16(truncatingIfNeeded: message.questions.count))
        buffer.writeInteger(UInt16(truncatingIfNeeded: message.answers.count))
        buffer.writeInteger(UInt16(truncatingIfNeeded: message.authorities.count))
        buffer.writeInteger(UInt16(truncatingIfNeeded: message.additionals.count + (message.edns == nil ? 0 : 1)))
        for question in message.questions {
            writeName(question.name, compress: true)
            buffer.writeInteger(question.type.rawValue)
            buffer.writeInteger(question.questionClass.rawValue)
        }
        for record in message.answers + message.authorities + message.additionals { write(record) }
        if let edns = message.edns {
            buffer.writeInteger(UInt8(0))
            buffer.writeInteger(DNSType.opt.rawValue)
            buffer.writeInteger(edns.udpPayloadSize)
            buffer.writeInteger(
                UInt32(edns.extendedResponseCode) << 24 | UInt32(edns.version) << 16 | (edns.dnssecOK ? 0x8000 : 0))
            buffer.writeInteger(UInt16(edns.options.reduce(0) { $0 + 4 + $1.data.count }))
            for option in edns.options {
                buffer.writeInteger(option.code)
                buffer.writeInteger(UInt16(option.data.count))
                buffer.writeBytes(option.data)
            }
        }
    }

    mutating func write(_ record: DNSRecord) {
        writeName(record.name, compress: true)
        buffer.writeInteger(record.type.rawValue)
        buffer.writeInteger(record.recordClass.rawValue)
        buffer.writeInteger(record.ttl)
        let lengthAt = buffer.writerIndex
        buffer.writeInteger(UInt16(0))
        switch record.data {
        case .a(let address):
            buffer.writeInteger(address.bits)
        case .aaaa(let address):
            buffer.writeIPv6Address(address)
        case .cname(let name), .ns(let name), .ptr(let name):
            // RFC 3597 §4: names in the RFC 1035 types may be compressed.
            writeName(name, compress: true)
        case .txt(let strings):
            for string in strings {
                precondition(string.count <= 255, "a TXT string holds at most 255 bytes")
                buffer.writeInteger(UInt8(string.count))
                buffer.writeBytes(string)
            }
        case .srv(let srv):
            buffer.writeInteger(srv.priority)
            buffer.writeInteger(srv.weight)
            buffer.writeInteger(srv.port)
            // RFC 2782: the SRV target is not compressed.
            writeName(srv.target, compress: false)
        case .soa(let soa):
            writeName(soa.primaryServer, compress: true)
            writeName(soa.responsibleMailbox, compress: true)
            for value in [soa.serial, soa.refresh, soa.retry, soa.expire, soa.minimum] { buffer.writeInteger(value) }
        case .unknown(_, let bytes):
            buffer.writeBytes(bytes)
        }
        let length = buffer.writerIndex - lengthAt - 2
        precondition(length <= Int(UInt16.max), "record data of \(length) bytes")
        buffer.setInteger(UInt16(length), at: lengthAt)
    }

    mutating func writeName(_ name: DNSName, compress: Bool) {
        let canonical = name.canonicalLabels
        for index in canonical.indices {
            let suffix = Array(canonical[index...])
            if compress, let target = suffixes[suffix] {
                buffer.writeInteger(UInt16(0xC000) | UInt16(target))
                return
            }
            if buffer.writerIndex <= Self.maximumPointerTarget, suffixes[suffix] == nil {
                suffixes[suffix] = buffer.writerIndex
            }
            let label = name.labels[index]
            buffer.writeInteger(UInt8(label.count))
            buffer.writeBytes(label)
        }
        buffer.writeInteger(UInt8(0))
    }
}
