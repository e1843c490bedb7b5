import NIOCore
import PropertyBased
import Testing

@testable import KtWire

/// DNS messages: dig's own query and BIND's real answers (CapturedPackets.swift), crafted hostile input, and
/// round trips.
@Suite struct DNSTests {
    private func parse(_ bytes: [UInt8]) throws -> DNSMessage {
        try DNSMessage(parsing: ByteBuffer(bytes))
    }

    // MARK: - Real messages

    @Test func digsQuery() throws {
        let query = try parse(Captured.dnsQueryFromDig)
        #expect(query.header.id == 2555)
        #expect(!query.header.isResponse && query.header.recursionDesired && query.header.authenticData)
        #expect(query.questions == [DNSQuestion(name: "www.kw.test", type: .a)])
        #expect(query.answers.isEmpty && query.authorities.isEmpty && query.additionals.isEmpty)
        let edns = try #require(query.edns)
        #expect(edns.udpPayloadSize == 1232 && edns.version == 0 && !edns.dnssecOK)
        #expect(
            edns.options == [
                EDNSOption(code: EDNSOption.cookieCode, data: [0x41, 0x06, 0x1B, 0xC1, 0xE1, 0xEA, 0x25, 0x4B])
            ])
        // A query has nothing to compress: our encoding is dig's, byte for byte.
        #expect(Array(buffer: query.encoded()) == Captured.dnsQueryFromDig)
    }

    @Test func cnameChainWithCompression() throws {
        let answer = try parse(Captured.dnsAnswerCNAMEChain)
        #expect(answer.header.id == 2555 && answer.header.isResponse && answer.header.authoritative)
        #expect(!answer.header.recursionAvailable && answer.responseCode == .noError)
        #expect(
            answer.answers == [
                DNSRecord(name: "www.kw.test", ttl: 120, data: .cname("alias.kw.test")),
                DNSRecord(name: "alias.kw.test", ttl: 180, data: .cname("web.kw.test")),
                DNSRecord(name: "web.kw.test", ttl: 60, data: .a(IPv4Address(10, 77, 0, 80))),
                DNSRecord(name: "web.kw.test", ttl: 60, data: .a(IPv4Address(10, 77, 0, 81))),
            ])
        #expect(answer.authorities == [DNSRecord(name: "kw.test", ttl: 300, data: .ns("ns1.kw.test"))])
        #expect(answer.additionals == [DNSRecord(name: "ns1.kw.test", ttl: 300, data: .a(IPv4Address(10, 77, 0, 2)))])
        #expect(answer.edns?.options.first?.data.count == 24)
        #expect(answer.answers[2].description == "web.kw.test. 60 IN A 10.77.0.80")
    }

    @Test func aaaaSrvPtrTxtNs() throws {
        let aaaa = try parse(Captured.dnsAnswerAAAA)
        #expect(
            aaaa.answers == [
                DNSRecord(name: "web.kw.test", ttl: 60, data: .aaaa(try #require(IPv6Address("fd00:77::80"))))
            ])

        let srv = try parse(Captured.dnsAnswerSRV)
        #expect(
            srv.answers.map(\.data) == [
                .srv(DNSServiceData(priority: 10, weight: 60, port: 8080, target: "web.kw.test")),
                .srv(DNSServiceData(priority: 20, weight: 40, port: 8081, target: "mail.kw.test")),
            ])
        #expect(srv.additionals.count == 5 && srv.additionals.last?.type == .aaaa)

        let ptr = try parse(Captured.dnsAnswerPTR)
        #expect(ptr.questions == [DNSQuestion(name: "80.0.77.10.in-addr.arpa", type: .ptr)])
        #expect(ptr.answers == [DNSRecord(name: "80.0.77.10.in-addr.arpa", ttl: 300, data: .ptr("web.kw.test"))])

        let txt = try parse(Captured.dnsAnswerTXT)
        #expect(txt.answers.first?.data == .txt([Array("v=ktconnect1".utf8), Array("hello KtWire world".utf8)]))

        let ns = try parse(Captured.dnsAnswerNS)
        #expect(ns.header.id == 57164 && ns.answers == [DNSRecord(name: "kw.test", ttl: 300, data: .ns("ns1.kw.test"))])
    }

    @Test func nxdomainWithSOA() throws {
        let answer = try parse(Captured.dnsAnswerNXDomainSOA)
        #expect(answer.header.id == 11905 && answer.responseCode == .nameError && answer.answers.isEmpty)
        #expect(
            answer.authorities == [
                DNSRecord(
                    name: "kw.test", ttl: 60,
                    data: .soa(
                        DNSStartOfAuthority(
                            primaryServer: "ns1.kw.test", responsibleMailbox: "hostmaster.kw.test",
                            serial: 2_026_112_201,
                            refresh: 3600, retry: 600, expire: 86400, minimum: 60)))
            ])
    }

    @Test func unknownTypesArePreservedByteForByte() throws {
        let caa = try parse(Captured.dnsAnswerUnknownType)
        let expected = [0x00, 0x05] + Array("issueletsencrypt.org".utf8)
        #expect(caa.answers.map(\.data) == [.unknown(DNSType(rawValue: 257), expected)])
        #expect(caa.answers[0].description.hasSuffix("TYPE257 \\# 22 000569737375656c657473656e63727970742e6f7267"))
        let mx = try parse(Captured.dnsAnswerMX)
        #expect(mx.answers.first?.type == .mx)
        // MX is not decoded, so its compressed target cannot be re-pointed: it must be kept as sent only if the
        // target needs no pointer. Check that a re-encoded MX answer keeps the exact data BIND sent.
        #expect(try parse(Array(buffer: mx.encoded())).answers == mx.answers)
    }

    @Test func truncatedAnswerFromBIND() throws {
        let answer = try parse(Captured.dnsAnswerTruncated)
        #expect(answer.header.truncated && answer.header.id == 40981 && answer.edns == nil)
        #expect(answer.answers.count == 4)
        #expect(
            answer.answers.allSatisfy {
                if case .txt(let s) = $0.data { s.count == 1 && s[0].count == 99 } else { false }
            })
    }

    @Test(arguments: [
        Captured.dnsAnswerCNAMEChain, Captured.dnsAnswerAAAA, Captured.dnsAnswerSRV, Captured.dnsAnswerPTR,
        Captured.dnsAnswerTXT, Captured.dnsAnswerNXDomainSOA, Captured.dnsAnswerNS, Captured.dnsAnswerUnknownType,
        Captured.dnsAnswerTruncated, Captured.dnsQueryFromDig,
    ])
    func realMessagesRoundTripAtNoGreaterSize(bytes: [UInt8]) throws {
        let message = try parse(bytes)
        let encoded = message.encoded()
        #expect(try DNSMessage(parsing: encoded) == message)
        // BIND compresses everything RFC 1035 allows; our encoding is never larger.
        #expect(encoded.readableBytes <= bytes.count)
    }

    @Test(arguments: [
        Captured.dnsAnswerCNAMEChain, Captured.dnsAnswerSRV, Captured.dnsAnswerNXDomainSOA, Captured.dnsQueryFromDig,
    ])
    func everyTruncationIsRefused(bytes: [UInt8]) {
        for cut in truncations(of: bytes) {
            #expect(throws: WireError.self, "\(cut.count) bytes") { try DNSMessage(parsing: ByteBuffer(cut)) }
        }
    }

    // MARK: - Hostile input

    /// A header with one question, then `name` bytes, then type A class IN.
    private func query(name: [UInt8]) -> [UInt8] {
        [0x12, 0x34, 0x01, 0x00, 0x00, 0x01, 0, 0, 0, 0, 0, 0] + name + [0, 1, 0, 1]
    }

    @Test func compressionLoopsAreRefused() {
        // A pointer to itself (offset 12).
        #expect(throws: WireError(.loop, "DNS.question[0].name", "compression pointer at 12 to 12 does not point back"))
        {
            try parse(query(name: [0xC0, 0x0C]))
        }
        // A label then a pointer back to that label: a -> a -> ... would loop without the backwards rule.
        #expect(throws: WireError.self) { try parse(query(name: [0x01, 0x61, 0xC0, 0x0C])) }
        // A forward pointer.
        #expect(throws: WireError.self) { try parse(query(name: [0xC0, 0x20])) }
        // Extended label types.
        #expect(throws: WireError(.unsupported, "DNS.question[0].name", "label type 0x41")) {
            try parse(query(name: [0x41, 0x00]))
        }
    }

    @Test func pointerChainsAreBounded() {
        // 100 pointers, each to the previous one: each points back, but following them all is refused.
        var bytes: [UInt8] = [0x12, 0x34, 0x01, 0x00, 0x00, 0x01, 0, 0, 0, 0, 0, 0, 0x00, 0, 1, 0, 1]
        bytes[5] = 2
        var previous = 12
        for _ in 0..<100 {
            let here = bytes.count
            bytes += [0xC0 | UInt8(previous >> 8), UInt8(previous & 0xFF), 0, 1, 0, 1]
            previous = here
        }
        bytes[5] = 101
        #expect(throws: WireError(.loop, "DNS.question[65].name", "more than 64 compression pointers")) {
            try parse(bytes)
        }
    }

    @Test func oversizedNamesAndDataAreRefused() {
        // 5 labels of 63 octets: 321 octets in wire form.
        let label: [UInt8] = [63] + Array(repeating: UInt8(ascii: "a"), count: 63)
        let long: [UInt8] = Array(repeating: label, count: 5).flatMap { $0 } + [0]
        #expect(throws: WireError(.tooLong, "DNS.question[0].name", "more than 255 octets")) {
            try parse(query(name: long))
        }
        // An AAAA record whose rdlength is 17: header 12, question 13 + 4, then pointer, type, class, TTL.
        var answer = Array(Captured.dnsAnswerAAAA)
        #expect(answer[39] == 0 && answer[40] == 16)
        answer[40] = 17
        #expect(throws: WireError(.invalidValue, "DNS.answer[0].rdlength", "AAAA needs 16, got 17")) {
            try parse(answer)
        }
        // Bytes after the last record.
        #expect(throws: WireError(.invalidValue, "DNS.message", "1 bytes after the last record")) {
            try parse(Captured.dnsQueryFromDig + [0])
        }
        // Counts that promise more than there is.
        var lying = Captured.dnsQueryFromDig
        lying[7] = 200
        #expect(throws: WireError.self) { try parse(lying) }
    }

    @Test func twoOPTRecordsAreAFormatError() throws {
        var bytes = Captured.dnsQueryFromDig
        bytes[11] = 2
        bytes += Array(Captured.dnsQueryFromDig[(Captured.dnsQueryFromDig.count - 23)...])
        #expect(throws: WireError(.invalidValue, "DNS.additional[1]", "a second OPT record")) { try parse(bytes) }
    }

    // MARK: - Names

    @Test func namesParsePrintAndCompare() throws {
        let name = try DNSName(parsing: "Tomcat.Default.svc.cluster.local.")
        #expect(name.labels.count == 5)
        #expect(name == "tomcat.default.svc.cluster.local")
        #expect(name.hashValue == DNSName("tomcat.default.svc.cluster.local").hashValue)
        #expect(name.description == "Tomcat.Default.svc.cluster.local.")
        #expect(name.isSubdomain(of: "cluster.local") && name.isSubdomain(of: .root) && !name.isSubdomain(of: "svc"))
        #expect(name.parent == "default.svc.cluster.local")
        #expect(try DNSName(parsing: "tomcat").appending("default.svc.cluster.local") == name)
        #expect(try DNSName(parsing: ".") == .root && DNSName.root.description == ".")
        #expect(name.wireLength == 34)
        let escaped = try DNSName(parsing: "a\\.b.c\\032d")
        #expect(escaped.labels == [Array("a.b".utf8), Array("c d".utf8)])
        #expect(escaped.description == "a\\.b.c\\032d.")
        #expect(try DNSName(parsing: escaped.description) == escaped)
    }

    @Test func badNamesAreRefused() {
        for bad in [
            "a..b", ".a", "a\\", "a\\25", "a\\256", String(repeating: "x", count: 64),
            Array(repeating: String(repeating: "y", count: 63), count: 5).joined(separator: "."),
        ] {
            #expect(throws: WireError.self, "\(bad)") { try DNSName(parsing: bad) }
        }
    }

    // MARK: - Building answers

    @Test func responsesEchoTheQuery() throws {
        let query = try parse(Captured.dnsQueryFromDig)
        var response = query.makeResponse(authoritative: true)
        response.answers = [DNSRecord(name: "www.kw.test", ttl: 5, data: .a(IPv4Address(10, 96, 0, 10)))]
        let parsed = try DNSMessage(parsing: response.encoded())
        #expect(parsed.header.id == query.header.id && parsed.header.isResponse && parsed.header.authoritative)
        #expect(parsed.questions == query.questions && parsed.edns != nil && parsed.answers.count == 1)
        var refused = query.makeResponse(responseCode: .badVersion)
        refused.answers = []
        #expect(try DNSMessage(parsing: refused.encoded()).responseCode == .badVersion)
    }

    @Test func truncationOnEmitKeepsWholeRecordsAndSetsTC() throws {
        let query = try parse(Captured.dnsQueryFromDig)
        var response = query.makeResponse()
        response.answers = (0..<40).map {
            DNSRecord(name: "www.kw.test", ttl: 5, data: .a(IPv4Address(bits: 0x0A00_0000 + UInt32($0))))
        }
        let whole = response.encoded()
        #expect(whole.readableBytes > 512)
        let cut = response.encoded(limit: 512)
        #expect(cut.readableBytes <= 512)
        let parsed = try DNSMessage(parsing: cut)
        #expect(parsed.header.truncated && parsed.edns != nil)
        #expect(parsed.answers == Array(response.answers.prefix(parsed.answers.count)) && parsed.answers.count > 20)
    }

    @Test func compressionShrinksRepeatedNames() throws {
        var message = DNSMessage(header: DNSHeader(id: 1, isResponse: true))
        message.questions = [DNSQuestion(name: "tomcat.default.svc.cluster.local", type: .a)]
        message.answers = (1...3).map {
            DNSRecord(name: "tomcat.default.svc.cluster.local", ttl: 5, data: .a(IPv4Address(10, 244, 0, UInt8($0))))
        }
        message.additionals = [
            DNSRecord(name: "other.default.svc.cluster.local", ttl: 5, data: .cname("tomcat.default.svc.cluster.local"))
        ]
        let encoded = message.encoded()
        // Question name 34 bytes; every later mention of it is a 2-byte pointer, "other." adds 6 + 2.
        #expect(encoded.readableBytes == 12 + 34 + 4 + 3 * (2 + 10 + 4) + (6 + 2 + 10 + 2))
        #expect(try DNSMessage(parsing: encoded) == message)
    }

    @Test func randomMessagesRoundTrip() async {
        let labels = Gen.letterOrNumber.string(of: 1...12).array(of: 1...4)
        await propertyCheck(count: 200, input: labels.array(of: 1...6), Gen.uint32(), Gen.uint16()) { names, seed, id in
            let dnsNames = names.map { DNSName(validatedLabels: $0.map { Array($0.utf8) }) }
            var message = DNSMessage(header: DNSHeader(id: id, isResponse: true, recursionAvailable: seed & 1 == 1))
            message.questions = [DNSQuestion(name: dnsNames[0], type: .a)]
            for (index, name) in dnsNames.enumerated() {
                let target = dnsNames[(index + 1) % dnsNames.count]
                let datas: [DNSRecordData] = [
                    .a(IPv4Address(bits: seed &+ UInt32(index))), .aaaa(IPv6Address(bits: UInt128(seed) << 64)),
                    .cname(target), .ns(target), .ptr(target), .txt([Array(name.description.utf8)]),
                    .srv(DNSServiceData(priority: 1, weight: 2, port: id, target: target)),
                    .soa(
                        DNSStartOfAuthority(
                            primaryServer: target, responsibleMailbox: name, serial: seed, refresh: 1, retry: 2,
                            expire: 3, minimum: 4)),
                    .unknown(DNSType(rawValue: 99), [1, 2, 3]),
                ]
                let record = DNSRecord(name: name, ttl: seed >> 8, data: datas[(Int(seed) + index) % datas.count])
                switch index % 3 {
                case 0: message.answers.append(record)
                case 1: message.authorities.append(record)
                default: message.additionals.append(record)
                }
            }
            if seed & 2 == 2 {
                message.edns = EDNS(
                    udpPayloadSize: 4096, options: [EDNSOption(code: 10, data: [1, 2, 3, 4, 5, 6, 7, 8])])
            }
            #expect((try? DNSMessage(parsing: message.encoded())) == message)
        }
    }
}
