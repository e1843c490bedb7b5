import Foundation
import KtTunnel
import KtWire
import NIOCore
import NIOSSH
import NamespaceTestSupport
import Testing

@testable import ShadowKit

/// The small formats of the tunnel, each against what it must accept and refuse; the session key against
/// OpenSSH's own `ssh-keygen`.
struct TunnelProtocolTests {
    // MARK: - Dial status

    @Test(arguments: [
        DialStatus.connected, .failed(.refused), .failed(.unreachable), .failed(.timedOut), .failed(.nameNotFound),
        .failed(.busy), .failed(.other("no route to the moon")),
    ])
    func dialStatusRoundTrips(_ status: DialStatus) throws {
        var buffer = ByteBuffer(string: status.line + "payload")
        #expect(try DialStatus.read(from: &buffer) == status)
        #expect(String(buffer: buffer) == "payload", "the bytes after the line stay for the stream")
    }

    @Test func dialStatusWaitsForTheWholeLineAndRefusesGarbage() throws {
        var partial = ByteBuffer(string: "err refu")
        #expect(try DialStatus.read(from: &partial) == nil)
        #expect(partial.readableBytes == 8, "nothing is consumed until the line is complete")
        for bad in ["hello\n", "err\n", String(repeating: "x", count: DialStatus.maximumLineLength + 1)] {
            var buffer = ByteBuffer(string: bad)
            #expect(throws: TunnelError.self) { _ = try DialStatus.read(from: &buffer) }
        }
    }

    @Test func whyQuestionsAndAnswers() {
        let request = DialStatus.whyRequest(host: "tomcat", port: 8080)
        #expect(request == "why tomcat 8080\n")
        #expect(DialStatus.parseWhyRequest(request.dropLast())! == ("tomcat", 8080))
        #expect(DialStatus.parseWhyRequest("why [fd00::1] 443")! == ("[fd00::1]", 443))
        for bad in ["why tomcat", "why tomcat 0", "why tomcat 65536", "why a b c", "ping", "why tomcat x"] {
            #expect(DialStatus.parseWhyRequest(bad[...]) == nil, "\(bad)")
        }
        let answer = DialStatus.whyAnswer(host: "tomcat", port: 8080, status: .failed(.refused))
        let parsed = DialStatus.parseWhyAnswer(answer.dropLast())
        #expect(parsed?.host == "tomcat" && parsed?.port == 8080 && parsed?.status == .failed(.refused))
        #expect(DialStatus.parseWhyAnswer("why tomcat 8080 nonsense") == nil)
    }

    // MARK: - Datagram frames

    static let frames: [DatagramFrame] = [
        DatagramFrame(
            kind: .udp, flow: 1, address: .v4(IPv4Address(10, 96, 0, 10)), port: 53, payload: ByteBuffer(string: "q")),
        DatagramFrame(
            kind: .echo, flow: 0xFFFF_FFFF, address: .v6(IPv6Address("fd00::1")!), port: 0,
            payload: ByteBuffer(bytes: [0, 1, 0, 2, 9, 9])),
        DatagramFrame(kind: .closed, flow: 7, address: .nameserver, port: 53, payload: ByteBuffer()),
        DatagramFrame(
            kind: .udp, flow: 8, address: .v4(IPv4Address(127, 0, 0, 1)), port: 9,
            payload: ByteBuffer(repeating: 0xAB, count: DatagramFrame.maximumLength - 12)),
    ]

