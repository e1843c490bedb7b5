import Foundation
import Glibc
import KtEngine
import KtTunnel
import KtWire
import KubeKit
import NIOCore
import NIOPosix
import Testing

@testable import KtctlKit

/// The session core's parts on their own: process identities, the lock, the journal and atomic files, undo of a
/// file, Lease ages by the server's clock, HTTP dates, socket owners, the proxy's access rule, range limits, the
/// shadow plan and permission messages. Sessions end to end (signals, crashes, clocks, RBAC) are in SessionTests.
@Suite struct SessionCoreTests {
    /// A folder of its own under /tmp, removed (files only, no mounts are ever made in it) after the test.
    final class Scratch {
        let path: String
        init() throws {
            var template = Array("/tmp/ktsession.XXXXXX".utf8CString)
            guard mkdtemp(&template) != nil else { throw TestNamespaceError("mkdtemp failed") }
            path = String(cString: template)
        }
        deinit {
            if let files = FileManager.default.enumerator(atPath: path)?.allObjects as? [String] {
                for file in files.sorted().reversed() {
                    _ = unlink("\(path)/\(file)")
                    _ = rmdir("\(path)/\(file)")
                }
            }
            rmdir(path)
        }
    }

    struct TestNamespaceError: Error, CustomStringConvertible {
        var description: String
        init(_ description: String) { self.description = description }
    }

    // MARK: - Process identity

    @Test func startTimeIsReadAfterTheLastParenthesis() {
        // A command name with spaces and parentheses must not shift the fields.
        let stat = "4242 (kt ctl (x)) S 1 4242 4242 0 -1 4194560 1 2 3 4 5 6 7 8 20 0 1 0 987654 1 2 3"
        #expect(ProcessIdentity.parseStartTime(stat: stat) == 987654)
        #expect(ProcessIdentity.parseStartTime(stat: "4242 (short) S 1") == nil)
        #expect(ProcessIdentity.parseStartTime(stat: "no parenthesis") == nil)
    }

    @Test func aProcessIsGoneOnlyWhenThatIsCertain() throws {
        let me = ProcessIdentity.current
        #expect(me.startTime != nil)
        #expect(me.liveness == .alive)
        // The same pid with another start time: a reused pid, so the recorded process is gone.
        var reused = me
        reused.startTime = (me.startTime ?? 0) + 1
        guard case .gone(let why) = reused.liveness else {
            Issue.record("a pid with another start time counted as alive")
            return
        }
        #expect(why.contains("started later"))
        // A process that exited and was reaped.
        let child = Process()
        child.executableURL = URL(fileURLWithPath: "/bin/true")
        try child.run()
        child.waitUntilExit()
        #expect(ProcessIdentity(pid: child.processIdentifier, startTime: nil).liveness != .alive)
        // PID 1 belongs to someone else when not root, and EPERM means alive; as root it is alive anyway.
        #expect(ProcessIdentity(pid: 1, startTime: nil).liveness == .alive)
    }

    // MARK: - The lock

    @Test func aSecondLockIsRefusedAtOnceNamingTheHolder() throws {
        let scratch = try Scratch()
        let state = StateDirectory(scratch.path + "/kt")
        try state.prepare()
        let first = try SessionLock.take(state, name: "connect", command: "connect")
        let started = ContinuousClock.now
        do {
            _ = try SessionLock.take(state, name: "connect", command: "connect")
            Issue.record("a second lock was granted")
        } catch let error as SessionError {
            #expect(error.description.contains("another ktctl connect is running (pid \(getpid()))"))
            #expect(error.description.contains("nothing was changed"))
        }
        #expect(ContinuousClock.now - started < .seconds(1))
        // Another name is another lock.
        let other = try SessionLock.take(state, name: "exchange-default-tomcat", command: "exchange")
        other.release()
        first.release()
        let again = try SessionLock.take(state, name: "connect", command: "connect")
        again.release()
    }

    // MARK: - Journal and atomic files

