import PropertyBased
import Testing

@testable import KtWire

@Suite struct AddressTests {
    // MARK: - IPv4 text

    @Test(arguments: ["0.0.0.0", "10.96.0.10", "255.255.255.255", "127.0.0.1", "192.168.1.254"])
    func ipv4RoundTrips(text: String) throws {
        let address = try #require(IPv4Address(text))
        #expect(address.description == text)
    }

    @Test(arguments: [
        "", "1.2.3", "1.2.3.4.5", "256.0.0.1", "01.2.3.4", "1..2.3", "1.2.3.4 ", "a.b.c.d", "1.2.3.-4",
        "1.2.3.4/8", "999999999999.1.1.1",
    ])
    func ipv4RefusesMalformedText(text: String) {
        #expect(IPv4Address(text) == nil)
    }

    @Test func ipv4OctetsAndBits() {
        let address = IPv4Address(10, 96, 0, 10)
        #expect(address.bits == 0x0A60_000A)
        #expect(address.octets == (10, 96, 0, 10))
        #expect(IPv4Address.loopback.isSpecial)
        #expect(!address.isSpecial)
    }

    // MARK: - IPv6 text (RFC 5952 §4 examples)

    @Test(arguments: [
        ("2001:db8:0:0:0:0:2:1", "2001:db8::2:1"),
        ("2001:0db8:0000:0000:0000:0000:0002:0001", "2001:db8::2:1"),
        ("2001:db8:0:1:1:1:1:1", "2001:db8:0:1:1:1:1:1"),  // one zero group is not shortened (§4.2.2)
        ("2001:0:0:1:0:0:0:1", "2001:0:0:1::1"),  // the longest run wins (§4.2.3)
        ("2001:db8:0:0:1:0:0:1", "2001:db8::1:0:0:1"),  // the first run wins a tie (§4.2.3)
        ("2001:DB8::AB", "2001:db8::ab"),  // lower case (§4.3)
        ("::", "::"), ("::1", "::1"), ("1::", "1::"), ("fe80::1:2", "fe80::1:2"),
        ("::ffff:10.0.0.1", "::ffff:10.0.0.1"), ("::ffff:a00:1", "::ffff:10.0.0.1"),
        ("1:2:3:4:5:6:7:8", "1:2:3:4:5:6:7:8"), ("64:ff9b::192.0.2.33", "64:ff9b::c000:221"),
    ])
    func ipv6Canonical(input: String, canonical: String) throws {
        let address = try #require(IPv6Address(input))
        #expect(address.description == canonical)
        #expect(IPv6Address(canonical) == address)
    }

    @Test(arguments: [
        "", ":", ":::", "1:2:3:4:5:6:7:8:9", "1::2::3", "12345::", "g::1", "1:2:3:4:5:6:7", ":1::",
        "1::2:", "::1.2.3", "::1.2.3.4:5", "fe80::1%eth0", "1:2:3:4:5:6:7:8::", "::1:2:3:4:5:6:7:8",
    ])
    func ipv6RefusesMalformedText(text: String) {
        #expect(IPv6Address(text) == nil)
    }

    @Test func ipv6Classes() throws {
        #expect(try #require(IPv6Address("fe80::1")).isLinkLocal)
        #expect(try #require(IPv6Address("ff02::1")).isMulticast)
        #expect(try #require(IPv6Address("::ffff:1.2.3.4")).ipv4Mapped == IPv4Address(1, 2, 3, 4))
        #expect(IPAddress("10.0.0.1") == .v4(IPv4Address(10, 0, 0, 1)))
        #expect(IPAddress("::1") == .v6(.loopback))
        #expect(IPAddress("nonsense") == nil)
    }

    @Test func ipv6TextRoundTripsForAnyAddress() async {
        await propertyCheck(input: Gen.uint128()) { bits in
            let address = IPv6Address(bits: bits)
            #expect(IPv6Address(address.description) == address)
        }
        // Sparse addresses exercise the zero-run compression.
        let sparse = Gen.uint16(in: 0...3).array(of: 8)
        await propertyCheck(input: sparse) { groups in
            let address = IPv6Address(groups: groups)
            #expect(IPv6Address(address.description) == address)
        }
    }

    @Test func ipv4TextRoundTripsForAnyAddress() async {
        await propertyCheck(input: Gen.uint32()) { bits in
            let address = IPv4Address(bits: bits)
            #expect(IPv4Address(address.description) == address)
        }
    }

    // MARK: - Prefixes

    @Test func prefixParsing() throws {
        let prefix = try IPv4Prefix.parse("10.96.0.0/12")
        #expect(prefix.network == IPv4Address(10, 96, 0, 0))
        #expect(prefix.length == 12)
        #expect(prefix.last == IPv4Address(10, 111, 255, 255))
        #expect(try IPv4Prefix.parse("10.0.0.7") == IPv4Prefix(host: IPv4Address(10, 0, 0, 7)))
        #expect(try IPv6Prefix.parse("fd00::/8").description == "fd00::/8")
        #expect(try AnyIPPrefix.parse("fd00:10::/64") == .v6(try IPv6Prefix.parse("fd00:10::/64")))
    }

