/// Runs `body` repeatedly for about `seconds` and returns operations per second.
///
/// Each call to `body` does `batch` operations and returns a value that is folded into ``sink`` so the optimiser
/// cannot drop the work.
func operationsPerSecond(seconds: Double = 0.7, batch: Int = 1000, _ body: () -> Int) -> Double {
    let clock = ContinuousClock()
    // Warm up caches and branch predictors.
    for _ in 0..<3 { sink &+= body() }
    var operations = 0
    let start = clock.now
    let deadline = start.advanced(by: .milliseconds(Int(seconds * 1000)))
    while clock.now < deadline {
        sink &+= body()
        operations += batch
    }
    let elapsed = start.duration(to: clock.now)
    return Double(operations) / (Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) * 1e-18)
}

/// Results folded together so that the benchmarked code has an observable effect.
nonisolated(unsafe) var sink = 0

/// A fixed-width table printed in the terminal.
struct Table {
    var headers: [String]
    var rows: [[String]] = []

    mutating func add(_ row: [String]) { rows.append(row) }

    func render() -> String {
        let widths = headers.indices.map { column in
            ([headers[column]] + rows.map { $0[column] }).map(\.count).max() ?? 0
        }
        func line(_ cells: [String]) -> String {
            cells.enumerated().map { index, cell in
                index == 0 || index == cells.count - 1 && headers[index] == "note"
                    ? cell.padding(toLength: widths[index], withPad: " ", startingAt: 0)
                    : String(repeating: " ", count: widths[index] - cell.count) + cell
            }.joined(separator: "  ")
        }
        return
            ([line(headers), widths.map { String(repeating: "-", count: $0) }.joined(separator: "  ")]
            + rows.map(line)).joined(separator: "\n")
    }
}

func formatted(_ value: Double, _ digits: Int = 2) -> String {
    let scale = pow10(digits)
    let rounded = (value * scale).rounded() / scale
    return String(rounded)
}

private func pow10(_ digits: Int) -> Double {
    (0..<digits).reduce(1.0) { value, _ in value * 10 }
}
