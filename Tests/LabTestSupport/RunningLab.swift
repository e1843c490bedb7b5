import Foundation
import KubeKit
import LabKit
import NamespaceTestSupport
import Synchronization
import Testing

/// A lab made with the real `ktlab` binary for one test and removed after it (also when the test fails).
public final class RunningLab: @unchecked Sendable {
    public let name: String
    public let ktlab: String
    public let client: KubeClient
    public let kubeconfig: String

    public init() async throws {
        guard let ktlab = builtExecutable("ktlab") else { throw LabControl.Failure("ktlab is not built") }
        self.ktlab = ktlab
        Self.reapStaleLabs(ktlab)
        name = Self.uniqueName()
        let up = try await TestNamespace.run(["env", ktlab, "up", "--name", name], timeout: 60)
        guard up.status == 0 else {
            _ = try? await TestNamespace.run(["env", ktlab, "down", "--name", name])
            throw LabControl.Failure("ktlab up failed: \(up.output) \(up.error)")
        }
        kubeconfig = "\(LabLayout.stateRoot)/\(name)/kubeconfig"
        do {
            client = try KubeClient(access: try Kubeconfig.load(explicitPath: kubeconfig, environment: [:]).access())
        } catch {
            _ = try? await TestNamespace.run(["env", ktlab, "down", "--name", name])
            throw error
        }
    }

    /// `ktt<pid>x<n>`: the test process's pid, so that a later run can tell a lab left by a crashed one, and a
    /// counter (a random number here once gave two concurrent tests the same lab: 20 labs among 900 numbers collide
    /// one run in five).
    public static func uniqueName() -> String {
        let number = labCounter.withLock { count in
            count += 1
            return count
        }
        return "ktt\(getpid())x\(number)"
    }
    static let labCounter = Mutex(100)

    /// Labs of test processes that are gone (killed, crashed) are removed once per test process.
    public static func reapStaleLabs(_ ktlab: String) {
        reaped.withLock { done in
            guard !done else { return }
            done = true
            for name in (try? FileManager.default.contentsOfDirectory(atPath: LabLayout.stateRoot)) ?? [] {
                guard name.hasPrefix("ktt"), let x = name.firstIndex(of: "x"),
                    let pid = Int32(name[name.index(name.startIndex, offsetBy: 3)..<x]), pid != getpid(),
                    kill(pid, 0) != 0, errno == ESRCH
                else { continue }
                _ = try? TestNamespace.run(["env", ktlab, "down", "--name", name], timeout: 60)
            }
        }
    }
    static let reaped = Mutex(false)

    /// Makes a lab, runs `body`, and removes the lab whatever `body` did (checking that `down` succeeded);
    /// returns the lab's name for checks after it is gone.
    @discardableResult
    /// The body runs on ``DedicatedExecutor``: lab tests wait for watches, grace periods and reconnects, which a
    /// concurrency pool held by other suites' long synchronous tests would stretch past their limits.
    public static func with(_ body: (RunningLab) async throws -> Void) async throws -> String {
        try await onDedicatedThreads {
            let lab = try await RunningLab()
            var failure: (any Error)?
            do {
                try await body(lab)
            } catch {
                failure = error
            }
            let down = await lab.down()
            #expect(down?.status == 0)
            if let failure { throw failure }
            return lab.name
        }
    }

    /// The node's address on the workstation's link: where the API server and the workstation's upstream DNS are
    /// (`api.lab.test` resolves to it).
    public var nodeLinkAddress: String {
        get throws {
            guard let state = LabState.read(name) else { throw LabControl.Failure("lab \(name) has no state") }
            return state.layout.nodeLinkAddress
        }
    }

    /// A tool `make deps` put in .build/tools, when it is there.
    public static func tool(_ name: String) -> String? {
        let path = "\(repositoryRoot)/.build/tools/\(name)"
        return access(path, X_OK) == 0 ? path : nil
    }

    /// Runs a kubectl binary against this lab, with a home of its own (kubectl's discovery cache).
    public func kubectl(_ binary: String, _ arguments: [String], timeout: Double = 30) async throws
        -> TestNamespace.CommandResult
    {
        try await TestNamespace.run(
            ["env", "HOME=\(LabLayout.stateRoot)/\(name)/home", "KUBECONFIG=\(kubeconfig)", binary] + arguments,
            timeout: timeout)
    }

    /// The seed quick start's first steps with `kubectl`, exactly as written: `create deployment tomcat`, `expose`,
    /// and the `exec` that writes "kt-connect demo v1" into the page; returns the pod's IP and the ClusterIP.
    public func deploySeedTomcat(_ kubectl: String) async throws -> (podIP: String, clusterIP: String) {
        #expect(
            try await self.kubectl(kubectl, ["create", "deployment", "tomcat", "--image=tomcat:9", "--port=8080"])
                .output
                == "deployment.apps/tomcat created\n")
        #expect(
            try await self.kubectl(kubectl, ["expose", "deployment", "tomcat", "--port=8080", "--target-port=8080"])
                .output
                == "service/tomcat exposed\n")
        let pods = try await client.list(Pod.self, options: ListOptions(labelSelector: "app=tomcat")).items
        let pod = try await waitReady(try #require(pods.first).name)
        let podIP = try #require(pod.status?.podIP)
        // As the seed writes its page: kubectl exec (WebSocket v5) in the container's working directory.
        let exec = try await self.kubectl(
            kubectl,
            [
                "exec", "deployment/tomcat", "-c", "tomcat", "--", "/bin/bash", "-c",
                "mkdir webapps/ROOT; echo \"kt-connect demo v1\" > webapps/ROOT/index.html",
            ])
        #expect(exec.status == 0, "\(exec.error)")
        let clusterIP = try #require(try await client.get(Service.self, name: "tomcat").spec?.clusterIP)
        return (podIP, clusterIP)
    }

    public func down() async -> TestNamespace.CommandResult? {
        await client.shutdown()
        return try? await TestNamespace.run(["env", ktlab, "down", "--name", name], timeout: 60)
    }

    /// Waits until the pod is Ready (the kubelet saw its port open).
    public func waitReady(_ pod: String, timeout: Duration = .seconds(30)) async throws -> Pod {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            let current = try await client.get(Pod.self, name: pod)
            if current.status?.isReady == true { return current }
            try await Task.sleep(for: .milliseconds(100))
        }
        throw LabControl.Failure("pod \(pod) not ready in \(timeout)")
    }
}