    /// A journal write killed between its temporary file and the rename leaves `.connect-<pid>.json.<pid>.tmp`:
    /// `clean` removes it once that pid is gone, never a live writer's.
    @Test func cleanRemovesTheTemporaryOfAKilledWrite() throws {
        let scratch = try Scratch()
        let state = StateDirectory(scratch.path + "/kt")
        try state.prepare()
        let gone: Int32 = 4_194_000  // above pid_max's default: never a live process
        let dead = "\(state.journalDirectory)/.connect-\(gone).json.\(gone).tmp"
        let live = "\(state.journalDirectory)/.connect-\(getpid()).json.\(getpid()).tmp"
        let journal = "\(state.journalDirectory)/connect-\(gone).json"
        for path in [dead, live, journal] { #expect(FileManager.default.createFile(atPath: path, contents: Data())) }
        let dry = Recovery.removeStalePidFiles(state, dryRun: true)
        #expect(dry.count == 1 && dry[0].hasPrefix("would remove \(dead) (an unfinished write;"), "\(dry)")
        #expect(FileManager.default.fileExists(atPath: dead))
        let done = Recovery.removeStalePidFiles(state, dryRun: false)
        #expect(done.count == 1 && done[0].hasPrefix("removed \(dead)"), "\(done)")
        #expect(!FileManager.default.fileExists(atPath: dead))
        #expect(FileManager.default.fileExists(atPath: live) && FileManager.default.fileExists(atPath: journal))
    }

    @Test func theJournalIsOnDiskBeforeEachChangeAndClosesEntries() throws {
        let scratch = try Scratch()
        let path = scratch.path + "/connect-1.json"
        let journal = try Journal(
            creating: path,
            record: JournalRecord(
                command: "connect", session: "abcde", process: .current, user: "alice", host: "laptop"))
        let lease = ObjectRef(Lease.resource, namespace: "default", name: "kt-connect-abcde")
        let first = try journal.append("create \(lease)", undo: .deleteObject(lease))
        // Written before the change: a crash now leaves this on disk.
        #expect(try Journal.load(path).open.map(\.change) == ["create lease/kt-connect-abcde in default"])
        var known = lease
        known.uid = "uid-1"
        try journal.update(first, undo: .deleteObject(known))
        let second = try journal.append(
            "point /etc/resolv.conf at 198.18.20.1", undo: .restoreFile(path: "/x", original: "a", written: "b"))
        let loaded = try Journal.load(path)
        #expect(loaded.open.map(\.sequence) == [second, first])
        #expect(loaded.entries.first?.undo == .deleteObject(known))
        try journal.close(second)
        #expect(try Journal.load(path).open.map(\.sequence) == [first])
        // No temporary file is left beside it.
        #expect(try FileManager.default.contentsOfDirectory(atPath: scratch.path) == ["connect-1.json"])
        journal.remove()
        #expect(!FileManager.default.fileExists(atPath: path))
        #expect(throws: SessionError.self) { try Journal.load(scratch.path + "/missing.json") }
        try "{ not json".write(toFile: scratch.path + "/bad.json", atomically: true, encoding: .utf8)
        #expect(throws: SessionError.self) { try Journal.load(scratch.path + "/bad.json") }
    }

    @Test func atomicWritesKeepModeAndFollowLinks() throws {
        let scratch = try Scratch()
        let target = scratch.path + "/resolv.conf.real"
        let link = scratch.path + "/resolv.conf"
        try "nameserver 1.1.1.1\n".write(toFile: target, atomically: false, encoding: .utf8)
        chmod(target, 0o640)
        try FileManager.default.createSymbolicLink(atPath: link, withDestinationPath: target)
        try AtomicFile.write(link, text: "nameserver 198.18.20.1\n")
        #expect(try String(contentsOfFile: target, encoding: .utf8) == "nameserver 198.18.20.1\n")
        #expect(try FileManager.default.destinationOfSymbolicLink(atPath: link) == target)
        var info = stat()
        #expect(stat(target, &info) == 0 && info.st_mode & 0o777 == 0o640)
        #expect(!AtomicFile.isMountPoint(target))
        #expect(AtomicFile.isMountPoint("/proc"))
        #expect(AtomicFile.unescapeMountPath("/a\\040b") == "/a b")
    }

    @Test func aFileIsRestoredOnlyWhileItHoldsWhatKtctlWrote() throws {
        let scratch = try Scratch()
        let path = scratch.path + "/resolv.conf"
        let original = "nameserver 1.1.1.1\n"
        let written = "nameserver 198.18.20.1\nnameserver 1.1.1.1\n"
        try written.write(toFile: path, atomically: false, encoding: .utf8)
        #expect(UndoRunner.restore(path: path, original: original, written: written) == .done("restored \(path)"))
        #expect(try String(contentsOfFile: path, encoding: .utf8) == original)
        // Run again (after a crash between the restore and the journal's close): nothing to do.
        #expect(UndoRunner.restore(path: path, original: original, written: written).closesEntry)
        // Someone rewrote it since (DHCP, a VPN): the newer file stays, and that is said.
        let newer = "nameserver 9.9.9.9\n"
        try newer.write(toFile: path, atomically: false, encoding: .utf8)
        guard case .leftAlone(let why) = UndoRunner.restore(path: path, original: original, written: written) else {
            Issue.record("a changed file was not left alone")
            return
        }
        #expect(why.contains("changed since ktctl wrote it; the newer file is kept"))
        #expect(try String(contentsOfFile: path, encoding: .utf8) == newer)
    }

    // MARK: - Time

    @Test func httpDatesAndMicroTimes() throws {
        let date = try #require(ServerClock.parseHTTPDate("Sun, 06 Nov 1994 08:49:37 GMT"))
        #expect(date.timeIntervalSince1970 == 784_111_777)
        #expect(ServerClock.formatHTTPDate(date) == "Sun, 06 Nov 1994 08:49:37 GMT")
        for bad in [
            "", "Sun, 06 Nov 1994 08:49:37", "Sun, 32 Nov 1994 08:49:37 GMT", "Sun, 06 Xyz 1994 08:49:37 GMT",
            "Sun, 06 Nov 1994 25:49:37 GMT", "06 Nov 1994 08:49:37 GMT GMT",
        ] {
            #expect(ServerClock.parseHTTPDate(bad) == nil, "\(bad)")
        }
        let micro = Date(timeIntervalSince1970: 1_796_000_000.123456)
        #expect(MicroTime.format(micro) == "2026-11-30T00:53:20.123456Z")
        let parsed = try #require(MicroTime.parse("2026-11-30T00:53:20.123456Z"))
        #expect(abs(parsed.timeIntervalSince1970 - 1_796_000_000.123456) < 1e-5)
        #expect(MicroTime.parse("2026-11-30T00:53:20Z")?.timeIntervalSince1970 == 1_796_000_000)
        #expect(MicroTime.parse("2026-11-30T00:53:20.Z") == nil)
        #expect(MicroTime.parse("yesterday") == nil)
        // A year Foundation would read but not write back (FuzzKube's find).
        #expect(MicroTime.parse("-026-12-04T19:36:05.123456Z") == nil)
        #expect(MicroTime.parse("2026-12-04T19:36:05.123456+01:00")?.timeIntervalSince1970 == 1_796_409_365.123456)
    }

    @Test func theServerClockRunsOnTheMonotonicClockFromTheLastDate() throws {
        let clock = ServerClock()
        #expect(clock.now() == nil)
        let at = ContinuousClock.now
        clock.observe(dateHeader: "Sun, 06 Nov 1994 08:49:37 GMT", at: at)
        let later = try #require(clock.now(at: at + .seconds(10)))
        #expect(later.timeIntervalSince1970 == 784_111_777 + 10.5)
        clock.observe(dateHeader: "not a date", at: at)
        #expect(clock.now(at: at)?.timeIntervalSince1970 == 784_111_777.5)
    }

    @Test func aLeaseIsJudgedByTheServersClockAndItsOwnDuration() {
        let serverNow = Date(timeIntervalSince1970: 1_800_000_000)
        func lease(renewed secondsAgo: TimeInterval?, duration: Int = 90, created: TimeInterval = 3600) -> Lease {
            var metadata = ObjectMeta(name: "kt-connect-abcde")
            metadata.creationTimestamp = RFC3339.format(serverNow.addingTimeInterval(-created))
            return Lease(
                metadata: metadata,
                spec: Lease.Spec(
                    leaseDurationSeconds: duration,
                    renewTime: secondsAgo.map { MicroTime.format(serverNow.addingTimeInterval(-$0)) }))
        }
        #expect(!SessionLease.verdict(lease(renewed: 30), serverNow: serverNow, threshold: 0).isStale)
        #expect(SessionLease.verdict(lease(renewed: 91), serverNow: serverNow, threshold: 0).isStale)
        // A threshold only makes clean more patient.
        #expect(!SessionLease.verdict(lease(renewed: 91), serverNow: serverNow, threshold: 300).isStale)
        #expect(!SessionLease.verdict(lease(renewed: 91), serverNow: serverNow, threshold: 10).limit.isLess(than: 90))
        // Without a renewal, the server-written creation time counts.
        #expect(SessionLease.verdict(lease(renewed: nil), serverNow: serverNow, threshold: 0).isStale)
        #expect(!SessionLease.verdict(lease(renewed: nil, created: 5), serverNow: serverNow, threshold: 0).isStale)
    }

    // MARK: - Socket owners and the proxy's access

    @Test func socketTablesAreRead() {
        let table = """
              sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
               0: 0100007F:08AF 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1
               1: 0100007F:D431 0100007F:08AF 01 00000000:00000000 00:00000000 00000000 65534        0 2 1
               2: 0100007F:08AF 0100007F:D431 01 00000000:00000000 00:00000000 00000000     0        0 3 1
            """
        let client = SocketOwner.Endpoint(address: IPAddress("127.0.0.1")!, port: 0xD431)
        let proxy = SocketOwner.Endpoint(address: IPAddress("127.0.0.1")!, port: 0x08AF)
        #expect(SocketOwner.owner(in: table, local: client, remote: proxy) == 65534)
        #expect(SocketOwner.owner(in: table, local: proxy, remote: client) == 0)
        #expect(SocketOwner.owner(in: table, local: client, remote: client) == nil)
        let v6 = "x\n 0: 0000000000000000FFFF00000100007F:D431 0000000000000000FFFF00000100007F:08AF 01 0 0 0 1000 0\n"
        #expect(SocketOwner.owner(in: v6, local: client, remote: proxy) == 1000)
        // An unconnected UDP socket shows the wildcard it is bound to: its port decides, for UDP only.
        let udp = "x\n 0: 00000000:D431 00000000:0000 07 0 0 0 1001 0\n"
        #expect(SocketOwner.owner(in: udp, local: client, remote: nil) == 1001)
        #expect(SocketOwner.owner(in: udp, local: client, remote: proxy) == nil)
        #expect(SocketOwner.parseEndpoint("0100007F") == nil)
        #expect(SocketOwner.parseEndpoint("ZZ00007F:0050") == nil)
    }

    @Test func theProxyAdmitsItsOwnersSocketsOnly() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let server = try await ServerBootstrap(group: group).bind(host: "127.0.0.1", port: 0).get()
        let client = try await ClientBootstrap(group: group).connect(to: try #require(server.localAddress)).get()
        let peer = try #require(client.localAddress)
        let local = try #require(client.remoteAddress)
        #expect(ProxyAccess.ownerOnly.admits(peer: peer, local: local) == .allowed)
        let strangers = ProxyAccess(allowedUsers: [4_000_000])
        guard case .refused(let why) = strangers.admits(peer: peer, local: local) else {
            Issue.record("a socket of another user was admitted")
            return
        }
        #expect(why.contains("may not use this proxy"))
        #expect(ProxyAccess(allowedUsers: nil).admits(peer: peer, local: local) == .allowed)
        try await client.close()
        try await server.close()
        try await group.shutdownGracefully()
        var secret = ProxyAccess.ownerOnly
        secret.credentials = .init(username: "dev", password: "s3cret")
        #expect(secret.accepts(username: "dev", password: "s3cret"))
        #expect(!secret.accepts(username: "dev", password: "s3cret!"))
        #expect(!secret.accepts(username: "", password: ""))
        #expect(HTTPProxyRequest.basicCredentials("Basic ZGV2OnMzY3JldA==")! == ("dev", "s3cret"))
        #expect(HTTPProxyRequest.basicCredentials("Bearer x") == nil)
    }

    @Test func rfc1929UsernamePasswordArrivesInPieces() throws {
        let whole: [UInt8] = [1, 3] + Array("dev".utf8) + [6] + Array("s3cret".utf8)
        var buffer = ByteBuffer()
        var parsed: (username: String, password: String)?
        for byte in whole {
            buffer.writeInteger(byte)
            let before = buffer
            parsed = try Socks5.parseUsernamePassword(&buffer)
            if parsed == nil { #expect(buffer == before) }
        }
        #expect(parsed! == ("dev", "s3cret"))
        var wrong = ByteBuffer(bytes: [5, 1, 0])
        #expect(throws: ProxyError.self) { try Socks5.parseUsernamePassword(&wrong) }
    }

    // MARK: - Plans

    @Test func inferredRangesWiderThanSlash8AreRefused() {
        let wide = ClusterRanges.decide(
            serviceCIDRs: [], nodePodCIDRs: [], clusterIPs: ["10.0.0.1", "100.64.0.1"], podIPs: ["10.244.0.5"])
        #expect(wide.tooWide.count == 1)
        #expect(wide.tooWide.first?.contains("0.0.0.0/1") == true)
        #expect(wide.droppingTooWide().services.isEmpty)
        #expect(wide.droppingTooWide().pods == wide.pods)
        // Declared ranges are the cluster's word, however wide.
        let declared = ClusterRanges.decide(
            serviceCIDRs: ["0.0.0.0/1"], nodePodCIDRs: ["10.244.0.0/16"], clusterIPs: [], podIPs: [])
        #expect(declared.tooWide.isEmpty)
    }

    @Test func theShadowPlanListensOnLoopbackWithTheHandedOverHostKey() throws {
        var options = ClusterOptions(image: "kt-shadow:dev")
        options.labels = ["team": "a"]
        let session = SessionIdentity(id: "abcde", user: "alice", host: "laptop", pid: 1)
        let spec = ShadowSpec.connect(session)
        #expect(spec.podName == "kt-connect-shadow-abcde")
        let pod = try ShadowPlan.pod(spec, options: options).raw
        let container = try #require(pod["spec"]?["containers"]?.arrayValue?.first)
        #expect(container["args"] == ["--listen", "127.0.0.1:2222"])
        #expect(container["readinessProbe"] == nil)
        #expect(container["ports"] == nil)
        #expect(container["imagePullPolicy"] == "IfNotPresent")
        options.forceUpdate = true
        #expect(
            try ShadowPlan.pod(spec, options: options).raw["spec"]?["containers"]?.arrayValue?.first?["imagePullPolicy"]
                == "Always")
        options.debug = true
        let debugging = try ShadowPlan.pod(spec, options: options).raw
        #expect(
            debugging["spec"]?["containers"]?.arrayValue?.first?["args"] == ["--listen", "127.0.0.1:2222", "--debug"])
        let env = container["env"]?.arrayValue ?? []
        #expect(env.map { $0["name"]?.stringValue } == ["KT_AUTHORIZED_KEYS", "KT_HOST_KEY"])
        #expect(env[1]["valueFrom"]?["secretKeyRef"]?["name"]?.stringValue == "kt-connect-shadow-abcde")
        #expect(container["securityContext"]?["readOnlyRootFilesystem"] == true)
        #expect(pod["spec"]?["securityContext"]?["runAsUser"] == 65532)
        #expect(pod["metadata"]?["labels"]?["team"]?.stringValue == "a")
        let secret = ShadowPlan.secret(
            spec, options: options, authorizedKey: "ssh-ed25519 AAAA", hostKeySeed: "c2VlZA==")
        #expect(secret.stringData?["host_key"] == "c2VlZA==")
        // A reverse-forward shadow declares its listeners.
        let exchange = ShadowSpec(
            role: .exchange, podName: "tomcat-kt-exchange-abcde", labels: ["app": "tomcat"],
            ports: [ShadowSpec.Port(name: "http", port: 8080)])
        let exchangePod = try ShadowPlan.pod(exchange, options: options).raw
        #expect(
            exchangePod["spec"]?["containers"]?.arrayValue?.first?["ports"]
                == [["containerPort": 8080, "protocol": "TCP", "name": "http"]])
        #expect(exchangePod["metadata"]?["labels"]?["app"]?.stringValue == "tomcat")
    }

    @Test func missingPermissionsAreNamedWithTheirFile() {
        let missing = [Permissions.session[1], Permissions.clusterRanges[1]]
        let text = Permissions.explain(missing, namespace: "dev", user: nil)
        #expect(
            text.contains(
                "patch leases.coordination.k8s.io in namespace dev  — granted by deploy/rbac/ktctl-session.yaml"))
        #expect(text.contains("list nodes (cluster-wide)  — granted by deploy/rbac/ktctl-cluster.yaml"))
        #expect(
            text.contains("apply deploy/rbac/ktctl-cluster.yaml and deploy/rbac/ktctl-session.yaml in namespace dev"))
    }

    @Test func hostKeysTravelAsSeeds() throws {
        let key = SessionKey()
        let copy = try SessionKey(seedBase64: key.seedBase64)
        #expect(copy.sshPublicKey == key.sshPublicKey)
        #expect(throws: KeyFormatError.self) { try SessionKey(seedBase64: "bm90IDMyIGJ5dGVz") }
        #expect(throws: KeyFormatError.self) { try SessionKey(seedBase64: "%%%") }
    }
}
