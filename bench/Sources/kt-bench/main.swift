// kt-bench: prints the project's performance figures as tables. Run with `make bench` (release build).

print("kt-bench — \(Machine.description)\n")
print(WireBenchmarks.run())
print()
print(TunBenchmarks.run())
print("\nsink \(sink & 0xFF)")