    @Test func prefixParsingSaysWhatIsWrong() {
        #expect(
            throws: WireError(
                .invalidValue, "prefix.address", "host bits are set in 10.1.2.3/8; did you mean 10.0.0.0/8?")
        ) {
            try IPv4Prefix.parse("10.1.2.3/8")
        }
        for bad in ["10.0.0.0/33", "10.0.0.0/", "10.0.0.0/-1", "10.0.0/8", "10.0.0.0/8/9", "10.0.0.0/+8", "x/8"] {
            #expect(throws: WireError.self, "\(bad)") { try IPv4Prefix.parse(bad) }
        }
        #expect(throws: WireError.self) { try IPv6Prefix.parse("fd00::/129") }
        #expect(IPv4Prefix("10.0.0.0/8") != nil)
        #expect(IPv4Prefix("10.0.0.1/8") == nil)
    }

    @Test func prefixRelations() throws {
        let big = try IPv4Prefix.parse("10.0.0.0/8")
        let small = try IPv4Prefix.parse("10.96.0.0/12")
        let other = try IPv4Prefix.parse("192.168.0.0/16")
        #expect(big.contains(small))
        #expect(!small.contains(big))
        #expect(big.overlaps(small) && small.overlaps(big))
        #expect(!big.overlaps(other))
        #expect(big.contains(IPv4Address(10, 255, 0, 1)))
        #expect(!big.contains(IPv4Address(11, 0, 0, 0)))
        let all = try IPv4Prefix.parse("0.0.0.0/0")
        #expect(all.contains(other) && all.contains(IPv4Address.broadcast))
        #expect(AnyIPPrefix.v4(big).overlaps(.v4(small)))
        #expect(!AnyIPPrefix.v4(all).overlaps(.v6(try IPv6Prefix.parse("::/0"))))
    }

    @Test func coveringPrefix() throws {
        let addresses = [IPv4Address(10, 244, 0, 5), IPv4Address(10, 244, 1, 9), IPv4Address(10, 244, 3, 200)]
        #expect(IPv4Prefix.covering(addresses) == (try IPv4Prefix.parse("10.244.0.0/22")))
        #expect(IPv4Prefix.covering([IPv4Address(10, 0, 0, 1)]) == IPv4Prefix(host: IPv4Address(10, 0, 0, 1)))
        #expect(IPv4Prefix.covering([IPv4Address]()) == nil)
        #expect(IPv4Prefix.covering([IPv4Address.any, .broadcast])?.length == 0)
        let prefixes = [try IPv4Prefix.parse("10.96.0.0/16"), try IPv4Prefix.parse("10.97.128.0/17")]
        #expect(IPv4Prefix.covering(prefixes) == (try IPv4Prefix.parse("10.96.0.0/15")))
    }

    @Test func subtractingTheAPIServerFromAServiceRange() throws {
        let services = try IPv4Prefix.parse("10.96.0.0/12")
        let apiServer = IPv4Prefix(host: IPv4Address(10, 96, 0, 1))
        let left = services.subtracting([apiServer])
        // A /12 minus one address is 20 prefixes, /13 down to /32, none containing the API server.
        #expect(left.count == 20)
        #expect(left.allSatisfy { !$0.contains(apiServer.network) })
        #expect(left.contains(IPv4Prefix(host: IPv4Address(10, 96, 0, 0))))
        #expect(left.contains(try IPv4Prefix.parse("10.104.0.0/13")))
        let covered = left.reduce(0) { $0 + (1 << (32 - $1.length)) }
        #expect(covered == (1 << 20) - 1)
    }

    @Test func subtractingEdgeCases() throws {
        let prefix = try IPv4Prefix.parse("10.0.0.0/24")
        #expect(prefix.subtracting([]) == [prefix])
        #expect(prefix.subtracting([try IPv4Prefix.parse("10.0.0.0/8")]) == [])
        #expect(prefix.subtracting([try IPv4Prefix.parse("192.168.0.0/16")]) == [prefix])
        #expect(
            prefix.subtracting([try IPv4Prefix.parse("10.0.0.0/25")]) == [try IPv4Prefix.parse("10.0.0.128/25")])
        let v6 = try IPv6Prefix.parse("fd00::/64")
        let cut = v6.subtracting([try IPv6Prefix.parse("fd00::1/128")])
        #expect(cut.count == 64)
    }

    @Test func subtractingRemovesExactlyTheExcludedAddresses() async {
        // Small /24-based universe so that every address can be checked.
        let excludes = Gen.uint8().array(of: 0...4).map { seeds in
            seeds.map { IPv4Prefix(containing: IPv4Address(10, 0, 0, $0), length: 24 + Int($0 % 9)) }
        }
        await propertyCheck(input: excludes) { excluded in
            let base = IPv4Prefix(containing: IPv4Address(10, 0, 0, 0), length: 24)
            let left = base.subtracting(excluded)
            for last in 0...255 {
                let address = IPv4Address(10, 0, 0, UInt8(last))
                let inLeft = left.filter { $0.contains(address) }.count
                let isExcluded = excluded.contains { $0.contains(address) }
                #expect(inLeft == (isExcluded ? 0 : 1), "\(address) in \(left) minus \(excluded)")
            }
            #expect(left == left.sorted { $0.network < $1.network })
        }
    }

    // MARK: - Sequence numbers

    @Test func sequenceNumbersWrap() {
        let near = TCPSequenceNumber(UInt32.max - 10)
        let past = near + UInt32(20)
        #expect(past.rawValue == 9)
        #expect(near < past)
        #expect(past - near == 20)
        #expect(near - past == -20)
        #expect(past.isInWindow(start: near, size: 21))
        #expect(!past.isInWindow(start: near, size: 20))
        #expect(TCPSequenceNumber.later(near, past) == past)
        #expect(past - UInt32(20) == near)
        var moving = near
        moving += 11
        #expect(moving.rawValue == 0)
    }

    @Test func sequenceOrderIsAntisymmetricWithinHalfTheSpace() async {
        await propertyCheck(input: Gen.uint32(), Gen.uint32(in: 1...(1 << 31 - 1))) { start, distance in
            let a = TCPSequenceNumber(start)
            let b = a + distance
            #expect(a < b && !(b < a))
            #expect(b - a == Int32(distance))
        }
    }
}
