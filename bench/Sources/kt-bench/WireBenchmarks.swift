import KtWire
import NIOCore

/// Parse and emit throughput of KtWire's formats, and checksum bandwidth.
enum WireBenchmarks {
    static func run() -> String {
        var table = Table(headers: ["KtWire", "ops/s", "ns/op", "note"])
        func row(_ name: String, _ rate: Double, _ note: String = "") {
            table.add([name, formatted(rate / 1e6, 2) + " M", formatted(1e9 / rate, 1), note])
        }

        // A 1500-byte IPv4 TCP segment with timestamps, as the kernel sends in bulk.
        let source = IPv4Address(10, 0, 0, 1)
        let destination = IPv4Address(10, 96, 0, 15)
        let pseudo = IPPseudoHeader.v4(source: source, destination: destination)
        let tcpHeader = TCPHeader(
            sourcePort: 40000, destinationPort: 8080, sequenceNumber: TCPSequenceNumber(1),
            acknowledgementNumber: TCPSequenceNumber(2), flags: [.ack, .psh], window: 512,
            options: TCPOptions(timestamps: TCPTimestamps(value: 1, echoReply: 2)))
        let payload = ByteBuffer(repeating: 0x5A, count: 1500 - 20 - tcpHeader.headerLength)
        var segment = ByteBuffer()
        let ipHeader = IPv4Header(protocol: .tcp, source: source, destination: destination)
        ipHeader.emit(into: &segment, payloadLength: tcpHeader.headerLength + payload.readableBytes)
        tcpHeader.emit(into: &segment, payload: payload, pseudoHeader: pseudo)
        precondition(segment.readableBytes == 1500)
        let packet = segment

        let parse = operationsPerSecond {
            var total = 0
            for _ in 0..<1000 {
                guard case .v4(let ip) = try? IPPacket(validating: packet),
                    let tcp = try? TCPSegment(validating: ip.payload)
                else { preconditionFailure("benchmark packet does not parse") }
                total &+= Int(tcp.sequenceNumber.rawValue) &+ tcp.payloadLength
            }
            return total
        }
        row("parse IPv4+TCP 1500 B", parse, "header checks, options decoded; payload checksum not verified")

        let verify = operationsPerSecond {
            var total = 0
            for _ in 0..<1000 {
                guard case .v4(let ip) = try? IPPacket(validating: packet),
                    let tcp = try? TCPSegment(validating: ip.payload), tcp.isChecksumValid(pseudo)
                else { preconditionFailure("benchmark packet does not verify") }
                total &+= tcp.payloadLength
            }
            return total
        }
        row("parse+verify IPv4+TCP 1500 B", verify, "plus the TCP checksum over 1480 bytes")

        var out = ByteBuffer()
        out.reserveCapacity(2048)
        let emit = operationsPerSecond {
            for _ in 0..<1000 {
                out.clear()
                ipHeader.emit(into: &out, payloadLength: tcpHeader.headerLength + payload.readableBytes)
                tcpHeader.emit(into: &out, payload: payload, pseudoHeader: pseudo)
            }
            return out.readableBytes
        }
        row("emit IPv4+TCP 1500 B", emit, "with payload copy and checksum")

        let roundTrip = operationsPerSecond {
            for _ in 0..<1000 {
                guard case .v4(let ip) = try? IPPacket(validating: packet),
                    let tcp = try? TCPSegment(validating: ip.payload)
                else { preconditionFailure() }
                out.clear()
                ip.header.emit(into: &out, payloadLength: ip.payload.readableBytes)
                tcp.header.emit(into: &out, payload: tcp.payload, pseudoHeader: pseudo)
            }
            return out.readableBytes
        }
        row("parse+emit IPv4+TCP 1500 B", roundTrip, "\(formatted(roundTrip * 1500 * 8 / 1e9, 1)) Gbit/s")

        // UDP + DNS.
        var query = DNSMessage(header: DNSHeader(id: 7))
        query.questions = [DNSQuestion(name: "tomcat.default.svc.cluster.local", type: .a)]
        query.edns = EDNS()
        var answer = query.makeResponse(authoritative: true)
        answer.answers = (1...3).map {
            DNSRecord(name: "tomcat.default.svc.cluster.local", ttl: 5, data: .a(IPv4Address(10, 244, 0, UInt8($0))))
        }
        let answerBytes = answer.encoded()
        let dnsParse = operationsPerSecond(batch: 100) {
            var total = 0
            for _ in 0..<100 { total &+= (try? DNSMessage(parsing: answerBytes))?.answers.count ?? 0 }
            return total
        }
        row("parse DNS answer (3 A)", dnsParse, "\(answerBytes.readableBytes) bytes, compressed names")
        let dnsEmit = operationsPerSecond(batch: 100) {
            var total = 0
            for _ in 0..<100 { total &+= answer.encoded().readableBytes }
            return total
        }
        row("emit DNS answer (3 A)", dnsEmit, "with compression")

        var udp = ByteBuffer()
        UDPHeader(sourcePort: 5353, destinationPort: 53).emit(into: &udp, payload: answerBytes, pseudoHeader: pseudo)
        let udpParse = operationsPerSecond {
            var total = 0
            for _ in 0..<1000 { total &+= (try? UDPDatagram(validating: udp))?.length ?? 0 }
            return total
        }
        row("parse UDP", udpParse)

        // Checksum bandwidth at the sizes the engine sees.
        var checksums = Table(headers: ["checksum", "GB/s", "ns/op"])
        for size in [64, 1500, 9000, 65536] {
            let bytes = [UInt8](repeating: 0xA5, count: size)
            let rate = bytes.withUnsafeBytes { raw in
                operationsPerSecond(batch: 100) {
                    var total = 0
                    for _ in 0..<100 { total &+= Int(InternetChecksum.of(raw)) }
                    return total
                }
            }
            checksums.add(["\(size) bytes", formatted(rate * Double(size) / 1e9, 2), formatted(1e9 / rate, 1)])
        }
        return table.render() + "\n\n" + checksums.render()
    }
}
