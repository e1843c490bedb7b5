import Foundation

/// Threads of its own for tests whose timing matters (a lab's watch, a grace period, a reconnect within 15 s).
///
/// Swift's concurrency pool has one thread per core (two here), and swift-testing runs every suite on it at once:
/// a synchronous test that pushes a gibibyte through a lossy path holds a pool thread for two minutes, and with two
/// of them nothing else runs at all. A test body run with this executor as its preference (``onDedicatedThreads``)
/// resumes on these threads instead, whatever the pool is doing.
public final class DedicatedExecutor: TaskExecutor, @unchecked Sendable {
    public static let shared = DedicatedExecutor(threads: 8)

    private let condition = NSCondition()
    private var jobs: [UnownedJob] = []

    init(threads: Int) {
        for index in 0..<threads {
            let thread = Thread { [unowned self] in self.work() }
            thread.name = "test-executor-\(index)"
            thread.start()
        }
    }

    public func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        condition.lock()
        jobs.append(job)
        condition.signal()
        condition.unlock()
    }

    private func work() {
        while true {
            condition.lock()
            while jobs.isEmpty { condition.wait() }
            let job = jobs.removeFirst()
            condition.unlock()
            job.runSynchronously(on: asUnownedTaskExecutor())
        }
    }
}

/// Runs `body` (and the child tasks it makes with `async let` or a task group) on ``DedicatedExecutor``.
public func onDedicatedThreads<T: Sendable>(_ body: () async throws -> T) async throws -> T {
    try await withTaskExecutorPreference(DedicatedExecutor.shared) { try await body() }
}