    @Test func datagramFramesRoundTripWholeAndByteByByte() throws {
        var stream = ByteBuffer()
        for frame in Self.frames { #expect(frame.encode(into: &stream)) }
        var whole = stream
        var decoded: [DatagramFrame] = []
        while let frame = try DatagramFrame.decode(from: &whole) { decoded.append(frame) }
        #expect(decoded == Self.frames)
        #expect(whole.readableBytes == 0)

        // The same stream arriving one byte at a time.
        var trickle = ByteBuffer()
        decoded = []
        for byte in stream.readableBytesView {
            trickle.writeInteger(byte)
            while let frame = try DatagramFrame.decode(from: &trickle) { decoded.append(frame) }
        }
        #expect(decoded == Self.frames)
    }

    @Test func datagramFrameRefusesWhatItCannotCarryOrParse() {
        var buffer = ByteBuffer()
        let tooBig = DatagramFrame(
            kind: .udp, flow: 1, address: .v6(IPv6Address("::1")!), port: 1,
            payload: ByteBuffer(repeating: 0, count: DatagramFrame.maximumLength))
        #expect(!tooBig.encode(into: &buffer))
        #expect(buffer.readableBytes == 0, "a frame that does not fit writes nothing")
        for bad: [UInt8] in [
            [0, 3, 9, 9, 9],  // unknown kind
            [0, 8, 0, 0, 0, 0, 1, 5, 0, 53],  // unknown family
            [0, 9, 0, 0, 0, 0, 1, 4, 10, 0, 0],  // truncated address and port
        ] {
            var bytes = ByteBuffer(bytes: bad)
            #expect(throws: (any Error).self) { _ = try DatagramFrame.decode(from: &bytes) }
        }
    }

    // MARK: - resolv.conf and hosts

    @Test func resolvConfReadsWhatAPodGets() {
        let conf = ResolvConf(
            parsing: """
                # written by the kubelet
                search default.svc.cluster.local svc.cluster.local cluster.local
                nameserver 10.96.0.10
                nameserver fd00::a ; comment
                nameserver not-an-address
                options ndots:5 timeout:2 attempts:3 rotate
                """)
        #expect(conf.nameservers.map { $0.ipAddress } == ["10.96.0.10", "fd00::a"])
        #expect(conf.search.map { "\($0)" } == ["default.svc.cluster.local.", "svc.cluster.local.", "cluster.local."])
        #expect(conf.ndots == 5 && conf.timeout == .seconds(2) && conf.attempts == 3)
    }

    @Test func searchCandidatesFollowGlibcOrder() throws {
        let conf = ResolvConf(parsing: "search default.svc.cluster.local svc.cluster.local\noptions ndots:2\n")
        let short = conf.candidates(for: try DNSName(parsing: "tomcat")).map { "\($0)" }
        #expect(short == ["tomcat.default.svc.cluster.local.", "tomcat.svc.cluster.local.", "tomcat."])
        let dotted = conf.candidates(for: try DNSName(parsing: "api.example.com")).map { "\($0)" }
        #expect(dotted.first == "api.example.com.", "a name with ndots dots is tried as it is first")
    }

    @Test func hostsFileAnswersFirst() {
        let hosts = HostsFile(
            parsing: "127.0.0.1 localhost\n10.1.2.3 shadow-abc shadow # pod\nfd00::3 shadow\nbad line\n")
        #expect(hosts.addresses(for: "shadow").count == 2)
        #expect(hosts.addresses(for: "SHADOW-ABC").count == 1, "names are case-insensitive")
        #expect(hosts.addresses(for: "nosuch").isEmpty)
    }

    @Test func answersAreRewrittenToTheAskedName() throws {
        let asked = try DNSName(parsing: "tomcat")
        let expanded = try DNSName(parsing: "tomcat.default.svc.cluster.local")
        var answer = DNSMessage(
            header: DNSHeader(id: 9, isResponse: true, opcode: 0, recursionDesired: true),
            questions: [DNSQuestion(name: expanded, type: .a)])
        answer.answers = [DNSRecord(name: expanded, ttl: 5, data: .a(IPv4Address(10, 0, 0, 7)))]
        let rewritten = NameserverClient.rewrite(answer, from: expanded, to: asked)
        #expect(rewritten.questions.first?.name == asked)
        #expect(rewritten.answers.first?.name == asked)
    }

    // MARK: - Keys

    @Test func authorizedKeysErrorsNameTheLine() throws {
        let key = SessionKey()
        let keys = try ShadowConfiguration.parseAuthorizedKeys(
            "# ktctl session\n\n" + key.authorizedKeysLine() + "\n", source: "KT_AUTHORIZED_KEYS")
        #expect(keys == [key.sshPublicKey])
        do {
            _ = try ShadowConfiguration.parseAuthorizedKeys("ssh-ed25519 AAAAnotbase64!!\n", source: "keys.pub")
            Issue.record("a broken key was accepted")
        } catch {
            #expect("\(error)".contains("keys.pub line 1"), "\(error)")
        }
    }

    @Test(.enabled(if: TestNamespace.findExecutable("ssh-keygen") != nil, "needs ssh-keygen"))
    func sessionKeyFilesAreWhatOpenSSHReads() throws {
        let key = SessionKey()
        let directory = NSTemporaryDirectory() + "kt-key-\(getpid())-\(UInt32.random(in: 0..<UInt32.max))"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let path = directory + "/id"
        try key.writePrivateKey(to: path)
        let attributes = try FileManager.default.attributesOfItem(atPath: path)
        #expect((attributes[.posixPermissions] as? Int) == 0o600)
        // ssh-keygen derives the public key from our private key file, and fingerprints it as we do.
        let derived = try TestNamespace.check(TestNamespace.run(["ssh-keygen", "-y", "-f", path]))
        #expect(
            derived.output.split(separator: " ").prefix(2) == key.authorizedKeysLine().split(separator: " ").prefix(2))
        let fingerprint = try TestNamespace.check(TestNamespace.run(["ssh-keygen", "-l", "-f", path]))
        #expect(fingerprint.output.contains(hostKeyFingerprint(key.sshPublicKey)), "\(fingerprint.output)")
    }
}
