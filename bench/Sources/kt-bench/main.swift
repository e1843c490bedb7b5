// kt-bench: prints the project's performance figures as tables. Run with `make bench` (release build).
// `kt-bench http-upstream HOST PORT` serves `ok` over HTTP/1.1 (bench/router.sh's upstream).
// `kt-bench tunnel` runs only the KtTunnel-against-OpenSSH table. `kt-bench allocations N` only moves N segments between two in-memory stacks (for bench/allocations.sh).

if CommandLine.arguments.count == 4, CommandLine.arguments[1] == "http-upstream",
    let port = Int(CommandLine.arguments[3])
{
    try HTTPUpstream.run(host: CommandLine.arguments[2], port: port)
} else if CommandLine.arguments.count == 3, CommandLine.arguments[1] == "allocations",
    let count = Int(CommandLine.arguments[2])
{
    print("packets \(AllocationBenchmark.run(segments: count))")
} else if CommandLine.arguments.dropFirst().first == "tunnel" {
    print("kt-bench tunnel — \(Machine.description)\n")
    print(TunnelBenchmarks.run())
} else {
    print("kt-bench — \(Machine.description)\n")
    print(WireBenchmarks.run())
    print()
    print(TunBenchmarks.run())
    print()
    print(StackBenchmarks.run(vethTCP: TunBenchmarks.lastVethTCP))
    print()
    print(TunnelBenchmarks.run())
    print("\nsink \(sink & 0xFF)")
}
