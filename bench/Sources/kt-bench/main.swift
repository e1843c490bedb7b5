// kt-bench: prints the project's performance figures as tables. Run with `make bench` (release build).

print("kt-bench — \(Machine.description)\n")
print(WireBenchmarks.run())
print()
print(TunBenchmarks.run())
print()
print(StackBenchmarks.run(vethTCP: TunBenchmarks.lastVethTCP))
print("\nsink \(sink & 0xFF)")
